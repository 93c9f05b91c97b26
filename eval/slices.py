"""Uncertainty and breakdowns over users: bootstrap confidence intervals and per-slice metrics.

Both work on per-user metric arrays from :func:`sidrec.eval.metrics.per_user_metrics`, so every
model is resampled with the same user indices for a given seed (paired bootstrap) and no rank is
recomputed.
"""

from __future__ import annotations

import numpy as np

# history-length buckets (number of history items, inclusive ranges) and target-popularity
# buckets (training interactions of the target item; 0 = item never seen in training)
HISTORY_BUCKETS: tuple[tuple[int, int], ...] = ((0, 3), (4, 5), (6, 9), (10, 19), (20, 10**9))
POPULARITY_BUCKETS: tuple[tuple[int, int], ...] = ((0, 0), (1, 9), (10, 49), (50, 199), (200, 10**9))


def bootstrap_ci(
    per_user: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
    chunk: int = 100,
) -> dict[str, list[float]]:
    """Percentile bootstrap CI of each metric's mean, resampling users with replacement.

    Args:
        per_user: metric name -> ``(U,)`` per-user values (all the same U).
        n_boot: resamples (0 disables: returns ``{}``).
        seed: the same seed draws the same resamples for every model (paired comparison).
        level: coverage of the interval.
        chunk: resamples drawn at once (memory ``chunk x U`` ints).

    Returns:
        metric name -> ``[low, high]``.
    """
    if n_boot <= 0 or not per_user:
        return {}
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    names = list(per_user)
    values = np.stack([np.asarray(per_user[n], dtype=np.float64) for n in names])  # (M, U)
    u = values.shape[1]
    if u == 0:
        return {n: [float("nan"), float("nan")] for n in names}
    rng = np.random.default_rng(seed)
    means = np.empty((len(names), n_boot))  # (M, n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, u, size=(stop - start, u))  # (C, U)
        means[:, start:stop] = values[:, idx].mean(axis=2)  # (M, C)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    q = np.percentile(means, [lo, hi], axis=1)  # (2, M)
    return {n: [float(q[0, i]), float(q[1, i])] for i, n in enumerate(names)}


def _label(lo: int, hi: int) -> str:
    if hi >= 10**9:
        return f"{lo}+"
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def slice_metrics(
    per_user: dict[str, np.ndarray], values: np.ndarray,
    buckets: tuple[tuple[int, int], ...],
) -> dict[str, dict[str, float]]:
    """Mean of every metric within each bucket of ``values`` (e.g. history length per user).

    Returns:
        bucket label (``"4-5"``, ``"20+"``) -> ``{"users": n, metric: mean, ...}``; empty
        buckets are omitted.
    """
    values = np.asarray(values)
    out: dict[str, dict[str, float]] = {}
    for lo, hi in buckets:
        mask = (values >= lo) & (values <= hi)  # (U,)
        n = int(mask.sum())
        if n == 0:
            continue
        row: dict[str, float] = {"users": n}
        row.update({name: float(v[mask].mean()) for name, v in per_user.items()})
        out[_label(lo, hi)] = row
    return out


def standard_slices(
    per_user: dict[str, np.ndarray], *, histories: list[list[int]], targets: np.ndarray,
    item_counts: np.ndarray, cold_items: np.ndarray | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """The slicings the report shows: ``history_length``, ``target_popularity`` and, for a dataset with a
    cold-start split (``cold_items``: ``(N,)`` bool), ``target_cold`` (users whose target is warm / cold)."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    target_pop = np.asarray(item_counts)[np.asarray(targets)]
    out = {
        "history_length": slice_metrics(per_user, lengths, HISTORY_BUCKETS),
        "target_popularity": slice_metrics(per_user, target_pop, POPULARITY_BUCKETS),
    }
    if cold_items is not None and np.asarray(cold_items).any():
        is_cold = np.asarray(cold_items, dtype=bool)[np.asarray(targets)].astype(np.int64)  # (U,)
        named = slice_metrics(per_user, is_cold, ((0, 0), (1, 1)))
        out["target_cold"] = {{"0": "warm", "1": "cold"}[k]: v for k, v in named.items()}
    return out
