"""RQ-VAE as in TIGER (Rajput et al., 2023): MLP encoder, residual codebooks, mirrored MLP decoder.

Loss = ||x - dec(z_q)||^2 + sum_l ( ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2 ), with a
straight-through estimator from the decoder to the encoder. Codebooks start from residual k-means
(faiss) on the latents of the first (seeded) batch. Dead-code handling: every few epochs the whole
catalog is encoded and codes nobody uses are re-seeded with residuals of items from the most crowded
codes, so no level collapses and crowded prefixes get split.

Two additions to TIGER's recipe keep the codebooks alive from the first step (measured on a 600-item
Beauty slice: without them one optimiser step left 1-2 of 16 codes in use): the input embeddings are standardised per dim
(catalog mean/std, stored with the model) and the latent passes a BatchNorm without affine
parameters, whose statistics are set to the exact catalog statistics at the end of the fit.
Losses are mean squared errors over dims (reconstruction in the standardised space).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sidrec.tokenizer.base import Quantizer, register_quantizer
from sidrec.tokenizer.rqkmeans import (
    assign,
    fit_residual_kmeans,
    ranked_last_level,
    residual_encode,
    residual_encode_ranked,
)
from sidrec.tokenizer.training import mlp, train_autoencoder

if TYPE_CHECKING:
    from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)


class RQVAEModule(nn.Module):
    """The network: encoder, ``(L, K, d)`` codebooks, decoder."""

    def __init__(self, *, input_dim: int, hidden_dims: list[int], latent_dim: int, num_levels: int,
                 codebook_size: int) -> None:
        super().__init__()
        # BatchNorm without affine on the latent keeps its per-dim spread at ~1 for the whole fit. Without
        # it the untrained MLP maps every item to nearly one point (spread ~0.01); the latents then grow
        # during training, leave the k-means codebooks behind and most codes empty at once.
        self.encoder = nn.Sequential(mlp([input_dim, *hidden_dims, latent_dim]),
                                     nn.BatchNorm1d(latent_dim, affine=False))
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.codebooks = nn.Parameter(torch.randn(num_levels, codebook_size, latent_dim) * 0.01)  # (L, K, d)
        # per-dim standardisation of the input, fitted on the catalog (sentence-embedding dims vary by ~0.05)
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.input_std + self.input_mean

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` -> latents ``(B, d)``."""
        return self.encoder(self.standardize(x))

    def decode_latent(self, zq: torch.Tensor) -> torch.Tensor:
        """Quantized latents ``(B, d)`` -> embeddings ``(B, D)``."""
        return self.destandardize(self.decoder(zq))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z (B, d)`` -> (sum of chosen codewords (B, d), codes (B, L), codebook+commitment terms (L,))."""
        r = z
        zq = torch.zeros_like(z)
        codes, cb_terms, commit_terms = [], [], []
        for level in range(self.codebooks.shape[0]):
            cb = self.codebooks[level]  # (K, d)
            with torch.no_grad():
                d = (r * r).sum(1, keepdim=True) - 2 * r @ cb.T + (cb * cb).sum(1)[None, :]  # (B, K)
                idx = d.argmin(1)  # (B,)
            e = cb[idx]  # (B, d)
            cb_terms.append(((r.detach() - e) ** 2).mean())
            commit_terms.append(((r - e.detach()) ** 2).mean())
            zq = zq + e
            r = r - e.detach()
            codes.append(idx)
        return zq, torch.stack(codes, 1), torch.stack([torch.stack(cb_terms), torch.stack(commit_terms)])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses are mean squared errors over dims: reconstruction in the standardised input space."""
        z = self.encode_latent(x)  # (B, d)
        zq, codes, terms = self.quantize(z)
        z_st = z + (zq - z).detach()  # straight-through
        recon = self.decoder(z_st)  # (B, D), standardised space
        return {"recon_loss": ((recon - self.standardize(x)) ** 2).mean(), "codes": codes,
                "codebook_loss": terms[0].sum(), "commit_loss": terms[1].sum()}


@torch.no_grad()
def catalog_latents(m: RQVAEModule, x: torch.Tensor) -> torch.Tensor:
    """Latents ``(N, d)`` of the whole catalog ``x (N, D)`` with the latent BatchNorm set to its exact stats.

    Runs the encoder once in training mode with cumulative averaging, so the running mean/var become
    the catalog's own statistics (used by every later eval-mode encode, e.g. ``assign``).
    """
    bn = m.encoder[-1]
    was_training, momentum = m.training, bn.momentum
    bn.reset_running_stats()
    bn.momentum = None  # cumulative average: one pass = exact statistics
    m.train()
    z = m.encode_latent(x)
    bn.momentum = momentum
    m.train(was_training)
    return z


@register_quantizer("rqvae")
class RQVAE(Quantizer):
    """TIGER's residual-quantized VAE over item embeddings."""

    def __init__(self, *, num_levels: int = 3, codebook_size: int = 256, hidden_dims: list[int] | None = None,
                 latent_dim: int = 32, beta: float = 0.25, epochs: int = 40, batch_size: int = 1024,
                 lr: float = 1e-3, weight_decay: float = 1e-4, dead_code_every: int = 2,
                 dead_code_stop_before_end: int = 5, kmeans_niter: int = 25, seed: int = 0) -> None:
        super().__init__(num_levels=num_levels, codebook_size=codebook_size,
                         hidden_dims=list(hidden_dims or [512, 256, 128]), latent_dim=latent_dim, beta=beta,
                         epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         dead_code_every=dead_code_every, dead_code_stop_before_end=dead_code_stop_before_end,
                         kmeans_niter=kmeans_niter, seed=seed)
        self.module: RQVAEModule | None = None

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> RQVAE:
        if config.codebook_size is None:
            raise ValueError("codebook_size is unresolved (null = sized to the catalog); call "
                             "sidrec.tokenizer.sizing.resolve_sizes(config, num_items) first")
        return cls(num_levels=config.num_levels, codebook_size=config.codebook_size,
                   hidden_dims=config.rqvae_hidden_dims, latent_dim=config.rqvae_latent_dim, beta=config.rqvae_beta,
                   epochs=config.rqvae_epochs, batch_size=config.rqvae_batch_size, lr=config.rqvae_lr,
                   weight_decay=config.rqvae_weight_decay, dead_code_every=config.rqvae_dead_code_every,
                   dead_code_stop_before_end=config.rqvae_dead_code_stop_before_end,
                   kmeans_niter=config.kmeans_niter, seed=config.seed)

    @property
    def level_sizes(self) -> list[int]:
        return [self.params["codebook_size"]] * self.params["num_levels"]

    def _build(self) -> RQVAEModule:
        p = self.params
        return RQVAEModule(input_dim=self.input_dim, hidden_dims=p["hidden_dims"], latent_dim=p["latent_dim"],
                           num_levels=p["num_levels"], codebook_size=p["codebook_size"])

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, emb: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        p = self.params
        k = p["codebook_size"]
        if len(emb) < k:
            raise ValueError(f"RQ-VAE needs at least as many items as codes: {len(emb)} items < codebook_size {k}; "
                             f"lower --codebook-size to at most {len(emb)}")
        torch.manual_seed(p["seed"])
        module = self._build()
        module.input_mean.copy_(torch.from_numpy(emb.mean(0)))
        std = emb.std(0)  # (D,); some MiniLM dims are constant: floor them so they standardise to ~0
        module.input_std.copy_(torch.from_numpy(np.maximum(std, 0.1 * float(std.mean()) + 1e-12)))
        rng = np.random.default_rng(p["seed"])
        # codebook init: residual k-means on the latents of the first batch (at least 4 points per code)
        n_init = min(len(emb), max(p["batch_size"], 4 * k))
        first = emb[rng.permutation(len(emb))[:n_init]]
        with torch.no_grad():
            z0 = module.encode_latent(torch.from_numpy(first)).numpy()  # (n_init, d)
        cbs = fit_residual_kmeans(z0, num_levels=p["num_levels"], k=k, niter=p["kmeans_niter"], seed=p["seed"])
        module.codebooks.data.copy_(torch.from_numpy(np.stack(cbs)))
        x_all = torch.from_numpy(emb)  # (N, D)
        resets: list[int] = []

        def on_epoch_end(m: RQVAEModule, epoch: int) -> None:
            last_reset_epoch = p["epochs"] - p["dead_code_stop_before_end"]
            due = epoch == 0 or (epoch + 1) % p["dead_code_every"] == 0  # the first epoch moves latents most
            if due and epoch + 1 <= last_reset_epoch:
                resets.append(self._reset_dead_codes(m, x_all, rng))

        beta = p["beta"]

        def loss_fn(m: nn.Module, xb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            out = m(xb)
            recon = out["recon_loss"]
            loss = recon + out["codebook_loss"] + beta * out["commit_loss"]
            return loss, {"loss": loss.item(), "recon": recon.item(), "commit": out["commit_loss"].item()}

        info = train_autoencoder(module, emb, loss_fn=loss_fn, epochs=p["epochs"], batch_size=p["batch_size"],
                                 lr=p["lr"], weight_decay=p["weight_decay"], seed=p["seed"],
                                 accelerator=accelerator, on_epoch_end=on_epoch_end, desc="rq-vae")
        module = module.cpu()
        catalog_latents(module, x_all)  # exact BatchNorm statistics for inference
        self.module = module.eval()
        info["dead_codes_reset"] = resets
        return info

    @staticmethod
    @torch.no_grad()
    def _reset_dead_codes(m: RQVAEModule, x_all: torch.Tensor, rng: np.random.Generator) -> int:
        """Re-seed unused codes of every level from residuals of items in crowded codes; returns the count."""
        device = m.codebooks.device
        r = catalog_latents(m, x_all.to(device)).cpu().numpy()  # (N, d)
        total = 0
        for level in range(m.codebooks.shape[0]):
            cb = m.codebooks.data[level].cpu().numpy()  # (K, d)
            idx = assign(r, cb)  # (N,), in chunks of rows
            counts = np.bincount(idx, minlength=len(cb))
            dead = np.flatnonzero(counts == 0)
            if len(dead):
                weights = counts[idx].astype(np.float64)  # items in crowded codes are picked more often
                pick = rng.choice(len(r), size=len(dead), replace=len(dead) > len(r), p=weights / weights.sum())
                cb[dead] = r[pick]
                m.codebooks.data[level] = torch.from_numpy(cb).to(device)
                idx = assign(r, cb)
                total += len(dead)
            r = r - cb[idx]
        return total

    # -- inference ------------------------------------------------------------------------------
    def _latents(self, emb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module.encode_latent(torch.from_numpy(emb)).numpy()  # (N, d)

    def _codebooks(self) -> list[np.ndarray]:
        return list(self.module.codebooks.detach().cpu().numpy())

    def _encode(self, emb: np.ndarray) -> np.ndarray:
        return residual_encode(self._latents(emb), self._codebooks())

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        cb = self.module.codebooks.detach()  # (L, K, d)
        t = torch.from_numpy(codes)
        zq = sum(cb[level][t[:, level]] for level in range(cb.shape[0]))  # (N, d)
        with torch.no_grad():
            return self.module.decode_latent(zq).numpy()

    def _last_level_candidates(self, emb: np.ndarray, k: int) -> np.ndarray:
        return ranked_last_level(self._latents(emb), self._codebooks(), k)

    def _encode_with_candidates(self, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return residual_encode_ranked(self._latents(emb), self._codebooks(), k)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        module = self._build()
        module.load_state_dict(tensors, strict=True)
        self.module = module.eval()
