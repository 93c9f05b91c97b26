"""The generator as a scorer: encoder inputs -> the family's ranker (``sidrec.decoding.make_ranker``) -> items.

Works with every generator family (``sidrec.seqmodel.load_generator``): beam families (``tiger``, ``item``)
rank the trie-constrained beam's candidates, the ``parallel`` family scores the whole catalog exactly.
``mode`` picks what ranks:

- ``default``: what the checkpoint was tuned for on VALID (its ``DecodingSettings``): the hybrid ranking
  for a generator with a dense head (``logp + dense_weight * dense``), the generation score otherwise;
- ``generation``: the generation score alone (no popularity correction, no dense score);
- ``uncorrected``: the hybrid ranking of a beam without the popularity correction (what the correction
  adds, for a checkpoint that uses one);
- ``beam``: the hybrid ranking of the beam's own candidates, no items joined (what ``dense_candidates`` and
  ``new_candidates`` add, for a checkpoint that uses them);
- ``dense``: the dense head alone over the whole catalog (an ablation: no beam, no trie).

``cold_share`` (TIGER's epsilon) reserves up to that share of the top ``SHARE_OF_TOP`` (10, the headline
list) for cold-start items (the tokenizer's rows assigned after its fit) from the same candidates; a longer
list (evaluation ranks 20 for Recall@20) continues with the rest of the ranking. (Before, the share was taken
of the 20-item list, so its slots landed at ranks 19-20 and never moved Recall@10.)
"""

from __future__ import annotations

import copy
import functools
import logging
import os

import numpy as np
import torch

logger = logging.getLogger(__name__)

SHARE_OF_TOP = 10  # TIGER's epsilon is a share of the top 10 (Recall@10, the headline list)
MODES = ("default", "generation", "uncorrected", "beam", "dense")


class GeneratorScorer:
    """Top-k items from ``RUN/generator`` + ``RUN/tokenizer``.

    The ranker holds every catalog item, so every item returned is a real item (invalid rate 0 by
    construction; the harness still measures it). ``settings``: the generator's ``DecodingSettings`` (None =
    the defaults); ``beam_size`` overrides its beam (raised to ``k`` if smaller).
    """

    def __init__(
        self, *, model, tokenizer, settings=None, user_ids: list[str] | None = None, beam_size: int | None = None,
        batch_size: int = 64, exclude_history: bool = False, device: str | torch.device = "cpu",
        mode: str = "default", cold_share: float = 0.0,
    ) -> None:
        from sidrec.decoding import DecodingSettings, has_dense_head, make_ranker

        _check(mode, cold_share)
        if mode == "dense" and not has_dense_head(model):
            raise ValueError("mode 'dense' needs a generator with a dense head (family: item, dense_head: true)")
        self.model = model.to(device).eval()
        self.codes = np.asarray(tokenizer.codes)  # (N, L)
        self.settings = settings or DecodingSettings()
        if beam_size is not None:
            self.settings = self.settings.replace(beam_size=beam_size)
        self.ranker = make_ranker(self.model, codes=self.codes, level_sizes=tokenizer.level_sizes,
                                  settings=self.settings)
        self.user_ids = user_ids
        self.batch_size = batch_size
        self.exclude_history = exclude_history
        self.device = torch.device(device)
        self.mode = mode
        self.cold = tokenizer.assigned_items()  # (N,) rows assigned after the fit: cold-start items
        self.cold_share = cold_share
        self.name = _name(mode, cold_share)
        self.table: dict | None = None  # the tokenizer table's row count and fingerprint (from_run)
        if model.vocab.num_user_buckets > 0 and user_ids is None:
            raise ValueError("this generator uses user tokens; pass the dataset's user_ids")

    @classmethod
    def from_run(
        cls, run: str | os.PathLike, *, item_ids: list[str], user_ids: list[str] | None = None,
        dataset_fingerprint: str | None = None, **kwargs
    ) -> GeneratorScorer:
        """Load ``RUN/generator`` (any family, with its decoding settings) and ``RUN/tokenizer`` through
        ``RunFolder``, which checks both cover this catalog and were built from this dataset and each other."""
        from sidrec.utils.run_folder import RunFolder

        loaded = RunFolder(run).generator(item_ids=item_ids, dataset_fingerprint=dataset_fingerprint)
        scorer = cls(model=loaded.model, tokenizer=loaded.tokenizer, settings=loaded.settings, user_ids=user_ids,
                     **kwargs)
        scorer.table = loaded.tokenizer.table_record()
        return scorer

    def variant(self, mode: str = "default", *, cold_share: float = 0.0) -> GeneratorScorer:
        """The same model, ranker and settings, ranking with another ``mode`` or cold-item share."""
        _check(mode, cold_share)
        other = copy.copy(self)
        other.mode, other.cold_share, other.name = mode, cold_share, _name(mode, cold_share)
        return other

    @torch.no_grad()
    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices (``-1`` where fewer than k items could be offered)."""
        if self.mode == "dense":
            return self._dense(histories, k)
        uids = None
        if self.model.vocab.num_user_buckets > 0:
            if user_index is None:
                raise ValueError("this generator uses user tokens; pass user_index to recommend()")
            uids = [self.user_ids[u] for u in user_index]
        settings = self.settings  # the checkpoint's own (chosen on VALID)
        if self.mode == "generation":
            settings = settings.replace(dense_weight=0.0, prior_weight=0.0, dense_candidates=0, new_candidates=0)
        elif self.mode == "beam":
            settings = settings.replace(dense_candidates=0, new_candidates=0)
        elif self.mode == "uncorrected":
            settings = settings.replace(dense_weight=settings.plain_weight, prior_weight=0.0)
        rank = functools.partial(self.ranker.recommend, histories, settings=settings, user_ids=uids,
                                 exclude_history=self.exclude_history, batch_size=self.batch_size, cold=self.cold)
        if self.cold_share and k > SHARE_OF_TOP:  # the share is of the top 10, then the list goes on as ranked
            top, _ = rank(k=SHARE_OF_TOP, cold_share=self.cold_share)
            rest, _ = rank(k=k)
            return extend_list(top, rest, k)
        items, _ = rank(k=k, cold_share=self.cold_share)
        return items.numpy().astype(np.int64)

    def _dense(self, histories: list[list[int]], k: int) -> np.ndarray:
        from sidrec.decoding.topk import topk_from_scores

        removed = torch.from_numpy(~self.ranker.active).to(self.device)  # (N,) items taken out of the catalog
        out = []
        for start in range(0, len(histories), self.batch_size):
            batch = histories[start : start + self.batch_size]
            input_ids, mask = self.model.history_inputs(batch)
            scores = self.model.dense_scores(input_ids.to(self.device), mask.to(self.device))  # (B, N)
            scores[:, removed] = float("-inf")
            out.append(topk_from_scores(scores.cpu(), k, histories=batch, exclude_history=self.exclude_history))
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def extend_list(top: torch.Tensor, rest: torch.Tensor, k: int) -> np.ndarray:
    """Each row of ``top (U, a)``, then the items of ``rest (U, k)`` not already in it, to ``k`` (-1 padded)."""
    out = np.full((top.shape[0], k), -1, dtype=np.int64)
    for row, (head, tail) in enumerate(zip(top.tolist(), rest.tolist(), strict=True)):
        head = [i for i in head if i >= 0]
        seen = set(head)
        merged = head + [i for i in tail if i >= 0 and i not in seen]
        out[row, : min(k, len(merged))] = merged[:k]
    return out


def _check(mode: str, cold_share: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= cold_share <= 1.0 or (cold_share and mode == "dense"):
        raise ValueError(f"cold_share must be in [0, 1] and applies to the beam's lists (not mode 'dense'), "
                         f"got {cold_share} with mode {mode!r}")


def _name(mode: str, cold_share: float) -> str:
    """The row label in reports: ``generator``, ``generator (dense only)``, ``generator (cold share 0.1)``."""
    if cold_share:
        return f"generator (cold share {cold_share:g})" if mode == "default" else f"generator ({mode}, cold share {cold_share:g})"
    if mode == "uncorrected":
        return "generator (no popularity correction)"
    if mode == "beam":
        return "generator (beam candidates only)"
    return "generator" if mode == "default" else f"generator ({mode} only)"
