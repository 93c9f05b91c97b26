"""Top-k over dense score matrices: the last step of every model that scores the whole catalog.

``topk_from_scores`` (one ``(U, N)`` matrix) and ``batched_topk`` (a scoring function called on batches of
histories) are shared by SASRec (training validation and evaluation), the generator's dense ablation
and the baselines, so exclusions, empty slots and ties mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["batched_topk", "history_mask", "topk_from_scores"]


def history_mask(histories: list[list[int]], num_items: int) -> torch.Tensor:
    """``bool (U, N)``: True at each row's history items (what ``exclude_history`` removes)."""
    mask = torch.zeros(len(histories), num_items, dtype=torch.bool)
    rows = [i for i, h in enumerate(histories) for _ in h]
    if rows:
        mask[torch.tensor(rows), torch.tensor([c for h in histories for c in h])] = True
    return mask


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
        s.masked_fill_(history_mask(histories, s.shape[1]), float("-inf"))
    kk = min(k, s.shape[1])
    vals, idx = torch.topk(s, kk, dim=1)  # (U, kk)
    idx = torch.where(torch.isinf(vals) & (vals < 0), torch.full_like(idx, -1), idx)
    out = np.full((s.shape[0], k), -1, dtype=np.int64)
    out[:, :kk] = idx.numpy()
    return out


def batched_topk(
    score: Callable[[list[list[int]]], torch.Tensor], histories: Sequence[Sequence[int]], k: int, *,
    batch_size: int = 512, exclude_history: bool = False,
) -> np.ndarray:
    """``(U, k)`` item indices: ``score(batch) -> (B, N)`` over batches of ``batch_size`` histories, each
    batch's top-k by ``topk_from_scores`` (history items removed with ``exclude_history``)."""
    out = []
    for start in range(0, len(histories), batch_size):
        batch = [list(h) for h in histories[start : start + batch_size]]
        out.append(topk_from_scores(score(batch).cpu(), k, histories=batch, exclude_history=exclude_history))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
