"""Hybrid ranking of the beam's candidates: generation log-probability + w * dense score.

The trie-constrained beam search is the retrieval step: it proposes ``K = beam_size`` catalog items per
user with their sequence log-probabilities. A generator with a dense head (the ``item`` family) also
scores each candidate by ``user state . item vector``; ``hybrid_rank`` orders the candidates by
``logp + weight * dense`` and keeps the top k. Nothing outside the beam is ever ranked, and empty slots
(-1) stay last. ``weight = 0`` is pure generation (the beam's own order).

Why the raw dense score and not its log-softmax over the catalog: the log-softmax only subtracts a
per-user constant, so both give the same order for every weight, and the raw score costs K dot products
per user instead of a pass over the whole catalog (which matters at millions of items).
"""

from __future__ import annotations

import torch

__all__ = ["hybrid_rank"]


def hybrid_rank(
    items: torch.Tensor, scores: torch.Tensor, dense: torch.Tensor | None, *, weight: float, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of the beam's candidates by ``scores + weight * dense``.

    Args:
        items: ``(B, K)`` candidate item indices from the beam search, -1 = empty slot.
        scores: ``(B, K)`` their generation log-probabilities (-inf where items is -1).
        dense: ``(B, K)`` their dense scores, or None (then ``weight`` must be 0).
        weight: weight of the dense score (0 = the beam's order).
        k: items to keep, ``k <= K``.

    Returns:
        ``items (B, k)`` and combined ``scores (B, k)``, best first; ties keep the beam's order.
    """
    if items.shape != scores.shape or (dense is not None and dense.shape != items.shape):
        raise ValueError(f"items, scores and dense must have the same (B, K) shape, got {tuple(items.shape)}, "
                         f"{tuple(scores.shape)}, {None if dense is None else tuple(dense.shape)}")
    if not 1 <= k <= items.shape[1]:
        raise ValueError(f"need 1 <= k <= {items.shape[1]} candidates, got k={k}")
    if weight == 0:
        return items[:, :k], scores[:, :k]
    if dense is None:
        raise ValueError(f"hybrid weight {weight} needs dense scores; this generator has no dense head")
    combined = scores + weight * dense.to(scores.dtype)  # (B, K)
    combined = combined.masked_fill(items < 0, float("-inf"))
    order = torch.sort(combined, dim=1, descending=True, stable=True).indices[:, :k]  # (B, k)
    return items.gather(1, order), combined.gather(1, order)
