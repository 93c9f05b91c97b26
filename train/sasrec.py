"""Train the SASRec baseline: ``python -m sidrec.train.sasrec --run RUN [--config baselines/sasrec]``.

Also runs under ``accelerate launch -m sidrec.train.sasrec ...``. Reads ``RUN/dataset`` (from
``sidrec prepare``), trains on each user's ``seq[:-2]`` (the last ``max_len + 1`` items, inputs
and next-item labels at every position, full-softmax cross-entropy), evaluates NDCG@10 on the
VALID split after every epoch, keeps the best epoch, stops after ``patience`` epochs without
improvement, and writes ``RUN/baselines/sasrec/`` (``config.json``, ``model.safetensors``,
``train_log.json``). The test split is never touched here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader

from sidrec.data import PreparedDataset
from sidrec.decoding.topk import batched_topk
from sidrec.seqmodel.sasrec import PAD, SASRec, SasrecModelConfig, SasrecShape
from sidrec.train.common import (
    LengthGroupedBatchSampler,
    budget_progress,
    finish,
    main_process_values,
    make_accelerator,
)
from sidrec.utils import atomic_write_json, config_from_args, config_to_dict, configure_logging
from sidrec.utils.config import Choice, Range, Rule, validate_config
from sidrec.utils.locks import stage_lock
from sidrec.utils.metrics import ranking_metrics
from sidrec.utils.provenance import stage_record
from sidrec.utils.run_folder import RunFolder, refuse_existing
from sidrec.utils.threads import torch_threads

logger = logging.getLogger(__name__)


@dataclass
class SasrecTrainConfig(SasrecShape):
    """SASRec baseline training settings (preset: ``configs/baselines/sasrec.yaml``).

    Model: hidden_size, num_blocks, num_heads, max_len, dropout, attn_dropout, positions, inherited from
    ``SasrecShape`` (sidrec.seqmodel.sasrec), which declares them once with their defaults and rules
    (positions "from_end": 0 = the most recent item; "from_start": 0 = the oldest, as before).
    Optimisation: Adam(lr, betas=(0.9, adam_beta2), weight_decay), batch_size sequences per step.
    length_chunks: encode each batch in this many groups of rows of similar length (same loss; padding
    mostly skipped: on Beauty, batch 128, one CPU thread, 8 chunks took 175 ms/step vs 238 unchunked at
    hidden 64 and 184 vs 338 at hidden 128). Use 1 on a GPU, where padding is cheap.
    length_group: 1 = plain shuffled batches; G > 1 sorts each run of batch_size * G shuffled windows
    by length before cutting batches (less padding, so faster epochs, but batches of alike users:
    on Beauty valid NDCG@10 at epoch 16 fell from 0.0432 to 0.0380 with G = 50).
    epochs: upper bound; patience: epochs without a valid NDCG@10 gain before stopping.
    max_steps: stop after this many optimiser steps (0 = no limit; for smoke tests).
    valid_max_users: evaluate on a fixed random N valid users (0 = all).
    torch_threads: intra-op CPU threads (0 = torch's default; 1 is much faster on a busy shared CPU),
    named as in the generator and tokenizer configs.
    max_minutes: stop after the first epoch whose training time (validation excluded, as in the
    generator's budget) passes this budget (0 = no limit). The log's ``train_seconds`` counts the same
    time; ``elapsed_seconds`` is the wall clock.
    lr_schedule: "constant" keeps ``lr``; "linear" lowers it linearly to 0 at the end of the training
    budget, whichever of epochs, max_steps and max_minutes ends first (a budget-aware decay: the
    run's last epochs anneal instead of stopping at an arbitrary point of a constant-lr run).
    The best epoch so far is saved whenever valid NDCG@10 improves, so an interrupted run keeps it.
    """

    lr: float = 1e-3
    lr_schedule: str = "constant"
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    batch_size: int = 128
    length_group: int = 1
    length_chunks: int = 8
    epochs: int = 200
    patience: int = 10
    max_steps: int = 0
    valid_max_users: int = 0
    max_minutes: float = 0.0
    eval_batch_size: int = 1024
    torch_threads: int = 0
    seed: int = 0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {  # the model fields' rules are SasrecShape's
        "lr": Range(0, lo_open=True),
        "weight_decay": Range(0), "batch_size": Range(1), "epochs": Range(1), "patience": Range(1),
        "max_steps": Range(0), "valid_max_users": Range(0), "max_minutes": Range(0), "eval_batch_size": Range(1),
        "torch_threads": Range(0), "seed": Range(0),
        "lr_schedule": Choice(values=("constant", "linear")),
        "adam_beta2": Range(0, 1, hi_open=True), "length_group": Range(1), "length_chunks": Range(1),
    }

    def validate(self) -> None:
        """Rules across fields (each field's own range is in FIELD_RULES)."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")

    def model_config(self, num_items: int, *, known_items: int = 0) -> SasrecModelConfig:
        """The model config: this config's ``SasrecShape`` fields plus the catalog size."""
        shape = {f.name: getattr(self, f.name) for f in dataclasses.fields(SasrecShape)}
        return SasrecModelConfig(num_items=num_items, known_items=known_items, **shape)


RENAMED = {"num_threads": "torch_threads"}  # old field -> new field


def config_from_cli(config: str, overrides: list[str]) -> SasrecTrainConfig:
    """The preset ``config`` with ``--field value`` overrides; a renamed field's old name is an error naming the new one."""
    for arg in overrides:
        name = arg.lstrip("-").split("=", 1)[0].replace("-", "_")
        if arg.startswith("--") and name in RENAMED:
            raise ValueError(f"--{name.replace('_', '-')} ({name}) was renamed; use --{RENAMED[name].replace('_', '-')} "
                             f"({RENAMED[name]}), as in the generator and tokenizer configs")
    return config_from_args(SasrecTrainConfig, config, overrides)


def training_windows(sequences: list[list[int]], max_len: int) -> list[list[int]]:
    """The last ``max_len + 1`` items of each training sequence with at least 2 items."""
    windows = [s[-(max_len + 1) :] for s in sequences if len(s) >= 2]
    dropped = len(sequences) - len(windows)
    if dropped:
        logger.info("dropped %d training sequences with fewer than 2 items", dropped)
    return windows


def collate_windows(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs ``(B, L)`` (tokens = index + 1) and labels ``(B, L)`` (-100 = none)."""
    width = max(len(w) for w in batch) - 1
    inputs = torch.full((len(batch), width), PAD, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, w in enumerate(batch):
        seq = torch.as_tensor(w, dtype=torch.long)
        inputs[i, : len(w) - 1] = seq[:-1] + 1
        labels[i, : len(w) - 1] = seq[1:]
    return inputs, labels


def scheduled_lr(cfg: SasrecTrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 = start, 1 = budget spent) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "linear":
        return cfg.lr * (1.0 - progress)
    return cfg.lr


def evaluate_valid(model: SASRec, dataset: PreparedDataset, cfg: SasrecTrainConfig) -> dict[str, float]:
    """Valid-split ranking metrics (full catalog, history not excluded)."""
    split = dataset.eval_split("valid").sample(cfg.valid_max_users or None, seed=0)
    topk = batched_topk(model.score_histories, split.histories, 20, batch_size=cfg.eval_batch_size)
    return ranking_metrics(topk, split.targets, ks=(1, 5, 10, 20))


def train_sasrec(dataset: PreparedDataset, cfg: SasrecTrainConfig, out_dir: str | Path) -> dict:
    """Train, early-stop on valid NDCG@10, save the best model to ``out_dir``; returns the log.

    Runs with ``cfg.torch_threads`` intra-op threads and restores the previous count afterwards.
    """
    validate_config(cfg)
    with torch_threads(cfg.torch_threads):
        return _train(dataset, cfg, out_dir)


def _train(dataset: PreparedDataset, cfg: SasrecTrainConfig, out_dir: str | Path) -> dict:
    """``train_sasrec``'s epoch loop: train, validate, save the best epoch, log, stop early."""
    provenance = stage_record(dataset_fingerprint=dataset.fingerprint())
    accelerator = make_accelerator(seed=cfg.seed)
    model, raw_model, optim, loader, sampler = _build(dataset, cfg, accelerator)
    history: list[dict] = []
    best, best_epoch, step = -1.0, -1, 0
    t0, train_s = time.time(), 0.0  # wall clock; training time without validation
    total_steps = min(cfg.epochs * len(loader), cfg.max_steps or cfg.epochs * len(loader))
    for epoch in range(cfg.epochs):
        t_epoch = time.time()
        sampler.set_epoch(epoch)
        loss, step = _train_epoch(model, optim, loader, accelerator, cfg, step=step, total_steps=total_steps,
                                  train_s=train_s, t_epoch=t_epoch)
        train_s += time.time() - t_epoch
        metrics = evaluate_valid(raw_model, dataset, cfg) if accelerator.is_main_process else {}
        entry = {"epoch": epoch + 1, "step": step, "loss": loss, "valid": metrics,
                 "lr": optim.param_groups[0]["lr"],
                 "train_seconds": round(train_s, 1), "elapsed_s": round(time.time() - t0, 1)}
        history.append(entry)
        if accelerator.is_main_process:
            logger.info("epoch %d loss %.4f valid ndcg@10 %.4f recall@10 %.4f (%.0fs)", epoch + 1,
                        entry["loss"], metrics["ndcg@10"], metrics["recall@10"], entry["elapsed_s"])
            if metrics["ndcg@10"] > best:
                best, best_epoch = metrics["ndcg@10"], epoch + 1
                raw_model.save_pretrained(out_dir, provenance=provenance)  # atomic: an interrupted run keeps it
        log = {"config": config_to_dict(cfg), "best_epoch": best_epoch, "best_valid_ndcg@10": best,
               "epochs_run": len(history), "train_seconds": round(train_s, 1),
               "elapsed_seconds": round(time.time() - t0, 1), "history": history}
        if accelerator.is_main_process:
            atomic_write_json(Path(out_dir) / "train_log.json", log)
        if _stop_after_epoch(cfg, accelerator, step=step, epoch=epoch, best_epoch=best_epoch, train_s=train_s):
            break
    if accelerator.is_main_process:
        logger.info("best epoch %d (valid ndcg@10 %.4f) saved in %s", best_epoch, best, out_dir)
    finish(accelerator)
    return log


def _build(
    dataset: PreparedDataset, cfg: SasrecTrainConfig, accelerator: Any
) -> tuple[Any, SASRec, Any, Any, LengthGroupedBatchSampler]:
    """Training windows, batches, model and Adam, prepared by ``accelerator`` (sizes logged).

    Returns the prepared model, the unwrapped model, the optimiser, the loader and its batch sampler.
    """
    windows = training_windows(dataset.train_sequences(), cfg.max_len)
    if not windows:
        raise ValueError("no training sequence has 2+ items; prepare the dataset with longer sequences")
    sampler = LengthGroupedBatchSampler(lengths=[len(w) for w in windows], batch_size=cfg.batch_size, seed=cfg.seed,
                                        group=cfg.length_group)  # group 1 = plain shuffled batches
    loader = DataLoader(windows, batch_sampler=sampler, collate_fn=collate_windows)
    known = dataset.num_items - dataset.num_cold_items if dataset.num_cold_items else 0
    model = SASRec(config=cfg.model_config(dataset.num_items, known_items=known))
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.adam_beta2),
                             weight_decay=cfg.weight_decay)
    model, optim, loader = accelerator.prepare(model, optim, loader)
    raw_model: SASRec = accelerator.unwrap_model(model)
    logger.info(
        "SASRec: %d items, %d training windows, %d params", dataset.num_items, len(windows),
        sum(p.numel() for p in raw_model.parameters()),
    )
    return model, raw_model, optim, loader, sampler


def _train_epoch(
    model: Any, optim: Any, loader: Any, accelerator: Any, cfg: SasrecTrainConfig, *, step: int, total_steps: int,
    train_s: float, t_epoch: float,
) -> tuple[float, int]:
    """One pass over ``loader``, cut short at ``max_steps`` or when the lr schedule's budget is spent.

    ``step``: optimiser steps before this epoch; ``train_s``: training seconds before it, which began at
    ``t_epoch``. Returns the epoch's mean loss and the step count after it.
    """
    model.train()
    total, n = 0.0, 0
    for inputs, labels in loader:
        if cfg.lr_schedule != "constant":
            progress = budget_progress(step=step, total_steps=total_steps, max_seconds=60 * cfg.max_minutes,
                                       train_seconds=train_s + time.time() - t_epoch)
            progress, = main_process_values(accelerator, progress)  # ranks' clocks differ a little
            if progress >= 1.0:  # the learning rate has reached 0: the budget is spent mid-epoch
                break
            for group in optim.param_groups:
                group["lr"] = scheduled_lr(cfg, progress)
        loss = model(inputs, labels, length_chunks=cfg.length_chunks)  # forward = loss (DDP syncs gradients)
        optim.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optim.step()
        total, n, step = total + loss.item(), n + 1, step + 1
        if cfg.max_steps and step >= cfg.max_steps:
            break
    return total / max(n, 1), step


def _stop_after_epoch(
    cfg: SasrecTrainConfig, accelerator: Any, *, step: int, epoch: int, best_epoch: int, train_s: float
) -> bool:
    """Whether training ends after ``epoch`` (0-based): step limit, patience or time budget reached.

    Only the main process validates, so it decides and every rank follows its decision.
    """
    out_of_time = bool(cfg.max_minutes and train_s >= 60 * cfg.max_minutes)
    budget_done = bool(cfg.max_steps and step >= cfg.max_steps or epoch + 1 - best_epoch >= cfg.patience
                       or epoch + 1 >= cfg.epochs)
    if out_of_time and not budget_done:
        logger.warning("stopped by the time cap (max_minutes %g) after epoch %d of %d: the machine is busier than "
                       "the budget assumed (or the cap is the budget); the same command on an idle machine trains "
                       "further", cfg.max_minutes, epoch + 1, cfg.epochs)
    stop = budget_done or out_of_time
    if stop and accelerator.is_main_process:  # only the main process validates ...
        accelerator.set_trigger()
    return accelerator.check_trigger()  # ... and every rank follows its decision


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m sidrec.train.sasrec", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder holding dataset/ (from `sidrec prepare`)")
    parser.add_argument("--config", default="baselines/sasrec", help="preset name or YAML path")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing RUN/baselines/sasrec")
    args, rest = parser.parse_known_args(argv)
    configure_logging()
    cfg = config_from_cli(args.config, rest)
    with stage_lock(args.run, "sasrec"):  # one writer per stage: a second `sidrec sasrec` of this run refuses
        refuse_existing(args.run, "sasrec", overwrite=args.overwrite)
        dataset = PreparedDataset.load(args.run)
        out = RunFolder(args.run).sasrec_dir
        log = train_sasrec(dataset, cfg, out)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    print(f"best_epoch={log['best_epoch']} valid_ndcg@10={log['best_valid_ndcg@10']:.4f} "
          f"train_seconds={log['train_seconds']} out={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SasrecTrainConfig", "collate_windows", "config_from_cli", "main", "scheduled_lr", "train_sasrec", "training_windows"]
