"""RQ-KMeans: residual k-means with faiss, level by level, no training loop.

Level 1 clusters the embeddings; level l clusters what is left after subtracting the chosen centroids
of levels < l. Decoding sums the chosen centroids. A strong, cheap baseline for RQ-VAE (and the routine
RQ-VAE uses to initialise its codebooks).

Memory is bounded for large catalogs: the codebooks are trained on a seeded sample of at most
``points_per_centroid * codebook_size`` rows (every row when the catalog is smaller, as on Beauty), and
every pass over the catalog (encode, ranked candidates) works in chunks of ``CHUNK_ROWS`` rows, so no
``(N, K)`` distance matrix or per-level ``(N, D)`` residual copy is ever held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sidrec.tokenizer.base import Quantizer, register_quantizer

if TYPE_CHECKING:
    from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)

#: Rows per chunk when a pass covers the whole catalog: the chunk's temporaries (residual, distances,
#: their argsort) are a few MiB whatever the catalog size. Results do not depend on it (distances are
#: computed row by row; checked bit for bit against whole-catalog calls on Beauty).
CHUNK_ROWS = 1024


def chunks(n: int, size: int = CHUNK_ROWS) -> Iterator[slice]:
    """Consecutive row slices of at most ``size`` rows covering ``0..n-1``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def kmeans(x: np.ndarray, k: int, *, niter: int, seed: int) -> np.ndarray:
    """faiss k-means of ``x (N, d)`` -> centroids ``float32 (k, d)``; seeded, exact assignment.

    Trains on every row it is given (callers pass a sample for large catalogs). ``ValueError`` when
    there are fewer points than clusters (every code could not get a point).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least as many items as codes: {len(x)} items < codebook_size {k}; "
                         f"lower --codebook-size to at most {len(x)} (or use more items)")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                      max_points_per_centroid=1 << 20)  # use every point given: deterministic, no subsampling
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)  # (k, d)


def training_rows(n: int, k: int, points_per_centroid: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded k-means training sample, or None to train on all ``n`` rows.

    The sample holds ``points_per_centroid * k`` rows (faiss samples 256 per centroid by default and
    warns below 39); ``None`` or a catalog no larger than that means every row, in order.
    """
    if points_per_centroid is None or n <= points_per_centroid * k:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=points_per_centroid * k, replace=False))


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances ``(N, K)`` of ``x (N, d)`` to ``centroids (K, d)`` and the argmin ``(N,)``.

    Holds the whole ``(N, K)`` matrix: call it on chunks (``assign`` does) for large ``N``.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ct = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    d = (xt * xt).sum(1, keepdim=True) - 2 * xt @ ct.T + (ct * ct).sum(1)[None, :]  # (N, K)
    d = d.numpy()
    return d, d.argmin(axis=1).astype(np.int64)


def assign(x: np.ndarray, centroids: np.ndarray, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Nearest centroid ``int64 (N,)`` of every row of ``x (N, d)``, computed in chunks of rows."""
    out = np.empty(len(x), dtype=np.int64)
    for sl in chunks(len(x), chunk_rows):
        out[sl] = nearest(x[sl], centroids)[1]
    return out


def _encode_chunk(x: np.ndarray, codebooks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(n, L)`` of a chunk ``x (n, d)`` and the squared distances of its last-level residual to
    the last codebook ``(n, K)`` (their argmin is the last code)."""
    r = np.array(x, dtype=np.float32, copy=True)
    codes = np.zeros((len(x), len(codebooks)), dtype=np.int64)
    dist = np.zeros((len(x), 0), dtype=np.float32)
    for level, cb in enumerate(codebooks):
        dist, idx = nearest(r, cb)
        codes[:, level] = idx
        if level < len(codebooks) - 1:
            r -= cb[idx]
    return codes, dist


def residual_encode(x: np.ndarray, codebooks: list[np.ndarray], *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Residual quantization of ``x (N, d)``: codes ``int64 (N, L)``, in chunks of rows."""
    codes = np.zeros((len(x), len(codebooks)), dtype=np.int64)
    for sl in chunks(len(x), chunk_rows):
        codes[sl] = _encode_chunk(x[sl], codebooks)[0]
    return codes


def residual_decode(codes: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """Sum of the chosen codewords ``float32 (N, d)``."""
    out = np.zeros((len(codes), codebooks[0].shape[1]), dtype=np.float32)
    for level, cb in enumerate(codebooks):
        out += cb[codes[:, level]]
    return out


def ranked_last_level(x: np.ndarray, codebooks: list[np.ndarray], k: int, *,
                      chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``int64 (N, k)`` last-level codes, nearest first, for the residual left by the encoded prefix."""
    return residual_encode_ranked(x, codebooks, k, chunk_rows=chunk_rows)[1]


def residual_encode_ranked(x: np.ndarray, codebooks: list[np.ndarray], k: int, *,
                           chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """``residual_encode`` and ``ranked_last_level`` in one pass: codes ``(N, L)``, candidates ``(N, k)``."""
    codes = np.zeros((len(x), len(codebooks)), dtype=np.int64)
    ranked = np.zeros((len(x), k), dtype=np.int64)
    for sl in chunks(len(x), chunk_rows):
        codes[sl], dist = _encode_chunk(x[sl], codebooks)
        ranked[sl] = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return codes, ranked


def fit_residual_kmeans(x: np.ndarray, *, num_levels: int, k: int, niter: int, seed: int,
                        points_per_centroid: int | None = None) -> list[np.ndarray]:
    """Codebooks ``L x (k, d)`` of residual k-means on ``x (N, d)``.

    Every level trains on the same seeded sample of rows (``training_rows``), so memory and time do not
    grow with the catalog beyond ``points_per_centroid * k`` rows; with ``None`` all rows are used.
    """
    rows = training_rows(len(x), k, points_per_centroid, seed)
    r = np.array(x if rows is None else x[rows], dtype=np.float32, copy=True)  # (S, d)
    if rows is not None:
        logger.info("residual k-means: training on a sample of %d of %d rows (%d per code)",
                    len(r), len(x), points_per_centroid)
    codebooks = []
    for level in range(num_levels):
        cb = kmeans(r, k, niter=niter, seed=seed + level)
        idx = assign(r, cb)
        for sl in chunks(len(r)):  # r -= cb[idx] without an (S, d) temporary
            r[sl] -= cb[idx[sl]]
        codebooks.append(cb)
    return codebooks


@register_quantizer("rqkmeans")
class RQKMeans(Quantizer):
    """Residual k-means on the raw embeddings (faiss, no training loop)."""

    def __init__(self, *, num_levels: int = 3, codebook_size: int = 256, niter: int = 25, seed: int = 0,
                 points_per_centroid: int | None = None) -> None:
        super().__init__(num_levels=num_levels, codebook_size=codebook_size, niter=niter, seed=seed,
                         points_per_centroid=points_per_centroid)
        self.codebooks: list[np.ndarray] = []

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> RQKMeans:
        if config.codebook_size is None:
            raise ValueError("codebook_size is unresolved (null = sized to the catalog); call "
                             "sidrec.tokenizer.sizing.resolve_sizes(config, num_items) first")
        return cls(num_levels=config.num_levels, codebook_size=config.codebook_size,
                   niter=config.kmeans_niter, seed=config.seed,
                   points_per_centroid=config.kmeans_points_per_centroid)

    @property
    def level_sizes(self) -> list[int]:
        return [self.params["codebook_size"]] * self.params["num_levels"]

    def _fit(self, emb: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        self.codebooks = fit_residual_kmeans(emb, num_levels=self.params["num_levels"],
                                             k=self.params["codebook_size"], niter=self.params["niter"],
                                             seed=self.params["seed"],
                                             points_per_centroid=self.params.get("points_per_centroid"))
        return {}

    def _encode(self, emb: np.ndarray) -> np.ndarray:
        return residual_encode(emb, self.codebooks)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return residual_decode(codes, self.codebooks)

    def _last_level_candidates(self, emb: np.ndarray, k: int) -> np.ndarray:
        return ranked_last_level(emb, self.codebooks, k)

    def _encode_with_candidates(self, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return residual_encode_ranked(emb, self.codebooks, k)

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
