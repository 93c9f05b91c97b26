"""SASRec as a scorer for the evaluation harness (model in :mod:`sidrec.seqmodel.sasrec`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from sidrec.eval.baselines.base import topk_from_scores
from sidrec.seqmodel.sasrec import SASRec, pad_histories


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

    @torch.no_grad()
    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices; ``user_index`` is unused (SASRec has no user embedding)."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(histories), self.batch_size):
            batch = histories[start : start + self.batch_size]
            tokens, lengths = pad_histories(batch, self.model.config.max_len)  # (B, L), (B,)
            scores = self.model.score_last(tokens.to(self.device), lengths.to(self.device))  # (B, N)
            out.append(
                topk_from_scores(scores.cpu(), k, histories=batch, exclude_history=self.exclude_history)
            )
        self.model.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
