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

from sidrec.decoding.topk import topk_from_scores  # noqa: F401  (the scorers' top-k, below every stage)


@runtime_checkable
class Scorer(Protocol):
    """Anything that ranks the catalog for a batch of histories."""

    name: str

    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices, best first."""
        ...
