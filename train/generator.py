"""Train the T5 generator: ``accelerate launch -m sidrec.train.generator --run RUN [--config generator/cpu-small]``.

Also runs as ``python -m sidrec.train.generator ...``. Reads ``RUN/dataset`` (``sidrec prepare``) and
``RUN/tokenizer`` (``python -m sidrec.train.tokenizer``), trains on every prefix of every user's
``seq[:-2]`` (next-item semantic ID, per-level cross-entropy), validates Recall/NDCG on the VALID split
with trie-constrained beam search every ``eval_every`` steps (metrics gathered over processes), keeps the
best model in ``RUN/generator/``, stops after ``patience`` validations without improvement, and saves
the full training state to ``RUN/generator_state/step-N/`` every ``save_every`` steps (``--resume``
continues from the newest one, mid-epoch). The test split is never touched here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from sidrec.train.common import (
    LengthGroupedBatchSampler,
    finish,
    latest_state,
    make_accelerator,
    parse_run_args,
    prune_states,
    setup_logging,
    state_dir_name,
)
from sidrec.utils import atomic_write_json, config_to_dict

logger = logging.getLogger(__name__)

__all__ = ["GeneratorTrainConfig", "evaluate_generator", "load_item_codes", "main", "train_generator"]

STATE_DIR = "generator_state"
MODEL_DIR = "generator"
LOG_FILE = "training.json"


@dataclass
class GeneratorTrainConfig:
    """Generator training settings (presets: ``configs/generator/tiger.yaml``, ``cpu-small.yaml``).

    Model (T5): d_model, num_layers (encoder), num_decoder_layers, num_heads x d_kv, d_ff, dropout,
    feed_forward_proj. Inputs: max_items history items, user_buckets user-hash tokens (0 = none).
    Optimisation: AdamW(lr, weight_decay), LR warm-up for warmup_steps then inverse square root
    (lr * min(s / w, sqrt(w / s))), batch_size examples per optimiser step (global, split over
    processes) x grad_accum, max_grad_norm clipping (0 = off), mixed_precision no|bf16|fp16.
    Length: max_steps optimiser steps (0 = no limit) and/or epochs (0 = no limit); one must be set;
    max_minutes also stops after that much training time (validation excluded; 0 = no limit).
    Validation: every eval_every steps (0 = only at the end) on a fixed random valid_max_users users (0 = all),
    beam search with beam_size, early stop after patience validations without an NDCG@10 gain (0 = never).
    State: save_every steps (0 = off) into RUN/generator_state/, keep_states newest kept.
    group_by_length: batch examples of similar history length (less padding: several times faster on
    Beauty, where most histories are short; the model math is unchanged). torch_threads: intra-op threads
    per process (0 = torch default; 1 is much faster on a busy shared CPU).
    """

    d_model: int = 128
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    feed_forward_proj: str = "relu"
    max_items: int = 20
    user_buckets: int = 2000
    lr: float = 0.01
    weight_decay: float = 0.0
    warmup_steps: int = 10000
    batch_size: int = 256
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    max_steps: int = 200000
    epochs: int = 0
    max_minutes: float = 0.0
    eval_every: int = 5000
    valid_max_users: int = 0
    eval_batch_size: int = 256
    beam_size: int = 20
    patience: int = 10
    save_every: int = 5000
    keep_states: int = 2
    log_every: int = 100
    tensorboard: bool = False
    group_by_length: bool = True
    torch_threads: int = 0
    seed: int = 0

    def validate(self) -> None:
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set max_steps or epochs (> 0); both 0 would train forever")
        if self.beam_size < 10:
            raise ValueError(f"beam_size must be >= 10 (validation reports Recall@10), got {self.beam_size}")
        for name in ("batch_size", "grad_accum", "max_items", "eval_batch_size", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------- inputs
def load_item_codes(run: Path, item_ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """``codes (N, L)`` and ``level_sizes`` of ``RUN/tokenizer``, checked against the dataset's items."""
    from sidrec.tokenizer.semantic_ids import SemanticIdTokenizer

    folder = run / "tokenizer"
    if not folder.is_dir():
        raise ValueError(f"{folder} not found; train the tokenizer first: python -m sidrec.train.tokenizer --run {run}")
    tokenizer = SemanticIdTokenizer.from_pretrained(folder)
    if list(tokenizer.item_ids) != list(item_ids):
        raise ValueError(
            f"{folder} was trained on another catalog than {run}/dataset ({len(tokenizer.item_ids)} vs "
            f"{len(item_ids)} items, or another order); retrain the tokenizer on this run"
        )
    return np.asarray(tokenizer.codes, dtype=np.int64), [int(s) for s in tokenizer.level_sizes]


class ExampleCollator:
    """Examples (``user``, ``history``, ``target``) -> ``input_ids``, ``attention_mask``, ``labels (B, L)``."""

    def __init__(self, *, vocab, item_codes: np.ndarray, user_ids: Sequence[str] | None, max_items: int) -> None:
        self.vocab = vocab
        self.item_codes = item_codes
        self.item_tokens = torch.from_numpy(vocab.codes_to_tokens(item_codes))  # (N, L)
        self.user_ids = user_ids
        self.max_items = max_items

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from sidrec.seqmodel.inputs import encode_histories

        users = None if self.user_ids is None else [self.user_ids[r["user"]] for r in rows]
        input_ids, attention_mask = encode_histories(
            self.vocab, self.item_codes, [r["history"] for r in rows], user_ids=users, max_items=self.max_items
        )
        labels = self.item_tokens[torch.tensor([r["target"] for r in rows])]  # (B, L)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def inverse_sqrt_lambda(warmup_steps: int):
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then ``sqrt(warmup / step)`` (TIGER)."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        s = step + 1
        return s / warmup if s < warmup else math.sqrt(warmup / s)

    return factor


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_generator(
    model,
    *,
    trie,
    item_codes: np.ndarray,
    histories: Sequence[Sequence[int]],
    user_ids: Sequence[str] | None,
    beam_size: int,
    k: int = 10,
    batch_size: int = 256,
) -> np.ndarray:
    """Top-k item indices ``(U, k)`` by trie-constrained beam search (-1 = fewer than k items).

    ``user_ids`` are used iff the model's vocab has user buckets. Never samples.
    """
    from sidrec.decoding import constrained_beam_search
    from sidrec.seqmodel.inputs import encode_histories

    device = next(model.parameters()).device
    use_users = model.vocab.num_user_buckets > 0
    out = []
    for start in range(0, len(histories), batch_size):
        users = list(user_ids[start : start + batch_size]) if use_users else None
        input_ids, attention_mask = encode_histories(
            model.vocab, item_codes, histories[start : start + batch_size], user_ids=users, max_items=model.max_items
        )
        result = constrained_beam_search(
            model, trie, input_ids.to(device), attention_mask.to(device), beam_size=beam_size, k=k
        )
        out.append(result.items.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def _validate(accelerator, model, *, trie, item_codes, split, user_ids, cfg) -> dict[str, float]:
    """Valid metrics over all processes: users sharded by an unshuffled prepared loader, gathered back."""
    from sidrec.eval.metrics import ranking_metrics

    users = np.arange(len(split))
    loader = accelerator.prepare_data_loader(
        DataLoader(users, batch_size=cfg.eval_batch_size, shuffle=False), device_placement=False
    )
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    topks, targets = [], []
    for batch in loader:
        idx = batch.cpu().numpy()
        topk = evaluate_generator(
            unwrapped, trie=trie, item_codes=item_codes, histories=[split.histories[i] for i in idx],
            user_ids=[user_ids[split.user_index[i]] for i in idx], beam_size=cfg.beam_size, k=10,
            batch_size=cfg.eval_batch_size,
        )
        # gathered per batch, while the loader is active, so gather_for_metrics drops the padding users
        pair = accelerator.gather_for_metrics(
            (torch.from_numpy(topk).to(accelerator.device), torch.from_numpy(split.targets[idx]).to(accelerator.device))
        )
        topks.append(pair[0].cpu().numpy())
        targets.append(pair[1].cpu().numpy())
    unwrapped.train(was_training)
    topk_all, target_all = np.concatenate(topks), np.concatenate(targets)
    metrics = ranking_metrics(topk_all, target_all, ks=(1, 5, 10))
    metrics["users"] = int(len(target_all))
    return metrics


# ---------------------------------------------------------------------------------------- training
@dataclass
class Progress:
    """Loop position and early-stopping state, saved as JSON next to the accelerate state."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_ndcg: float = -1.0
    best_step: int = -1
    bad_evals: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] | None = None
    loss_curve: list[list[float]] | None = None  # [step, mean loss since the previous entry]


def _rank_weight_digests(accelerator, model) -> list[int]:
    """A 63-bit hash of each process's final weights (bytes), gathered: all equal iff the ranks agree."""
    h = hashlib.sha256()
    for name, param in sorted(accelerator.unwrap_model(model).state_dict().items()):
        h.update(name.encode())
        h.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest = torch.tensor([int.from_bytes(h.digest()[:8], "little") >> 1], device=accelerator.device)
    return [int(d) for d in accelerator.gather(digest).cpu().tolist()]


def _save_state(accelerator, root: Path, progress: Progress, keep: int) -> None:
    folder = root / state_dir_name(progress.step)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        atomic_write_json(folder / "progress.json", progress.__dict__)  # written last: marks the state complete
        prune_states(root, keep)
    accelerator.wait_for_everyone()


def train_generator(cfg: GeneratorTrainConfig, run: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train per ``cfg`` on ``run``; returns the training log (also written to ``RUN/generator/training.json``)."""
    from accelerate import skip_first_batches
    from tqdm.auto import tqdm

    from sidrec.data import PreparedDataset
    from sidrec.decoding import CatalogTrie
    from sidrec.seqmodel import SemanticIdGenerator, SemanticIdVocab, build_t5_config, load_or_build_examples

    run = Path(run)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    accelerator = make_accelerator(
        seed=cfg.seed, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
        tensorboard_dir=run / "tensorboard" if cfg.tensorboard else None,
    )
    setup_logging(accelerator)
    if cfg.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {accelerator.num_processes} processes")
    dataset = PreparedDataset.load(run)
    item_codes, level_sizes = load_item_codes(run, dataset.item_ids)
    vocab = SemanticIdVocab(level_sizes=level_sizes, num_user_buckets=cfg.user_buckets)
    user_ids = dataset.user_ids if cfg.user_buckets > 0 else None
    with accelerator.main_process_first():
        examples = load_or_build_examples(
            run, dataset.train_sequences(), fingerprint=dataset.fingerprint(), max_items=cfg.max_items
        )
    split = dataset.eval_split("valid").sample(cfg.valid_max_users or None, seed=0)
    trie = CatalogTrie(codes=item_codes, level_sizes=level_sizes)

    model = SemanticIdGenerator(build_t5_config(
        vocab=vocab, d_model=cfg.d_model, num_layers=cfg.num_layers, num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads, d_kv=cfg.d_kv, d_ff=cfg.d_ff, dropout_rate=cfg.dropout,
        feed_forward_proj=cfg.feed_forward_proj, max_items=cfg.max_items,
    ))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt_lambda(cfg.warmup_steps))
    collator = ExampleCollator(vocab=vocab, item_codes=item_codes, user_ids=user_ids, max_items=cfg.max_items)
    # Own generator: DataLoader iterators draw a base seed from it, not from the global RNG that drives
    # dropout, so a resumed run (new iterator mid-epoch) replays the same dropout masks.
    loader_rng = torch.Generator().manual_seed(cfg.seed)
    grouped = None
    if cfg.group_by_length:
        lengths = [min(len(h), cfg.max_items) for h in examples["history"]]
        grouped = LengthGroupedBatchSampler(lengths=lengths, batch_size=cfg.batch_size, seed=cfg.seed)
        loader = DataLoader(examples, batch_sampler=grouped, collate_fn=collator, generator=loader_rng)
    else:
        loader = DataLoader(examples, batch_size=cfg.batch_size, shuffle=True, collate_fn=collator,
                            drop_last=False, generator=loader_rng)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us once per optimiser step
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    logger.info("%d training examples, %d valid users, %d items, vocab %d, %.2fM parameters, %d process(es)",
                len(examples), len(split), dataset.num_items, vocab.vocab_size, n_params / 1e6,
                accelerator.num_processes)

    state_root = run / STATE_DIR
    progress = Progress(history=[], loss_curve=[])
    if resume:
        latest = latest_state(state_root)
        if latest is None:
            raise ValueError(f"--resume: no saved state under {state_root}; start without --resume")
        accelerator.load_state(str(latest))
        progress = Progress(**json.loads((latest / "progress.json").read_text()))
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", latest, progress.step, progress.epoch,
                    progress.batch_in_epoch)
    if cfg.tensorboard:
        accelerator.init_trackers("generator", config=config_to_dict(cfg))

    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    bar = tqdm(total=total, initial=progress.step, disable=not accelerator.is_local_main_process, desc="generator")
    stop = progress.step >= total
    loss_sum, loss_n = 0.0, 0
    tick = time.perf_counter()

    def validate_and_keep() -> None:
        nonlocal tick
        progress.train_seconds += time.perf_counter() - tick
        metrics = _validate(accelerator, model, trie=trie, item_codes=item_codes, split=split,
                            user_ids=dataset.user_ids, cfg=cfg)
        entry = {"step": progress.step, "epoch": progress.epoch, "train_seconds": round(progress.train_seconds, 1),
                 **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}}
        progress.history.append(entry)
        logger.info("valid @ step %d: recall@10 %.4f ndcg@10 %.4f (%d users, %.0f s trained)", progress.step,
                    metrics["recall@10"], metrics["ndcg@10"], metrics["users"], progress.train_seconds)
        accelerator.log({f"valid/{k}": v for k, v in metrics.items()}, step=progress.step)
        if metrics["ndcg@10"] > progress.best_ndcg:
            progress.best_ndcg, progress.best_step, progress.bad_evals = metrics["ndcg@10"], progress.step, 0
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(run / MODEL_DIR)
        else:
            progress.bad_evals += 1
        accelerator.wait_for_everyone()
        tick = time.perf_counter()

    while not stop and (cfg.epochs <= 0 or progress.epoch < cfg.epochs):
        loader.set_epoch(progress.epoch)
        if grouped is not None:
            grouped.set_epoch(progress.epoch)
        epoch_loader = skip_first_batches(loader, progress.batch_in_epoch) if progress.batch_in_epoch else loader
        model.train()
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batch_in_epoch += 1
            loss_sum, loss_n = loss_sum + loss.detach().float().item(), loss_n + 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.step += 1
            bar.update(1)
            if progress.step % cfg.log_every == 0 or progress.step == total:
                mean = loss_sum / max(loss_n, 1)
                bar.set_postfix(loss=f"{mean:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                logger.info("step %d loss %.4f lr %.3e", progress.step, mean, scheduler.get_last_lr()[0])
                progress.loss_curve.append([progress.step, round(mean, 5)])
                accelerator.log({"train/loss": mean, "train/lr": scheduler.get_last_lr()[0]}, step=progress.step)
                loss_sum, loss_n = 0.0, 0
            if cfg.eval_every > 0 and progress.step % cfg.eval_every == 0:
                validate_and_keep()
                if cfg.patience > 0 and progress.bad_evals >= cfg.patience:
                    logger.info("early stop: %d validations without an NDCG@10 gain", progress.bad_evals)
                    stop = True
            if cfg.save_every > 0 and progress.step % cfg.save_every == 0:
                _save_state(accelerator, state_root, progress, cfg.keep_states)
            if cfg.max_minutes > 0 and not stop:
                trained = progress.train_seconds + time.perf_counter() - tick
                if trained >= 60 * cfg.max_minutes:
                    logger.info("time budget: %.1f min of training reached at step %d", trained / 60, progress.step)
                    stop = True
            if stop or progress.step >= total:
                stop = True
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    bar.close()
    if not progress.history or progress.history[-1]["step"] != progress.step:
        validate_and_keep()
    progress.train_seconds += time.perf_counter() - tick
    digests = _rank_weight_digests(accelerator, model)
    if len(set(digests)) != 1:
        logger.warning("ranks ended with different weights (digests %s)", digests)
    log = {"config": config_to_dict(cfg), "best_step": progress.best_step, "best_ndcg@10": progress.best_ndcg,
           "steps": progress.step, "epochs_done": progress.epoch, "train_seconds": round(progress.train_seconds, 1),
           "processes": accelerator.num_processes, "rank_weight_digests": digests, "examples": len(examples),
           "history": progress.history, "loss_curve": progress.loss_curve}
    if accelerator.is_main_process:
        atomic_write_json(run / MODEL_DIR / LOG_FILE, log)
        logger.info("best valid ndcg@10 %.4f at step %d -> %s", progress.best_ndcg, progress.best_step, run / MODEL_DIR)
    finish(accelerator)
    return log


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = parse_run_args(
        argv, GeneratorTrainConfig, prog="python -m sidrec.train.generator",
        description="Train the semantic-ID T5 generator on RUN (needs RUN/dataset and RUN/tokenizer).",
        default_config="generator/cpu-small",
    )
    train_generator(args.config, args.run, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
