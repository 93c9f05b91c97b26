"""Hybrid ranking of the beam's candidates: generation log-probability + w * dense score.

The trie-constrained beam search is the retrieval step: it proposes ``K = beam_size`` catalog items per
user with their sequence log-probabilities. A generator with a dense head (the ``item`` family) also
scores each candidate by ``user state . item vector``; ``hybrid_rank`` orders the candidates by
``logp + weight * dense`` and keeps the top k. Only candidates are ranked: the beam's, and the items that
``join_candidates`` adds (the best by dense score, and new items), scored the same way. Empty slots (-1) stay
last. ``weight = 0`` is pure generation (the beam's own order).

Why the raw dense score and not its log-softmax over the catalog: the log-softmax only subtracts a
per-user constant, so both give the same order for every weight, and the raw score costs K dot products
per user instead of a pass over the whole catalog (which matters at millions of items).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["hybrid_rank", "merge_ranked", "reserve_cold", "reserve_cold_by_text"]


def hybrid_rank(
    items: torch.Tensor, scores: torch.Tensor, dense: torch.Tensor | None, *, weight: float, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of the beam's candidates by ``scores + weight * dense``.

    Args:
        items: ``(B, K)`` candidate item indices from the beam search, -1 = empty slot.
        scores: ``(B, K)`` their generation log-probabilities (-inf where items is -1).
        dense: ``(B, K)`` their dense scores, or None (then ``weight`` must be 0).
        weight: weight of the dense score (0 = by generation log-probability alone: the beam's order, with
            items that joined the beam's candidates (``join_candidates``) ranked among them).
        k: items to keep, ``k <= K``.

    Returns:
        ``items (B, k)`` and combined ``scores (B, k)``, best first; ties keep the beam's order.
    """
    if items.shape != scores.shape or (dense is not None and dense.shape != items.shape):
        raise ValueError(f"items, scores and dense must have the same (B, K) shape, got {tuple(items.shape)}, "
                         f"{tuple(scores.shape)}, {None if dense is None else tuple(dense.shape)}")
    if not 1 <= k <= items.shape[1]:
        raise ValueError(f"need 1 <= k <= {items.shape[1]} candidates, got k={k}")
    if weight and dense is None:
        raise ValueError(f"hybrid weight {weight} needs dense scores; this generator has no dense head")
    combined = scores + weight * dense.to(scores.dtype) if weight else scores.clone()  # (B, K)
    combined = combined.masked_fill(items < 0, float("-inf"))
    order = torch.sort(combined, dim=1, descending=True, stable=True).indices[:, :k]  # (B, k)
    return items.gather(1, order), combined.gather(1, order)


def reserve_cold(
    items: torch.Tensor, scores: torch.Tensor, cold: torch.Tensor, *, epsilon: float, k: int,
    priority: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIGER's cold-start share: up to ``ceil(epsilon * k)`` of the top-``k`` slots go to cold items.

    ``items``/``scores`` are a ranked candidate list ``(B, K)`` (best first, -1 = empty; e.g. the beam's
    candidates after ``hybrid_rank`` with ``k = K``). Per user, when the top ``k`` hold fewer cold items than
    ``r = min(ceil(epsilon * k), cold items among the candidates)``, the lowest-ranked non-cold items of
    the top ``k`` give way to the best cold candidates ranked below ``k``, which take the freed slots at the
    end in their own order. So at most ``ceil(epsilon * k)`` slots change, each to a cold item, every item
    still comes from the candidates, and ``epsilon = 0`` returns the top ``k`` unchanged.

    Args:
        items: ``(B, K)`` ranked candidate items, ``K >= k``.
        scores: ``(B, K)`` their scores.
        cold: ``(N,)`` bool, True for items that are cold (never seen in training / added later).
        epsilon: share of the top ``k`` reserved for cold items, in ``[0, 1]``.
        k: list length.
        priority: ``(B, K)`` which cold candidates below ``k`` come first (higher first; e.g. their text
            similarity to the user's recent items); None = the ranking's order.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if not 1 <= k <= items.shape[1]:
        raise ValueError(f"need 1 <= k <= {items.shape[1]} candidates, got k={k}")
    top_items, top_scores = items[:, :k].clone(), scores[:, :k].clone()
    reserve = math.ceil(epsilon * k - 1e-9)
    if reserve == 0:
        return top_items, top_scores
    is_cold = (items >= 0) & cold.to(items.device)[items.clamp(min=0)]  # (B, K)
    for row in range(items.shape[0]):
        have = int(is_cold[row, :k].sum())
        below = torch.nonzero(is_cold[row, k:]).flatten() + k  # cold candidates ranked below k, best first
        if priority is not None and below.numel():
            below = below[torch.argsort(priority[row, below], descending=True, stable=True)]
        swap = min(reserve - have, int(below.numel()))
        if swap <= 0:
            continue
        warm = torch.nonzero(~is_cold[row, :k]).flatten()  # warm (or empty) slots of the top k, best first
        keep = torch.sort(torch.cat([torch.nonzero(is_cold[row, :k]).flatten(), warm[: len(warm) - swap]])).values
        top_items[row] = torch.cat([items[row, keep], items[row, below[:swap]]])
        top_scores[row] = torch.cat([scores[row, keep], scores[row, below[:swap]]])
    return top_items, top_scores


def merge_ranked(items: torch.Tensor, scores: torch.Tensor, more_items: torch.Tensor,
                 more_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ranked candidate lists per user ``(B, K1)``, ``(B, K2)`` -> one ``(B, K1 + K2)``, best score first,
    each item once (``-1`` slots last)."""
    all_items, all_scores = torch.cat([items, more_items], 1), torch.cat([scores, more_scores], 1)
    dup = torch.zeros_like(all_items, dtype=torch.bool)
    dup[:, items.shape[1]:] = (more_items[:, :, None] == items[:, None, :]).any(-1) & (more_items >= 0)
    all_scores = all_scores.masked_fill(dup | (all_items < 0), float("-inf"))
    order = torch.argsort(-all_scores, dim=1, stable=True)
    merged, merged_scores = all_items.gather(1, order), all_scores.gather(1, order)
    return merged.masked_fill(torch.isinf(merged_scores), -1), merged_scores


def reserve_cold_by_text(
    items: torch.Tensor, scores: torch.Tensor, *, unit: torch.Tensor, histories: Sequence[Sequence[int]],
    cold: torch.Tensor, epsilon: float, k: int, score_of: Callable[[torch.Tensor], torch.Tensor],
    exclude_history: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIGER's epsilon for a ranking of the whole catalog, one batch: up to ``ceil(epsilon * k)`` of the top
    ``k`` go to the ``cold`` items (``bool (N,)``, the ones that may be offered) whose text is closest to the
    user's recent items (``text_profile.closest_by_text``), in that order, each with its own score.

    ``items``/``scores``: the ranking's top ``(B, k)``; ``unit``: ``(N, D)`` normalised item text;
    ``score_of``: ``(B, k) item indices -> (B, k)`` their scores in the same ranking (e.g. a gather from the
    batch's whole-catalog scores). The exact ranker and the fused recommender share it, so their reserved
    slots follow the beam families' rule.
    """
    from sidrec.decoding.text_profile import candidate_text_scores, closest_by_text

    pool = torch.nonzero(cold.cpu()).flatten()  # (C,)
    chosen = closest_by_text(unit, histories, pool, k=k, exclude_history=exclude_history)  # (B, k)
    chosen_scores = score_of(chosen.clamp(min=0)).masked_fill(chosen < 0, float("-inf"))
    merged, order = merge_ranked(items, scores, chosen, chosen_scores)
    priority = candidate_text_scores(unit, [list(h) for h in histories], merged).cpu()
    return reserve_cold(merged, order, cold, epsilon=epsilon, k=k, priority=priority)
