"""FSQ (finite scalar quantization, Mentzer et al. 2023) grouped into tokens, as used by RecGPT.

An MLP projects the embedding to ``num_levels * dims_per_token`` scalars, standardised over the batch
(BatchNorm without affine, so every rounding bin gets used); each is squashed to
``[0, q-1]`` (sigmoid) and rounded to one of ``q`` values (straight-through gradient). A token is
``dims_per_token`` consecutive digits read in base ``q``, so each level has ``q ** dims_per_token``
codes. No codebook to learn or collapse; the only loss is reconstruction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sidrec.tokenizer.base import Quantizer, register_quantizer
from sidrec.tokenizer.training import mlp, train_autoencoder

if TYPE_CHECKING:
    from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)


# sigmoid(s * z) of a standardised z is close to uniform on (0, 1) for s ~ pi / sqrt(3) (the logistic
# distribution's std), so the q rounding bins are visited about equally often
_SPREAD = 1.8


class FSQModule(nn.Module):
    """Encoder to ``L * g`` bounded scalars, rounding, decoder."""

    def __init__(self, *, input_dim: int, hidden_dims: list[int], num_levels: int, dims_per_token: int,
                 q: int) -> None:
        super().__init__()
        self.num_levels, self.g, self.q = num_levels, dims_per_token, q
        latent = num_levels * dims_per_token
        self.encoder = mlp([input_dim, *hidden_dims, latent])
        # standardise each latent scalar over the batch (running stats at inference) so the rounding
        # bins are all visited; without it the projection drifts into a few bins and codes go unused
        self.norm = nn.BatchNorm1d(latent, affine=False)
        self.decoder = mlp([latent, *reversed(hidden_dims), input_dim])
        self.register_buffer("place", q ** torch.arange(dims_per_token), persistent=False)  # (g,)

    def bounded(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, D)`` -> continuous digits in ``[0, q-1]`` of shape ``(B, L*g)``."""
        return torch.sigmoid(self.norm(self.encoder(x)) * _SPREAD) * (self.q - 1)

    def digits_to_latent(self, digits: torch.Tensor) -> torch.Tensor:
        """Digits ``(B, L*g)`` (float) -> decoder input in ``[-1, 1]``."""
        return digits / (self.q - 1) * 2 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.bounded(x)  # (B, L*g)
        u_q = u + (torch.round(u) - u).detach()  # straight-through rounding
        return self.decoder(self.digits_to_latent(u_q))  # (B, D)

    def tokens(self, digits: torch.Tensor) -> torch.Tensor:
        """Integer digits ``(B, L*g)`` -> tokens ``(B, L)``."""
        return (digits.view(-1, self.num_levels, self.g) * self.place).sum(-1)

    def digits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, L)`` -> integer digits ``(B, L*g)``."""
        d = (tokens.unsqueeze(-1) // self.place) % self.q  # (B, L, g)
        return d.reshape(len(tokens), -1)


@register_quantizer("fsq")
class FSQ(Quantizer):
    """Finite scalar quantization of a learned projection, ``dims_per_token`` digits per token."""

    def __init__(self, *, num_levels: int = 3, q: int = 4, dims_per_token: int = 4,
                 hidden_dims: list[int] | None = None, epochs: int = 40, batch_size: int = 1024,
                 lr: float = 3e-3, seed: int = 0) -> None:
        super().__init__(num_levels=num_levels, q=q, dims_per_token=dims_per_token,
                         hidden_dims=list(hidden_dims or [512, 256]), epochs=epochs, batch_size=batch_size,
                         lr=lr, seed=seed)
        self.module: FSQModule | None = None

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> FSQ:
        if config.codebook_size not in (None, config.fsq_levels ** config.fsq_dims_per_token):
            logger.info("fsq: codebook_size %d is ignored; each level has fsq_levels ** fsq_dims_per_token = %d codes",
                        config.codebook_size, config.fsq_levels ** config.fsq_dims_per_token)
        return cls(num_levels=config.num_levels, q=config.fsq_levels, dims_per_token=config.fsq_dims_per_token,
                   hidden_dims=config.fsq_hidden_dims, epochs=config.fsq_epochs, batch_size=config.fsq_batch_size,
                   lr=config.fsq_lr, seed=config.seed)

    @property
    def level_sizes(self) -> list[int]:
        return [self.params["q"] ** self.params["dims_per_token"]] * self.params["num_levels"]

    def _build(self) -> FSQModule:
        p = self.params
        return FSQModule(input_dim=self.input_dim, hidden_dims=p["hidden_dims"], num_levels=p["num_levels"],
                         dims_per_token=p["dims_per_token"], q=p["q"])

    def _fit(self, emb: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        p = self.params
        torch.manual_seed(p["seed"])
        module = self._build()

        def loss_fn(m: nn.Module, xb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            recon = ((m(xb) - xb) ** 2).sum(1).mean()
            return recon, {"recon": recon.item()}

        info = train_autoencoder(module, emb, loss_fn=loss_fn, epochs=p["epochs"], batch_size=p["batch_size"],
                                 lr=p["lr"], weight_decay=0.0, seed=p["seed"], accelerator=accelerator, desc="fsq")
        self.module = module.cpu().eval()
        return info

    def _bounded(self, emb: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.module.bounded(torch.from_numpy(emb))  # (N, L*g)

    def _encode(self, emb: np.ndarray) -> np.ndarray:
        digits = torch.round(self._bounded(emb)).long().clamp_(0, self.params["q"] - 1)
        return self.module.tokens(digits).numpy().astype(np.int64)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        digits = self.module.digits(torch.from_numpy(codes)).float()
        with torch.no_grad():
            return self.module.decoder(self.module.digits_to_latent(digits)).numpy()

    def _last_level_candidates(self, emb: np.ndarray, k: int) -> np.ndarray:
        g = self.params["dims_per_token"]
        u_last = self._bounded(emb)[:, -g:]  # (N, g)
        grid = self.module.digits(torch.arange(self.level_sizes[-1])[:, None])[:, :g].float()  # (K, g)
        dist = torch.cdist(u_last, grid)  # (N, K)
        return np.argsort(dist.numpy(), axis=1, kind="stable")[:, :k].astype(np.int64)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        module = self._build()
        module.load_state_dict(tensors, strict=True)
        self.module = module.eval()
