"""Quality figures of a semantic-ID table (the keys of ``RUN/tokenizer/stats.json``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sidrec.tokenizer.collisions import group_sizes


def level_usage(codes: np.ndarray, level_sizes: list[int]) -> list[float]:
    """Per level: fraction of that level's codes used by at least one item."""
    return [float(len(np.unique(codes[:, i])) / level_sizes[i]) for i in range(len(level_sizes))]


def level_perplexity(codes: np.ndarray, level_sizes: list[int]) -> list[float]:
    """Per level: ``exp(entropy)`` of the code distribution (= level size when perfectly uniform)."""
    out = []
    for i, k in enumerate(level_sizes):
        p = np.bincount(codes[:, i], minlength=k).astype(np.float64)
        p = p[p > 0] / p.sum()
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise cosine similarity of two ``(N, D)`` arrays."""
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).mean()) if len(a) else float("nan")


def decoded_cosine(emb: np.ndarray, codes: np.ndarray, decode: Callable[[np.ndarray], np.ndarray], *,
                   chunk_rows: int = 4096) -> float:
    """``mean_cosine(emb, decode(codes))`` decoding ``chunk_rows`` rows at a time (same value: the
    per-row cosines are computed row by row and averaged once)."""
    cos = np.zeros(len(emb), dtype=np.float32)
    for start in range(0, len(emb), chunk_rows):
        a, b = emb[start:start + chunk_rows], decode(codes[start:start + chunk_rows])
        num = (a * b).sum(1)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
        cos[start:start + chunk_rows] = num / den
    return float(cos.mean()) if len(emb) else float("nan")


def tokenizer_stats(
    *, method: str, prefix: np.ndarray, level_sizes: list[int], collision_level_size: int,
    recon_cosine: float, fit_seconds: float, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The stats dict for semantic codes ``prefix (N, L)`` (without the collision level).

    ``level_usage`` / ``level_perplexity`` cover the semantic levels; ``unique_before_collision`` is the
    fraction of items whose semantic codes no other item shares; ``max_collision_group`` the largest
    group of items sharing all semantic codes.
    """
    sizes = group_sizes(prefix)
    stats = {
        "method": method,
        "num_items": int(len(prefix)),
        "num_levels": int(prefix.shape[1]),
        "codebook_size": int(level_sizes[0]) if level_sizes else 0,
        "level_sizes": [int(k) for k in level_sizes],
        "collision_level_size": int(collision_level_size),
        "level_usage": level_usage(prefix, level_sizes),
        "level_perplexity": level_perplexity(prefix, level_sizes),
        "unique_before_collision": float((sizes == 1).mean()) if len(sizes) else float("nan"),
        "max_collision_group": int(sizes.max()) if len(sizes) else 0,
        "recon_cosine": float(recon_cosine),
        "fit_seconds": float(fit_seconds),
    }
    stats.update(extra or {})
    return stats
