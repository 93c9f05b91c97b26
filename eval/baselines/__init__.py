"""Baselines for the same leave-one-out harness: most-popular, text-embedding kNN, SASRec.

All implement the scorer protocol of :mod:`sidrec.eval.baselines.base`.
"""

from sidrec.eval.baselines.base import Scorer, topk_from_scores

__all__ = ["Scorer", "topk_from_scores"]
