"""Ranking metrics, re-exported from :mod:`sidrec.utils.metrics` (their home: training validation and
evaluation both use them, so they live below both)."""

from sidrec.utils.metrics import (  # noqa: F401
    DEFAULT_KS,
    catalog_metrics,
    per_user_metrics,
    ranking_metrics,
    target_ranks,
)

__all__ = ["DEFAULT_KS", "catalog_metrics", "per_user_metrics", "ranking_metrics", "target_ranks"]
