"""Ranking metrics for leave-one-out next-item recommendation: the one metrics module.

Every consumer (training validation, ``sidrec evaluate``, the baselines, bootstrap and slices)
computes metrics here, so a number in a log and a number in a report always mean the same.

Conventions (leave-one-out: exactly one held-out target per user):

- ``topk`` is an ``(U, K)`` integer array of item indices, best first. ``-1`` marks an empty
  slot (a decoder that returned fewer than K items). Any other value outside ``[0, N)`` is an
  invalid ID: it can never match a target and is counted by :func:`catalog_metrics`.
- ``target_ranks`` gives the 0-based position of the target in the list, ``-1`` when absent.
- ``recall@k`` = hit rate = share of users whose target is in the first k slots.
- ``ndcg@k`` = mean of ``1 / log2(rank + 2)`` over users with ``rank < k`` (one relevant item,
  so IDCG = 1).
- ``mrr`` = mean of ``1 / (rank + 1)`` over the *returned list* (0 when the target is absent),
  i.e. MRR@K for the K the scorer returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)


def _check_topk_targets(topk: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    if topk.ndim != 2:
        raise ValueError(f"topk must be a 2-D (users, K) array of item indices, got shape {topk.shape}")
    if targets.ndim != 1 or targets.shape[0] != topk.shape[0]:
        raise ValueError(
            f"targets must be a 1-D array with one item index per row of topk; got targets "
            f"shape {targets.shape} for topk shape {topk.shape}"
        )
    if topk.size and not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk must hold integer item indices, got dtype {topk.dtype}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must hold integer item indices, got dtype {targets.dtype}")
    if targets.size and targets.min() < 0:
        raise ValueError("targets contain a negative item index; every user needs a real held-out item")
    return topk.astype(np.int64, copy=False), targets.astype(np.int64, copy=False)


def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each user's target in its top-K list, ``-1`` when absent.

    Args:
        topk: ``(U, K)`` item indices, best first (``-1`` = empty slot).
        targets: ``(U,)`` held-out item index per user.

    Returns:
        ``(U,)`` int64 ranks. If an item appears twice in a row, the first position counts.
    """
    topk, targets = _check_topk_targets(topk, targets)
    hits = topk == targets[:, None]  # (U, K)
    found = hits.any(axis=1)  # (U,)
    first = hits.argmax(axis=1)  # (U,) first True, or 0 when none
    return np.where(found, first, -1).astype(np.int64)


def per_user_metrics(
    ranks: np.ndarray, *, ks: Sequence[int] = DEFAULT_KS, list_length: int | None = None
) -> dict[str, np.ndarray]:
    """Per-user metric values (``(U,)`` float arrays) from :func:`target_ranks` output.

    Averaging each array gives :func:`ranking_metrics`; bootstrap and slices resample or
    subset these arrays instead of recomputing ranks.

    Args:
        ranks: ``(U,)`` 0-based ranks, ``-1`` = miss.
        ks: cut-offs for ``recall@k`` and ``ndcg@k``.
        list_length: K of the lists the ranks came from; when given, a cut-off larger than K
            is an error (the metric would silently undercount).
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    ks = sorted({int(k) for k in ks})
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be >= 1, got {ks}")
    if list_length is not None and ks and ks[-1] > list_length:
        raise ValueError(
            f"cut-off @{ks[-1]} exceeds the list length {list_length}; ask the scorer for at least "
            f"{ks[-1]} items or drop that cut-off"
        )
    hit = ranks >= 0  # (U,)
    # 1/log2(rank+2) for hits, 0 otherwise (rank -1 would give 1/log2(1) = inf, so mask first)
    safe = np.where(hit, ranks, 0)
    gain = np.where(hit, 1.0 / np.log2(safe + 2.0), 0.0)  # (U,)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        within = hit & (ranks < k)
        out[f"recall@{k}"] = within.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(within, gain, 0.0)
    out["mrr"] = np.where(hit, 1.0 / (safe + 1.0), 0.0)
    return out


def ranking_metrics(
    topk: np.ndarray, targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean recall@k, ndcg@k (for each k in ``ks``) and MRR over users.

    Args:
        topk: ``(U, K)`` item indices, best first (``-1`` = empty slot); K >= max(ks).
        targets: ``(U,)`` held-out item per user.
        ks: cut-offs.

    Returns:
        ``{"recall@1": ..., "ndcg@1": ..., ..., "mrr": ...}`` as Python floats; an empty
        user set gives NaN for every key.
    """
    topk, targets = _check_topk_targets(topk, targets)
    per_user = per_user_metrics(target_ranks(topk, targets), ks=ks, list_length=topk.shape[1])
    if topk.shape[0] == 0:
        return {name: float("nan") for name in per_user}
    return {name: float(v.mean()) for name, v in per_user.items()}


def catalog_metrics(
    topk: np.ndarray, *, num_items: int, item_popularity: np.ndarray | None = None, k: int | None = None
) -> dict[str, float]:
    """List-level statistics: invalid-ID rate, empty-slot rate, catalog coverage, popularity.

    Args:
        topk: ``(U, K)`` recommended item indices (``-1`` = empty slot).
        num_items: catalog size N; valid indices are ``0..N-1``.
        item_popularity: optional ``(N,)`` train interaction counts; gives
            ``mean_popularity`` = mean count of the valid recommended items.
        k: only the first k slots count (default: all K).

    Returns:
        ``invalid_rate`` (non-empty slots whose index is outside the catalog, over all
        non-empty slots), ``empty_rate`` (``-1`` slots over all slots), ``coverage`` (distinct
        valid items recommended / N) and, with popularity, ``mean_popularity``.
    """
    topk = np.asarray(topk, dtype=np.int64)
    if topk.ndim != 2:
        raise ValueError(f"topk must be a 2-D (users, K) array, got shape {topk.shape}")
    if num_items <= 0:
        raise ValueError(f"num_items must be positive, got {num_items}")
    if k is not None:
        topk = topk[:, :k]
    empty = topk == -1
    filled = ~empty
    valid = filled & (topk >= 0) & (topk < num_items)
    n_filled = int(filled.sum())
    out = {
        "invalid_rate": float((filled & ~valid).sum() / n_filled) if n_filled else 0.0,
        "empty_rate": float(empty.mean()) if topk.size else 0.0,
        "coverage": float(np.unique(topk[valid]).size / num_items),
    }
    if item_popularity is not None:
        pop = np.asarray(item_popularity, dtype=np.float64)
        if pop.shape != (num_items,):
            raise ValueError(f"item_popularity must have shape ({num_items},), got {pop.shape}")
        out["mean_popularity"] = float(pop[topk[valid]].mean()) if valid.any() else float("nan")
    return out
