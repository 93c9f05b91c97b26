"""Shared pieces of the neural quantizers (RQ-VAE, FSQ): MLP stacks and one accelerate training loop.

The loop follows the project's accelerate skeleton: seeded, ``accelerator.prepare`` on the model,
optimizer and data loader, a progress bar on the main process only. Library code never creates a
process group itself: pass the entry point's ``Accelerator``; without one a plain local one is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def mlp(dims: list[int]) -> nn.Sequential:
    """``Linear`` layers through ``dims`` with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def get_accelerator(accelerator: Any = None) -> Any:
    """The given accelerator, or a local single-process one."""
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    return Accelerator()


def train_autoencoder(
    model: nn.Module,
    emb: np.ndarray,
    *,
    loss_fn: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    accelerator: Any = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``model`` on ``emb (N, D)`` with AdamW; returns the last epoch's mean losses.

    ``loss_fn(model, batch (B, D)) -> (loss, logs)``; ``on_epoch_end(unwrapped_model, epoch)`` may edit
    parameters in place (dead-code resets); it must be deterministic so that every process agrees.
    """
    accelerator = get_accelerator(accelerator)
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))  # (N, D)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x), batch_size=min(batch_size, len(x)), shuffle=True, generator=gen,
                        drop_last=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)), eta_min=lr * 0.05)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    last: dict[str, float] = {}
    bar = tqdm(range(epochs), desc=desc, disable=not accelerator.is_local_main_process, leave=False)
    for epoch in bar:
        model.train()
        sums: dict[str, float] = {}
        nb = 0
        for (xb,) in loader:  # xb: (B, D)
            loss, logs = loss_fn(model, xb)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            sched.step()
            nb += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        last = {k: v / max(nb, 1) for k, v in sums.items()}
        bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
        if on_epoch_end is not None:
            on_epoch_end(accelerator.unwrap_model(model), epoch)
    logger.info("%s: %d epochs, final %s", desc, epochs, {k: round(v, 5) for k, v in last.items()})
    return {"epochs": epochs, "final_losses": last}
