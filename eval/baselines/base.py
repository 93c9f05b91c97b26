"""The scorer protocol shared by every model under evaluation, and top-k selection.

A scorer turns histories into ranked item lists::

    recommend(histories: list[list[int]], k: int, user_index: np.ndarray | None = None) -> (U, k) int64

Item indices are the prepared dataset's (0..N-1); ``-1`` fills slots a scorer cannot fill.

History items: every scorer takes ``exclude_history`` (default ``False``). Leave-one-out
benchmarks for generative recommenders (TIGER and its follow-ups) rank the whole catalog
without removing already-seen items, and the Amazon 5-core sets have no repeated item within a
user, so excluding could only help a model that wastes slots on seen items. The evaluation
applies one setting to every model and records it in ``metrics.json``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Scorer(Protocol):
    """Anything that ranks the catalog for a batch of histories."""

    name: str

    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices, best first."""
        ...


def topk_from_scores(
    scores: torch.Tensor | np.ndarray,
    k: int,
    *,
    histories: list[list[int]] | None = None,
    exclude_history: bool = False,
) -> np.ndarray:
    """Top-``k`` item indices per row of a dense ``(U, N)`` score matrix.

    With ``exclude_history`` the items of each row's history get ``-inf`` first. Ties are broken
    by ``torch.topk`` (stable for equal scores is not guaranteed; scorers add tiny tie-breakers
    where it matters). Slots beyond N, or filled only by excluded items, are ``-1``.
    """
    s = torch.as_tensor(scores, dtype=torch.float32).clone()  # (U, N)
    if s.ndim != 2:
        raise ValueError(f"scores must be (users, items), got shape {tuple(s.shape)}")
    if exclude_history:
        if histories is None or len(histories) != s.shape[0]:
            raise ValueError("exclude_history=True needs one history per score row")
        rows = [i for i, h in enumerate(histories) for _ in h]
        cols = [c for h in histories for c in h]
        if rows:
            s[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
    kk = min(k, s.shape[1])
    vals, idx = torch.topk(s, kk, dim=1)  # (U, kk)
    idx = torch.where(torch.isinf(vals) & (vals < 0), torch.full_like(idx, -1), idx)
    out = np.full((s.shape[0], k), -1, dtype=np.int64)
    out[:, :kk] = idx.numpy()
    return out
