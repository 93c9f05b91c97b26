"""Most-popular baseline: the same list for everyone, ranked by training interaction counts."""

from __future__ import annotations

import numpy as np


class PopularityScorer:
    """Recommends the items with the most training interactions (ties: lower item index first).

    ``counts`` should come from the training sequences only (``PreparedDataset.train_item_counts()``)
    so that no held-out interaction leaks into the ranking.
    """

    name = "popularity"

    def __init__(self, *, counts: np.ndarray, exclude_history: bool = False) -> None:
        counts = np.asarray(counts)
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError(f"counts must be a non-empty (num_items,) array, got shape {counts.shape}")
        self.counts = counts
        self.exclude_history = exclude_history
        self.order = np.argsort(-counts, kind="stable")  # (N,) most popular first

    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices; identical rows unless ``exclude_history``."""
        n = len(histories)
        out = np.full((n, k), -1, dtype=np.int64)
        if not self.exclude_history:
            head = self.order[:k]
            out[:, : head.size] = head
            return out
        for i, h in enumerate(histories):
            seen = set(h)
            row = [it for it in self.order[: k + len(seen)] if it not in seen][:k]
            out[i, : len(row)] = row
        return out
