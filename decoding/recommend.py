"""Histories -> ranked catalog items with any generator family: the one path used by training
validation, ``sidrec evaluate`` and ``sidrec.Recommender``.

1. ``model.history_inputs(histories, item_codes=, user_ids=)`` builds the family's encoder inputs (level
   tokens for ``tiger``, item tokens for ``item``);
2. ``constrained_beam_search`` proposes ``beam_size`` catalog items per user (retrieval), optionally
   corrected for popularity (``prior_weight``, chosen on VALID: rare items get through);
3. a generator with a dense head scores those candidates (``model.dense_scores``) and ``hybrid_rank``
   orders them by ``logp + weight * dense`` (the weight chosen on VALID, ``DecodingSettings.dense_weight``,
   saved in ``generator/decoding.json``; 0 = generation only);
4. optionally TIGER's epsilon: a share of the top-k reserved for cold (new) items of the same beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sidrec.decoding.beam import constrained_beam_search
from sidrec.decoding.prior import CodePrior
from sidrec.decoding.rerank import hybrid_rank, reserve_cold
from sidrec.decoding.settings import DecodingSettings
from sidrec.decoding.teacher import teacher_forced_scores
from sidrec.decoding.text_profile import candidate_text_scores, model_unit_text, text_scores
from sidrec.decoding.trie import CatalogTrie

__all__ = ["Candidates", "beam_candidates", "has_dense_head", "join_candidates", "popularity_prior", "recommend_topk"]


def has_dense_head(model: nn.Module) -> bool:
    """Whether the generator scores items densely too (``dense_head`` in its config: item, parallel)."""
    return bool(getattr(model.config, "dense_head", False))


def popularity_prior(model: nn.Module, trie: CatalogTrie) -> CodePrior:
    """The catalog's popularity prior from the generator's own training counts (``model.item_counts``)."""
    counts = getattr(model, "item_counts", None)
    if counts is None:
        raise ValueError(f"a popularity-corrected search needs training counts; the {model.family!r} family does "
                         "not carry them (use prior_weight 0)")
    return CodePrior(trie=trie, item_counts=counts)


@dataclass(frozen=True)
class Candidates:
    """The beam's candidates per user, in beam order.

    Attributes:
        items: ``int64 (U, K)`` item indices, -1 = empty slot.
        scores: ``float32 (U, K)`` generation log-probabilities (-inf where empty).
        dense: ``float32 (U, K)`` dense scores, or None for a generator without a dense head.
    """

    items: torch.Tensor
    scores: torch.Tensor
    dense: torch.Tensor | None

    def rank(self, *, weight: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items and scores by ``logp + weight * dense`` (``hybrid_rank``)."""
        return hybrid_rank(self.items, self.scores, self.dense, weight=weight, k=k)


@torch.no_grad()
def beam_candidates(
    model: nn.Module, trie: CatalogTrie, histories: Sequence[Sequence[int]], *, beam_size: int,
    item_codes: np.ndarray | None = None, user_ids: Sequence[str] | None = None, exclude_history: bool = False,
    batch_size: int = 256, num_threads: int | None = None, with_dense: bool = True, prior_weight: float = 0.0,
    prior: CodePrior | None = None, dense_candidates: int = 0, new_candidates: int = 0,
) -> Candidates:
    """``beam_size`` candidates per history (with dense scores when the model has a dense head).

    Args:
        model: a sidrec generator (``SemanticIdGenerator`` or ``ItemLevelGenerator``).
        trie: the catalog trie (rows = item indices of ``item_codes`` / the model's item table).
        histories: item indices per user, oldest first.
        beam_size: beams kept per level = candidates returned per user.
        item_codes: ``(N, L)`` tokenizer table (the tiger family encodes histories as codes).
        user_ids: one per history, for generators trained with user tokens.
        exclude_history: never propose a user's own history items.
        batch_size: users per beam-search call.
        num_threads: torch CPU threads during the search (None = as is).
        with_dense: score the candidates with the dense head when the model has one (False: generation
            only, ``dense`` is None).
        prior_weight: popularity correction of the search (``CodePrior``; 0 = off); ``prior`` defaults to
            the one built from the model's training counts (``popularity_prior``).
        dense_candidates, new_candidates: with a dense head, that many best items by dense score, and best
            items never seen in training, join the beam's candidates (``join_candidates``; 0 = none).
    """
    if prior_weight and prior is None:
        prior = popularity_prior(model, trie)
    device = next(model.parameters()).device
    joining = (dense_candidates > 0 or new_candidates > 0) and has_dense_head(model)
    dense = (with_dense or joining) and has_dense_head(model)
    items, scores, dense_scores = [], [], []
    for start in range(0, len(histories), batch_size):
        batch = [list(h) for h in histories[start : start + batch_size]]
        users = None if user_ids is None else list(user_ids[start : start + len(batch)])
        input_ids, mask = model.history_inputs(batch, item_codes=item_codes, user_ids=users)  # (B, S)
        input_ids, mask = input_ids.to(device), mask.to(device)
        user_states = torch.empty(len(batch), model.config.d_model, device=device) if dense else None  # (B, D)

        def keep_user_states(rows, states, chunk_mask, out=user_states):  # the dense head's user state, encoded once
            out[rows.to(device)] = model.last_state(states, chunk_mask)

        result = constrained_beam_search(
            model, trie, input_ids, mask, beam_size=beam_size, k=beam_size,
            exclude=batch if exclude_history else None, num_threads=num_threads,
            on_encoded=keep_user_states if dense else None, prior=prior, prior_weight=prior_weight,
        )
        found = Candidates(result.items, result.scores,
                           model.dense_logits(user_states, result.items.to(device)).float().cpu() if dense else None)
        if joining:
            found = join_candidates(model, trie, found, user_states, input_ids, mask, dense=dense_candidates,
                                    new=new_candidates, exclude=batch if exclude_history else None, histories=batch,
                                    prior=prior if prior_weight else None, prior_weight=prior_weight)
        items.append(found.items)
        scores.append(found.scores)
        if dense:
            dense_scores.append(found.dense)
    if not items:
        empty = torch.zeros(0, beam_size + (dense_candidates + new_candidates if joining else 0))
        return Candidates(empty.long(), empty, empty if dense else None)
    return Candidates(torch.cat(items), torch.cat(scores), torch.cat(dense_scores) if dense else None)


@torch.no_grad()
def join_candidates(
    model: nn.Module, trie: CatalogTrie, found: Candidates, user_states: torch.Tensor, input_ids: torch.Tensor,
    mask: torch.Tensor, *, dense: int, new: int, exclude: Sequence[Sequence[int]] | None = None,
    prior: CodePrior | None = None, prior_weight: float = 0.0, histories: Sequence[Sequence[int]] | None = None,
) -> Candidates:
    """The beam's candidates ``found (B, K)`` plus items the beam may have lost, each scored like the beam's own.

    Joins, per user, the ``dense`` active items with the best dense scores over the whole catalog and the
    ``new`` best among active items the generator never saw in training (``model.item_counts`` 0), minus
    those already in the beam (and history items with ``exclude``): ``(B, K + dense + new)``, -1 where fewer.
    The never-seen items are the best by text similarity to the user's recent items (``text_scores``, given
    ``histories`` and a model that reads item text), else by dense score: nothing trained their dense score.
    A joining item's score is what the beam would have given it: its exact generation log-probability by
    teacher forcing (``teacher_forced_scores``: the beam's incremental decoder, all of a user's items at once;
    ``model.score_items`` is the HF-decoder reference), corrected by ``prior_weight * log p_pop(item)`` like the beam's
    (the per-level corrections of a path sum to the item's), so ``hybrid_rank`` orders all of them alike.
    """
    device = user_states.device
    n = trie.num_items
    raw = model.dense_logits(user_states).float()[:, :n]  # (B, N) every item's dense score, kept for the joined
    all_dense = raw.masked_fill(~torch.tensor(trie.active, device=device)[None, :], float("-inf"))  # to choose from
    in_beam = torch.zeros(all_dense.shape[0], n + 1, dtype=torch.bool, device=device)
    in_beam.scatter_(1, found.items.to(device) + 1, True)  # shifted by one: empty slots (-1) land in column 0
    all_dense = all_dense.masked_fill(in_beam[:, 1:], float("-inf"))  # already candidates
    if exclude is not None:
        rows = torch.tensor([r for r, h in enumerate(exclude) for _ in h], dtype=torch.long)
        cols = torch.tensor([c for h in exclude for c in h], dtype=torch.long)
        if len(rows):
            all_dense[rows.to(device), cols.to(device)] = float("-inf")
    picked = []
    if dense:
        picked.append(_top_or_none(all_dense, dense))
        all_dense.scatter_(1, picked[-1].clamp(min=0), float("-inf"))
    if new:
        seen = model.item_counts[:n].to(device) > 0  # (N,)
        text = model_unit_text(model)  # (N, Dt) or None
        pool = all_dense
        if text is not None and histories is not None:
            unseen = torch.nonzero(~seen).flatten()  # (M,) only they can join here: score only them
            pool = torch.full_like(all_dense, float("-inf"))  # (B, N)
            pool[:, unseen] = text_scores(text[:n], histories, normalized=True, items=unseen).to(device)
            pool = pool.masked_fill(torch.isinf(all_dense), float("-inf"))
        picked.append(_top_or_none(pool.masked_fill(seen[None, :], float("-inf")), new))
    extra = torch.cat(picked, 1)  # (B, E), -1 = none
    tokens = model.embedder.item_tokens[extra.clamp(min=-1) + 1]  # (B, E, L) level tokens; -1 -> the pad row
    logp = teacher_forced_scores(model, input_ids, mask, tokens).masked_fill(extra < 0, float("-inf"))  # (B, E)
    if prior is not None and prior_weight:
        logp = logp - prior_weight * prior.item_log_prior(extra.cpu()).to(device).masked_fill(extra < 0, 0.0)
    extra_dense = raw.gather(1, extra.clamp(min=0)).masked_fill(extra < 0, float("-inf"))  # (B, E)
    return Candidates(torch.cat([found.items, extra.cpu()], 1), torch.cat([found.scores, logp.cpu()], 1),
                      torch.cat([found.dense, extra_dense.cpu()], 1) if found.dense is not None else None)


def _top_or_none(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of each row's top ``k`` finite scores ``(B, k)``, -1 where a row has fewer."""
    vals, idx = scores.topk(min(k, scores.shape[1]), dim=1)
    idx = idx.masked_fill(torch.isinf(vals), -1)
    if idx.shape[1] < k:
        idx = torch.cat([idx, idx.new_full((idx.shape[0], k - idx.shape[1]), -1)], 1)
    return idx


def recommend_topk(
    model: nn.Module, trie: CatalogTrie, histories: Sequence[Sequence[int]], *, k: int,
    settings: DecodingSettings | None = None, cold: np.ndarray | None = None, cold_share: float = 0.0, **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items ``(U, k)`` and their scores, best first (``-1`` / ``-inf`` where fewer exist).

    ``settings``: the generator's ``DecodingSettings`` (beam size, dense weight, popularity correction, the
    dense and new items that join the beam's candidates; None = the defaults); the beam is raised to ``k`` if
    smaller, and the dense weight and joining items only apply to a generator with a dense head. ``cold_share``: TIGER's epsilon, up to ``ceil(cold_share * k)`` slots for ``cold``
    items (``bool (N,)``) from the same candidates (``reserve_cold``; 0 = off). Other keyword arguments go
    to ``beam_candidates``.
    """
    settings = settings or DecodingSettings()
    weight = settings.dense_weight if has_dense_head(model) else 0.0
    candidates = beam_candidates(model, trie, histories, beam_size=max(settings.beam_size, k), with_dense=weight != 0,
                                 prior_weight=settings.prior_weight, dense_candidates=settings.dense_candidates,
                                 new_candidates=settings.new_candidates, **kwargs)
    if cold_share > 0:
        if cold is None:
            raise ValueError("cold_share needs the cold items: pass cold=bool (N,) (e.g. tokenizer.assigned_items())")
        items, scores = candidates.rank(weight=weight, k=candidates.items.shape[1])  # the whole beam, ranked
        return reserve_cold(items, scores, torch.as_tensor(np.asarray(cold, dtype=bool)), epsilon=cold_share, k=k,
                            priority=_text_priority(model, histories, items))
    return candidates.rank(weight=weight, k=k)


def _text_priority(model: nn.Module, histories: Sequence[Sequence[int]], items: torch.Tensor) -> torch.Tensor | None:
    """``(B, K)`` the candidates' text similarity to each user's recent items (which cold candidates fill the
    reserved slots), or None for a model without item text (then the ranking's own order)."""
    text = model_unit_text(model)
    return None if text is None else candidate_text_scores(text, [list(h) for h in histories], items).cpu()
