"""OPQ: long, flat semantic IDs by optimized product quantization (faiss), as in RPG (Hou et al., KDD 2025).

An item's ID is ``num_levels`` digits (default 32) of ``codebook_size`` codes (256), each digit the nearest
centroid of one sub-vector of the item's transformed embedding. The digits are independent (not
residual), so no digit is "first": a generator can predict them all at once and score every catalog item
exactly (``sidrec.seqmodel.parallel_model``). The transform, fitted once:

1. centre, then PCA to ``pca_dim`` dimensions, optionally whitened (each component scaled to unit variance,
   so every direction weighs the same in the sub-quantizers' distances; 0 = no PCA);
2. an orthonormal rotation learned by faiss ``OPQMatrix`` (balances the information over the sub-vectors;
   ``rotation: false`` = plain PQ);
3. ``num_levels`` sub-quantizers of ``dim / num_levels`` dimensions, trained by faiss ``ProductQuantizer``
   (k-means per sub-space) on a seeded sample of ``points_per_centroid * codebook_size`` rows.

Every fitted tensor (mean, projection and its inverse, rotation, centroids) is stored in
``model.safetensors``; encoding and decoding run in torch, so faiss is only needed to fit. Items sharing
all digits (identical embeddings) are separated by the tokenizer's collision strategy: ``reassign`` moves
them to their next-best free code of the last digit, the collision level takes what is left.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sidrec.tokenizer.base import Quantizer, register_quantizer
from sidrec.tokenizer.rqkmeans import training_rows

if TYPE_CHECKING:
    from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)

__all__ = ["OPQ", "opq_codebook_size"]

MAX_CODEBOOK_SIZE = 256  # one byte per digit (faiss trains up to 16 bits, but 256 keeps the heads small)


def opq_codebook_size(num_items: int) -> int:
    """Codes per digit for a catalog of ``num_items``: 256, or the largest power of two <= the item count
    (k-means needs a point per code) for catalogs under 256 items."""
    size = MAX_CODEBOOK_SIZE
    while size > 2 and size > num_items:
        size //= 2
    return size


def whitened_pca(x: np.ndarray, dim: int, *, whiten: bool, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """``mean (D,)``, ``proj (D, dim)`` and its inverse ``unproj (dim, D)`` of a PCA of ``x (N, D)``.

    ``(x - mean) @ proj`` are the top ``dim`` principal components, divided by their standard deviation when
    ``whiten``; ``z @ unproj + mean`` maps back (exact on the kept sub-space).
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False, bias=True)  # (D, D)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:dim]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]  # (dim,), (D, dim)
    scale = 1.0 / np.sqrt(values + eps) if whiten else np.ones(dim)
    proj = vectors * scale[None, :]
    unproj = (vectors / scale[None, :]).T
    return mean.astype(np.float32), proj.astype(np.float32), unproj.astype(np.float32)


@register_quantizer("opq")
class OPQ(Quantizer):
    """Optimized product quantization: ``num_levels`` independent digits (see the module docstring)."""

    def __init__(self, *, num_levels: int = 32, codebook_size: int = 256, pca_dim: int = 128, whiten: bool = True,
                 rotation: bool = True, niter: int = 25, opq_niter: int = 20, seed: int = 0,
                 points_per_centroid: int | None = None) -> None:
        super().__init__(num_levels=num_levels, codebook_size=codebook_size, pca_dim=pca_dim, whiten=whiten,
                         rotation=rotation, niter=niter, opq_niter=opq_niter, seed=seed,
                         points_per_centroid=points_per_centroid)
        self.mean = self.proj = self.unproj = self.rotation = self.centroids = None

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> OPQ:
        if config.codebook_size is None:
            raise ValueError("codebook_size is unresolved (null = sized to the catalog); call "
                             "sidrec.tokenizer.sizing.resolve_sizes(config, num_items) first")
        if config.codebook_size > MAX_CODEBOOK_SIZE:
            raise ValueError(f"opq digits hold at most {MAX_CODEBOOK_SIZE} codes, got codebook_size "
                             f"{config.codebook_size}; use more digits (num_levels) instead")
        return cls(num_levels=config.num_levels, codebook_size=config.codebook_size, pca_dim=config.opq_pca_dim,
                   whiten=config.opq_whiten, rotation=config.opq_rotation, niter=config.kmeans_niter,
                   opq_niter=config.opq_niter, seed=config.seed, points_per_centroid=config.kmeans_points_per_centroid)

    @property
    def level_sizes(self) -> list[int]:
        return [self.params["codebook_size"]] * self.params["num_levels"]

    @property
    def dim(self) -> int:
        """Width of the quantized space (the PCA's, else the input's)."""
        return int(self.params["pca_dim"] or self.input_dim)

    def _fit(self, emb: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        import faiss

        p, m, k = self.params, self.params["num_levels"], self.params["codebook_size"]
        dim = p["pca_dim"] or emb.shape[1]
        if dim > emb.shape[1] or dim % m:
            raise ValueError(f"opq: the quantized width ({dim}: opq_pca_dim, or the embedding width when 0) must be "
                             f"at most the embedding width {emb.shape[1]} and a multiple of num_levels={m}; "
                             f"set --opq-pca-dim to a multiple of {m}")
        if len(emb) < k:
            raise ValueError(f"opq needs at least codebook_size={k} items to fit, got {len(emb)}; lower --codebook-size")
        rows = training_rows(len(emb), k, p["points_per_centroid"], p["seed"])
        sample = emb if rows is None else emb[rows]
        if p["pca_dim"]:
            self.mean, self.proj, self.unproj = whitened_pca(sample, dim, whiten=p["whiten"])
        else:
            self.mean = np.zeros(emb.shape[1], dtype=np.float32)
            self.proj = self.unproj = np.eye(emb.shape[1], dtype=np.float32)
        z = np.ascontiguousarray((sample - self.mean) @ self.proj, dtype=np.float32)  # (S, dim)
        self.rotation = np.eye(dim, dtype=np.float32)
        if p["rotation"]:
            opq = faiss.OPQMatrix(dim, m)
            opq.niter = p["opq_niter"]
            opq.verbose = False
            opq.train(z)
            self.rotation = faiss.vector_to_array(opq.A).reshape(dim, dim).astype(np.float32)  # y = z @ A.T
        y = np.ascontiguousarray(z @ self.rotation.T, dtype=np.float32)
        pq = faiss.ProductQuantizer(dim, m, int(np.log2(k)))
        pq.cp.niter = p["niter"]
        pq.cp.seed = p["seed"]
        pq.cp.max_points_per_centroid = 1 << 20  # the sample above is the training set: no second subsampling
        pq.train(y)
        self.centroids = faiss.vector_to_array(pq.centroids).reshape(m, k, dim // m).astype(np.float32)
        return {"pca_dim": int(p["pca_dim"]), "whiten": bool(p["whiten"]), "rotation": bool(p["rotation"]),
                "train_rows": int(len(sample))}

    # -- encoding (torch; chunked by the base class) ----------------------------------------------
    def _subvectors(self, emb: np.ndarray) -> torch.Tensor:
        """The rotated, transformed embedding cut into digits: ``(n, D) -> (M, n, dsub)``."""
        z = (torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)) - torch.from_numpy(self.mean)) \
            @ torch.from_numpy(self.proj)
        y = z @ torch.from_numpy(self.rotation).T  # (n, dim)
        m = self.params["num_levels"]
        return y.view(len(emb), m, -1).transpose(0, 1)  # (M, n, dsub)

    def _distances(self, emb: np.ndarray) -> torch.Tensor:
        """Squared distances of each digit's sub-vector to that digit's centroids: ``(M, n, K)``."""
        sub = self._subvectors(emb)
        cents = torch.from_numpy(self.centroids)  # (M, K, dsub)
        return (sub * sub).sum(-1, keepdim=True) - 2 * sub @ cents.transpose(1, 2) + (cents * cents).sum(-1)[:, None, :]

    def _encode(self, emb: np.ndarray) -> np.ndarray:
        return self._distances(emb).argmin(-1).T.contiguous().numpy().astype(np.int64)  # (n, M)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        m = self.params["num_levels"]
        cents = torch.from_numpy(self.centroids)  # (M, K, dsub)
        idx = torch.from_numpy(np.asarray(codes, dtype=np.int64))  # (n, M)
        y = cents[torch.arange(m)[None, :], idx].reshape(len(codes), -1)  # (n, dim)
        z = y @ torch.from_numpy(self.rotation)  # the rotation is orthonormal: its inverse is its transpose
        return (z @ torch.from_numpy(self.unproj) + torch.from_numpy(self.mean)).numpy()

    def _last_level_candidates(self, emb: np.ndarray, k: int) -> np.ndarray:
        last = self._distances(emb)[-1]  # (n, K): the digits are independent, the last is ranked on its own
        return torch.argsort(last, dim=1, stable=True)[:, :k].numpy().astype(np.int64)

    def _encode_with_candidates(self, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist = self._distances(emb)  # (M, n, K)
        codes = dist.argmin(-1).T.contiguous().numpy().astype(np.int64)
        return codes, torch.argsort(dist[-1], dim=1, stable=True)[:, :k].numpy().astype(np.int64)

    # -- persistence ------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean), "proj": torch.from_numpy(self.proj),
                "unproj": torch.from_numpy(self.unproj), "rotation": torch.from_numpy(self.rotation),
                "centroids": torch.from_numpy(self.centroids)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        dim = int(self.params["pca_dim"] or self.input_dim)
        m, k = self.params["num_levels"], self.params["codebook_size"]
        want = {"mean": (self.input_dim,), "proj": (self.input_dim, dim), "unproj": (dim, self.input_dim),
                "rotation": (dim, dim), "centroids": (m, k, dim // m)}
        for name, shape in want.items():
            if tuple(tensors[name].shape) != shape:
                raise RuntimeError(f"{name} has shape {tuple(tensors[name].shape)}, expected {shape}")
            setattr(self, name, np.ascontiguousarray(tensors[name].numpy(), dtype=np.float32))
