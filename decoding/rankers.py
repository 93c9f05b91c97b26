"""One way for every generator family to turn histories into ranked items over a live catalog.

``make_ranker(model, codes=, level_sizes=, settings=)`` picks the family's way of ranking: ``BeamRanker``
(``tiger``, ``item``: the catalog trie, trie-constrained beam search, the hybrid ranking, the popularity
prior built once per catalog) or ``ExactRanker`` (``parallel``: every item scored exactly). Both keep the
catalog (``add_items``, ``remove_items``, ``active``) and answer ``recommend(histories, k=, ...)`` with
``(items (U, k), scores (U, k))``, best first, ``-1`` / ``-inf`` where fewer items exist. The API
(``sidrec.Recommender``), ``sidrec evaluate`` and the benchmarks use them, never a family's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sidrec.decoding.exact import ExactRanker
from sidrec.decoding.prior import CodePrior
from sidrec.decoding.recommend import popularity_prior, recommend_topk
from sidrec.decoding.rerank import merge_ranked, reserve_cold, reserve_cold_by_text
from sidrec.decoding.settings import DecodingSettings
from sidrec.decoding.text_profile import model_unit_text
from sidrec.decoding.trie import CatalogTrie

__all__ = ["BeamRanker", "ExactRanker", "make_ranker", "ranks_exactly", "scores_whole_catalog"]


def ranks_exactly(model: Any) -> bool:
    """Whether the generator scores every catalog item exactly (``digit_scores``: the ``parallel`` family)."""
    return hasattr(model, "digit_scores")


def scores_whole_catalog(model: Any) -> bool:
    """Whether the generator has a score for every catalog item (what fusion with SASRec needs): exact ranking
    (``parallel``), or a dense head (``item``/``hybrid``: its dense scores; its beam scores only candidates)."""
    from sidrec.decoding.recommend import has_dense_head

    return ranks_exactly(model) or has_dense_head(model)


class BeamRanker:
    """Trie-constrained beam search (+ the hybrid ranking) over a catalog trie that can grow and shrink."""

    def __init__(self, model: Any, *, codes: np.ndarray, level_sizes: Sequence[int], settings: DecodingSettings,
                 item_codes: np.ndarray | None = None) -> None:
        self.model, self.settings = model, settings
        self.trie = CatalogTrie(codes=codes, level_sizes=level_sizes)
        self.item_codes = item_codes if item_codes is not None else np.asarray(codes)
        self._prior: CodePrior | None = None  # built on first use; add/remove items change it

    @property
    def active(self) -> np.ndarray:
        return self.trie.active

    def add_items(self, codes: np.ndarray) -> np.ndarray:
        self._prior = None
        self.item_codes = np.concatenate([self.item_codes, np.asarray(codes, dtype=np.int64)])
        return self.trie.add_items(codes)

    def remove_items(self, items: Sequence[int] | np.ndarray) -> int:
        self._prior = None
        return self.trie.remove_items(items)

    def prior(self, settings: DecodingSettings) -> CodePrior | None:
        """The popularity prior of the current catalog when ``settings`` search with one (cached)."""
        if not settings.prior_weight:
            return None
        if self._prior is None:
            self._prior = popularity_prior(self.model, self.trie)
        return self._prior

    @torch.no_grad()
    def full_scores(self, histories: Sequence[Sequence[int]], *, dense_weight: float = 0.0) -> torch.Tensor:
        """``(B, N)`` the dense head's score of every catalog item (``-inf`` where the catalog does not offer
        it): a beam generator's only score of the whole catalog, which fusion with SASRec needs. Unscaled
        (``dense_weight`` weighs the dense score against log-probabilities, which are not part of it)."""
        from sidrec.decoding.recommend import has_dense_head

        if not has_dense_head(self.model):
            raise ValueError(f"a {getattr(self.model, 'family', 'tiger')!r} generator without a dense head scores "
                             "only its beam's candidates, not the whole catalog")
        device = next(self.model.parameters()).device
        input_ids, mask = (t.to(device) for t in self.model.history_inputs([list(h) for h in histories]))
        n = self.trie.num_items
        out = self.model.dense_logits(self.model.user_states(input_ids, mask)).float().cpu()[:, :n]  # (B, N)
        return out.masked_fill(~torch.tensor(self.trie.active)[None, :], float("-inf"))

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], *, k: int, settings: DecodingSettings | None = None,
                  exclude_history: bool = False, cold: np.ndarray | None = None, cold_share: float = 0.0,
                  user_ids: Sequence[str] | None = None, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        settings = settings or self.settings
        return recommend_topk(self.model, self.trie, histories, k=k, settings=settings, item_codes=self.item_codes,
                              user_ids=user_ids, exclude_history=exclude_history, batch_size=batch_size, cold=cold,
                              cold_share=cold_share, prior=self.prior(settings))


class _ExactRanker(ExactRanker):
    """``ExactRanker`` with the common ``recommend`` signature (settings' dense weight, TIGER's epsilon)."""

    def __init__(self, model: Any, *, settings: DecodingSettings, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.settings = settings

    @property
    def active(self) -> np.ndarray:
        return self.catalog.active

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], *, k: int, settings: DecodingSettings | None = None,
                  exclude_history: bool = False, cold: np.ndarray | None = None, cold_share: float = 0.0,
                  user_ids: Sequence[str] | None = None, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k``; ``cold_share`` reserves up to ``ceil(cold_share * k)`` slots for ``cold`` items
        (``reserve_cold``). As in the beam families, a model that reads item text fills them with the cold
        items whose text is closest to the user's recent items (``text_scores``: nothing trained the model's
        scores of an item it never saw), each with its exact score; without text, the model's best cold items."""
        weight = (settings or self.settings).dense_weight if getattr(self.model, "has_dense_head", False) else 0.0
        items, scores = self.topk(histories, k=k, exclude_history=exclude_history, batch_size=batch_size,
                                  dense_weight=weight)
        if cold_share <= 0:
            return items, scores
        if cold is None:
            raise ValueError("cold_share needs the cold items: pass cold=bool (N,) (e.g. tokenizer.assigned_items())")
        cold = np.pad(np.asarray(cold, dtype=bool), (0, max(0, self.catalog.num_items - len(cold))))
        unit = model_unit_text(self.model)
        if unit is None:  # no text: the model's own best cold items
            cold_items, cold_scores = self.topk(histories, k=k, exclude_history=exclude_history,
                                                batch_size=batch_size, dense_weight=weight, only=cold)
            merged, order = merge_ranked(items, scores, cold_items, cold_scores)
            return reserve_cold(merged, order, torch.as_tensor(cold), epsilon=cold_share, k=k)
        offered = torch.as_tensor(cold[: self.catalog.num_items] & self.catalog.active)  # (N,)
        out_items, out_scores = [], []
        for start in range(0, len(histories), batch_size):
            batch = [list(h) for h in histories[start : start + batch_size]]
            full = self.full_scores(batch, dense_weight=weight)  # (B, N) exact scores
            top = reserve_cold_by_text(items[start : start + len(batch)], scores[start : start + len(batch)],
                                       unit=unit, histories=batch, cold=offered, epsilon=cold_share, k=k,
                                       exclude_history=exclude_history, score_of=lambda c, f=full: f.gather(1, c))
            out_items.append(top[0])
            out_scores.append(top[1])
        if not out_items:
            return items, scores
        return torch.cat(out_items), torch.cat(out_scores)


def make_ranker(model: Any, *, codes: np.ndarray, level_sizes: Sequence[int], settings: DecodingSettings,
                backend: str = "auto") -> BeamRanker | _ExactRanker:
    """The ranker of ``model``'s family over the catalog ``codes (N, L)`` (the tokenizer's table)."""
    if ranks_exactly(model):
        from sidrec.decoding.exact import DigitCatalog

        catalog = DigitCatalog(codes=codes, level_sizes=level_sizes)
        return _ExactRanker(model, settings=settings, catalog=catalog, backend=backend)
    return BeamRanker(model, codes=codes, level_sizes=level_sizes, settings=settings)
