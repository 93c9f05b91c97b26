"""RQ-KMeans: residual k-means with faiss, level by level, no training loop.

Level 1 clusters the embeddings; level l clusters what is left after subtracting the chosen centroids
of levels < l. Decoding sums the chosen centroids. A strong, cheap baseline for RQ-VAE (and the routine
RQ-VAE uses to initialise its codebooks).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sidrec.tokenizer.base import Quantizer, register_quantizer

if TYPE_CHECKING:
    from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)


def kmeans(x: np.ndarray, k: int, *, niter: int, seed: int) -> np.ndarray:
    """faiss k-means of ``x (N, d)`` -> centroids ``float32 (k, d)``; seeded, exact assignment.

    ``ValueError`` when there are fewer points than clusters (every code could not get a point).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least as many items as codes: {len(x)} items < codebook_size {k}; "
                         f"lower --codebook-size to at most {len(x)} (or use more items)")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                      max_points_per_centroid=1 << 20)  # use every point: deterministic, no subsampling
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)  # (k, d)


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances ``(N, K)`` of ``x (N, d)`` to ``centroids (K, d)`` and the argmin ``(N,)``."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ct = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    d = (xt * xt).sum(1, keepdim=True) - 2 * xt @ ct.T + (ct * ct).sum(1)[None, :]  # (N, K)
    d = d.numpy()
    return d, d.argmin(axis=1).astype(np.int64)


def residual_encode(x: np.ndarray, codebooks: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Residual quantization: codes ``int64 (N, L)`` and the residual entering each level (L x (N, d))."""
    r = np.array(x, dtype=np.float32, copy=True)
    codes = np.zeros((len(x), len(codebooks)), dtype=np.int64)
    residuals = []
    for level, cb in enumerate(codebooks):
        residuals.append(r.copy())
        _, idx = nearest(r, cb)
        codes[:, level] = idx
        r -= cb[idx]
    return codes, residuals


def residual_decode(codes: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """Sum of the chosen codewords ``float32 (N, d)``."""
    out = np.zeros((len(codes), codebooks[0].shape[1]), dtype=np.float32)
    for level, cb in enumerate(codebooks):
        out += cb[codes[:, level]]
    return out


def ranked_last_level(x: np.ndarray, codebooks: list[np.ndarray], k: int) -> np.ndarray:
    """``int64 (N, k)`` last-level codes, nearest first, for the residual left by the encoded prefix."""
    _, residuals = residual_encode(x, codebooks)
    dist, _ = nearest(residuals[-1], codebooks[-1])
    return np.argsort(dist, axis=1, kind="stable")[:, :k].astype(np.int64)


def fit_residual_kmeans(x: np.ndarray, *, num_levels: int, k: int, niter: int, seed: int) -> list[np.ndarray]:
    """Codebooks ``L x (k, d)`` of residual k-means on ``x (N, d)``."""
    r = np.array(x, dtype=np.float32, copy=True)
    codebooks = []
    for level in range(num_levels):
        cb = kmeans(r, k, niter=niter, seed=seed + level)
        _, idx = nearest(r, cb)
        r -= cb[idx]
        codebooks.append(cb)
    return codebooks


@register_quantizer("rqkmeans")
class RQKMeans(Quantizer):
    """Residual k-means on the raw embeddings (faiss, no training loop)."""

    def __init__(self, *, num_levels: int = 3, codebook_size: int = 256, niter: int = 25, seed: int = 0) -> None:
        super().__init__(num_levels=num_levels, codebook_size=codebook_size, niter=niter, seed=seed)
        self.codebooks: list[np.ndarray] = []

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> RQKMeans:
        return cls(num_levels=config.num_levels, codebook_size=config.codebook_size,
                   niter=config.kmeans_niter, seed=config.seed)

    @property
    def level_sizes(self) -> list[int]:
        return [self.params["codebook_size"]] * self.params["num_levels"]

    def _fit(self, emb: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        self.codebooks = fit_residual_kmeans(emb, num_levels=self.params["num_levels"],
                                             k=self.params["codebook_size"], niter=self.params["niter"],
                                             seed=self.params["seed"])
        return {}

    def _encode(self, emb: np.ndarray) -> np.ndarray:
        return residual_encode(emb, self.codebooks)[0]

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return residual_decode(codes, self.codebooks)

    def _last_level_candidates(self, emb: np.ndarray, k: int) -> np.ndarray:
        return ranked_last_level(emb, self.codebooks, k)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"codebook.{i}": torch.from_numpy(cb) for i, cb in enumerate(self.codebooks)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        want = (self.params["codebook_size"], self.input_dim)
        cbs = []
        for i in range(self.params["num_levels"]):
            t = tensors[f"codebook.{i}"]
            if tuple(t.shape) != want:
                raise RuntimeError(f"codebook.{i} has shape {tuple(t.shape)}, expected {want}")
            cbs.append(np.ascontiguousarray(t.numpy(), dtype=np.float32))
        self.codebooks = cbs
