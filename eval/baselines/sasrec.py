"""SASRec as a scorer for the evaluation harness (model in :mod:`sidrec.seqmodel.sasrec`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from sidrec.decoding.topk import batched_topk
from sidrec.seqmodel.sasrec import SASRec


class SasrecScorer:
    """Ranks the catalog by SASRec's scores after the last history item (full softmax, no sampling)."""

    name = "sasrec"

    def __init__(
        self, *, model: SASRec, batch_size: int = 512, exclude_history: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.batch_size = batch_size
        self.exclude_history = exclude_history
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> SasrecScorer:
        """Load ``RUN/baselines/sasrec`` (written by ``python -m sidrec.train.sasrec``)."""
        return cls(model=SASRec.from_pretrained(path), **kwargs)

    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices; ``user_index`` is unused (SASRec has no user embedding)."""
        return batched_topk(self.model.score_histories, histories, k, batch_size=self.batch_size,
                            exclude_history=self.exclude_history)
