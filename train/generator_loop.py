"""The generator's training loop, in the style of accelerate's examples, in parts.

``GeneratorTrainer(cfg, run, ...).train()`` = set up (inputs, the run plan, the family's task, the model,
optimiser, schedule and loader, all through ``accelerator.prepare``), restore a saved state when resuming,
step through the epochs (accumulation, clipping, the schedule and its cooldown, time marks and budgets
decided by the main process, validation, saved states) and finish (a last validation, the popularity
correction's calibration, the training log). What a family brings (model, batches, loss) is its task
(``sidrec.train.generator_tasks``); validation and the ranking settings it chooses are
``sidrec.train.generator_validation``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sidrec.train.common import (
    budget_progress,
    cooldown_factor,
    finish,
    main_process_values,
    make_accelerator,
    prune_states,
    setup_logging,
    state_dir_name,
)
from sidrec.train.generator_config import RESUME_FREE_FIELDS, GeneratorTrainConfig
from sidrec.train.generator_tasks import TaskContext, build_task
from sidrec.train.generator_validation import ValidationData, calibrate_prior, settings_from, validate
from sidrec.train.states import (
    LEGACY_RUN_ID,
    TrainingPlan,
    new_run_id,
    plan_new_run,
    plan_resume,
    write_run_meta,
)
from sidrec.utils import atomic_write_json, config_to_dict, follow_umask, read_json
from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR, stage_record
from sidrec.utils.run_folder import RunFolder

logger = logging.getLogger(__name__)

__all__ = ["GeneratorTrainer", "Progress", "inverse_sqrt_lambda"]

LOG_FILE = "training.json"


def inverse_sqrt_lambda(warmup_steps: int, *, decay: bool = True):
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then ``sqrt(warmup / step)`` (TIGER) or, with
    ``decay=False``, 1 (a constant rate after the warm-up)."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        s = step + 1
        if s < warmup:
            return s / warmup
        return math.sqrt(warmup / s) if decay else 1.0

    return factor


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
    marks_done: int = 0  # eval_at_minutes marks already validated
    history: list[dict[str, Any]] | None = None
    loss_curve: list[list[float]] | None = None  # [step, mean loss since the previous entry]


class _LossMeter:
    """Running mean of the loss (and its named parts) between two log lines."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        for name, value in {"loss": loss, **parts}.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach().float())
        self.n += 1

    def pop(self) -> dict[str, float]:
        means = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return means


class GeneratorTrainer:
    """One ``sidrec train`` run (new or resumed) on a run folder; ``train()`` returns the training log."""

    def __init__(self, cfg: GeneratorTrainConfig, run: RunFolder, *, resume: bool = False,
                 resume_id: str | None = None, overwrite: bool = False, keep_saved_config: bool = False,
                 explicit_fields: frozenset[str] | None = None, preset: str | None = None) -> None:
        self.cfg, self.run, self.preset = cfg, run, preset
        self.resume, self.resume_id, self.overwrite = resume, resume_id, overwrite
        self.keep_saved_config, self.explicit_fields = keep_saved_config, explicit_fields
        self.progress = Progress(history=[], loss_curve=[])
        self.meter = _LossMeter()

    def train(self) -> dict[str, Any]:
        self._setup()
        self._restore()
        self._loop()
        return self._finish()

    # -- setup ----------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg, run = self.cfg, self.run
        self.accelerator = accelerator = make_accelerator(
            seed=cfg.seed, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
            tensorboard_dir=run.tensorboard_dir if cfg.tensorboard else None,
        )
        setup_logging(accelerator)
        if cfg.batch_size % accelerator.num_processes:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {accelerator.num_processes} processes")
        self.dataset = dataset = run.dataset()
        fingerprint = dataset.fingerprint()
        self.tokenizer = run.tokenizer(item_ids=dataset.item_ids, dataset_fingerprint=fingerprint)
        self.plan = self._plan(fingerprint)
        self.cfg = cfg = self.plan.cfg
        if accelerator.is_main_process and self.plan.run_id != LEGACY_RUN_ID:  # legacy states have no run.json
            write_run_meta(self.plan)
        accelerator.wait_for_everyone()
        logger.info("training run %s (states in %s)", self.plan.run_id, self.plan.state_dir)
        self.provenance = {"dataset_fingerprint": fingerprint, "semantic_ids": self.tokenizer.table_record(),
                           "train_run_id": self.plan.run_id, "preset": self.preset}
        self.task = build_task(TaskContext(cfg=cfg, run=run.root, dataset=dataset, tokenizer=self.tokenizer,
                                           accelerator=accelerator))
        self.data = self._validation_data()
        self._build_model()

    def _validation_data(self) -> ValidationData:
        from sidrec.decoding import CatalogTrie

        codes = np.asarray(self.tokenizer.codes, dtype=np.int64)
        trie = CatalogTrie(codes=codes, level_sizes=self.tokenizer.level_sizes)
        available = ~self.dataset.cold_items if self.dataset.num_cold_items else np.ones(len(codes), dtype=bool)
        if self.dataset.num_cold_items:  # a cold-start split's held-out items do not exist yet while training
            trie.remove_items(np.flatnonzero(self.dataset.cold_items))
        split = self.dataset.eval_split("valid").sample(self.cfg.valid_max_users or None, seed=0)
        return ValidationData(trie=trie, item_codes=codes, split=split, user_ids=self.dataset.user_ids,
                              available=available)

    def _build_model(self) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        model = self.task.build_model()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, inverse_sqrt_lambda(cfg.warmup_steps, decay=cfg.lr_schedule == "inverse_sqrt"))
        # Own generator: DataLoader iterators draw a base seed from it, not from the global RNG that drives
        # dropout, so a resumed run (new iterator mid-epoch) replays the same dropout masks.
        loader, self.sampler = self.task.loader(torch.Generator().manual_seed(cfg.seed))
        self.model, self.optimizer, self.loader = accelerator.prepare(model, self.optimizer, loader)
        accelerator.register_for_checkpointing(self.scheduler)  # stepped by us once per optimiser step
        unwrapped = accelerator.unwrap_model(self.model)
        n_params = sum(p.numel() for p in unwrapped.parameters() if p.requires_grad)
        logger.info("family %s: %d training examples, %d valid users, %d items, vocab %d, %.2fM parameters, "
                    "%d process(es)", cfg.family, self.task.num_examples, len(self.data.split), self.dataset.num_items,
                    unwrapped.vocab.vocab_size, n_params / 1e6, accelerator.num_processes)
        steps_per_epoch = math.ceil(len(self.loader) / cfg.grad_accum)
        self.total = min(b for b in (cfg.max_steps, cfg.epochs * steps_per_epoch) if b > 0)  # whichever ends first

    def _plan(self, fingerprint: str) -> TrainingPlan:
        """Which run this command trains (new or resumed, see ``sidrec.train.states``); the same on every rank."""
        run, cfg = self.run, self.cfg
        restart = f"start a new run with these settings: sidrec train --run {run.root} --overwrite (the saved states are kept)"

        def check_inputs(recorded: dict[str, Any], run_id: str) -> None:
            where = f"run {run_id} ({run.generator_state_dir / run_id}/run.json)"
            run.check_training_inputs(recorded, dataset_fingerprint=fingerprint, tokenizer=self.tokenizer,
                                      where=where, fix=restart)

        inputs = {"dataset_fingerprint": fingerprint, "semantic_ids": self.tokenizer.table_record()}
        if self.resume:
            return plan_resume(run.generator_state_dir, cfg, run_id=self.resume_id, model_dir=run.generator_dir,
                               overwrite=self.overwrite, inputs=inputs, free_fields=RESUME_FREE_FIELDS,
                               keep_saved_config=self.keep_saved_config, check_inputs=check_inputs, restart=restart,
                               explicit_fields=self.explicit_fields)
        from accelerate.utils import broadcast_object_list

        run_id = broadcast_object_list([new_run_id()])[0] if self.accelerator.num_processes > 1 else new_run_id()
        return plan_new_run(run.generator_state_dir, cfg, model_dir=run.generator_dir, overwrite=self.overwrite,
                            inputs=inputs, resume_hint="--resume", run_id=run_id)

    def _restore(self) -> None:
        """Load the planned state (``--resume``): its progress, weights, optimiser, schedule and RNGs."""
        latest = self.plan.resume_from
        if latest is not None:
            fix = f"delete {latest} to resume from the state before it, or start a new run (--overwrite)"
            try:
                self.progress = Progress(**read_json(latest / "progress.json", fix=fix))
            except TypeError as e:
                raise ValueError(f"{latest / 'progress.json'} does not hold a training position ({e}); {fix}") from e
            try:
                self.accelerator.load_state(str(latest))
            except Exception as e:  # truncated or foreign files: name the state folder, not torch's internals
                raise ValueError(f"{latest}: cannot load the saved state ({type(e).__name__}: {e}); {fix}") from e
            p = self.progress
            logger.info("resumed from %s (step %d, epoch %d, batch %d)", latest, p.step, p.epoch, p.batch_in_epoch)
            if not self.plan.keeps_best:
                logger.info("%s does not hold run %s's best model; the next validation saves this run's model",
                            self.run.generator_dir, self.plan.run_id)
                p.best_ndcg, p.best_step, p.bad_evals = -1.0, -1, 0
        if self.cfg.tensorboard:
            self.accelerator.init_trackers("generator", config=config_to_dict(self.cfg))

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        from accelerate import skip_first_batches
        from tqdm.auto import tqdm

        cfg, progress, accelerator = self.cfg, self.progress, self.accelerator
        self.bar = tqdm(total=self.total, initial=progress.step, disable=not accelerator.is_local_main_process,
                        desc="generator")
        self.marks = sorted(cfg.eval_at_minutes)
        self.tick = time.perf_counter()
        stop = progress.step >= self.total
        while not stop and (cfg.epochs <= 0 or progress.epoch < cfg.epochs):
            self.loader.set_epoch(progress.epoch)
            if self.sampler is not None:
                self.sampler.set_epoch(progress.epoch)
            batches = skip_first_batches(self.loader, progress.batch_in_epoch) if progress.batch_in_epoch else self.loader
            self.model.train()
            for batch in batches:
                if self._step(batch) and self._after_step():
                    stop = True
                    break
            else:
                progress.epoch += 1
                progress.batch_in_epoch = 0
        self.bar.close()

    def _step(self, batch: dict[str, torch.Tensor]) -> bool:
        """One forward/backward (an optimiser step when the accumulation is complete); True after a step."""
        accelerator, cfg = self.accelerator, self.cfg
        with accelerator.accumulate(self.model):
            loss, parts = self.task.loss(self.model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.progress.batch_in_epoch += 1
        self.meter.add(loss, parts)
        if not accelerator.sync_gradients:
            return False
        self.scheduler.step()
        self.progress.step += 1
        self.bar.update(1)
        return True

    def _clock(self) -> tuple[bool, bool]:
        """The time-based decisions after a step, taken by the main process and shared: ``(at a validation
        mark, out of time)``; applies the cooldown to this step's learning rate."""
        cfg, progress = self.cfg, self.progress
        if not (self.marks or cfg.max_minutes > 0 or cfg.cooldown > 0):
            return False, False
        trained = progress.train_seconds + time.perf_counter() - self.tick
        mark_due, time_up, spent = main_process_values(
            self.accelerator, progress.marks_done < len(self.marks) and trained >= 60 * self.marks[progress.marks_done],
            cfg.max_minutes > 0 and trained >= 60 * cfg.max_minutes,
            budget_progress(step=progress.step, total_steps=self.total, train_seconds=trained,
                            max_seconds=60 * cfg.max_minutes),
        )
        if mark_due:
            progress.marks_done += 1
        if cfg.cooldown > 0:  # the scheduler set this step's lr afresh; anneal it to the budget's end
            for group in self.optimizer.param_groups:
                group["lr"] *= cooldown_factor(spent, cfg.cooldown)
        return bool(mark_due), bool(time_up)

    def _after_step(self) -> bool:
        """Logging, validation, saved states and the stopping rules after an optimiser step; True = stop."""
        cfg, progress = self.cfg, self.progress
        at_mark, out_of_time = self._clock()
        if progress.step % cfg.log_every == 0 or progress.step == self.total:
            self._log_losses()
        stop = False
        if (cfg.eval_every > 0 and progress.step % cfg.eval_every == 0) or at_mark:
            self._validate_and_keep()
            if cfg.patience > 0 and progress.bad_evals >= cfg.patience:
                logger.info("early stop: %d validations without an NDCG@10 gain", progress.bad_evals)
                stop = True
        if cfg.save_every > 0 and progress.step % cfg.save_every == 0:
            self._save_state()
        if out_of_time and not stop:
            logger.warning("stopped by the time cap (max_minutes %g) at step %d of %d: the machine is busier than "
                           "the budget assumed (or the cap is the budget); the same command on an idle machine "
                           "trains further", cfg.max_minutes, progress.step, self.total)
            stop = True
        return stop or progress.step >= self.total

    def _log_losses(self) -> None:
        means = self.meter.pop()
        lr = self.optimizer.param_groups[0]["lr"]
        self.bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.2e}")
        logger.info("step %d %s lr %.3e", self.progress.step, " ".join(f"{k} {v:.4f}" for k, v in means.items()), lr)
        self.progress.loss_curve.append([self.progress.step, round(means["loss"], 5)])
        self.accelerator.log({**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr}, step=self.progress.step)

    # -- validation, states ---------------------------------------------------------------------
    def _validate_and_keep(self) -> None:
        """Validate (training time stops meanwhile); a new best is saved with the settings it chose."""
        progress, accelerator = self.progress, self.accelerator
        progress.train_seconds += time.perf_counter() - self.tick
        metrics = validate(accelerator, self.model, data=self.data, cfg=self.cfg, ranking=self.task.ranking)
        entry = {"step": progress.step, "epoch": progress.epoch, "train_seconds": round(progress.train_seconds, 1),
                 "lr": self.optimizer.param_groups[0]["lr"],  # the rate of the next step (after any cooldown)
                 **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}}
        progress.history.append(entry)
        logger.info("valid @ step %d: recall@10 %.4f ndcg@10 %.4f (%d users, %.0f s trained%s)", progress.step,
                    metrics["recall@10"], metrics["ndcg@10"], metrics["users"], progress.train_seconds,
                    _extra(metrics))
        accelerator.log({f"valid/{k}": v for k, v in metrics.items() if isinstance(v, float | int)}, step=progress.step)
        if metrics["ndcg@10"] > progress.best_ndcg:
            progress.best_ndcg, progress.best_step, progress.bad_evals = metrics["ndcg@10"], progress.step, 0
            if accelerator.is_main_process:
                self._save_model(accelerator.unwrap_model(self.model), settings_from(metrics, self.cfg))
        else:
            progress.bad_evals += 1
        accelerator.wait_for_everyone()
        self.tick = time.perf_counter()

    def _save_model(self, model, settings) -> None:
        """The release folder ``RUN/generator``: the model (with its provenance) and its decoding settings."""
        setattr(model.config, GENERATOR_PROVENANCE_ATTR, stage_record(**self.provenance, step=self.progress.step))
        settings.apply_to(model).save_pretrained(self.run.generator_dir)
        settings.save(self.run.generator_dir)

    def _save_state(self) -> None:
        """Save the state after this step into this run's own folder and prune only there."""
        folder = self.plan.state_dir / state_dir_name(self.progress.step)
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            follow_umask(folder)  # accelerate's safetensors files are 0600 whatever the umask
            atomic_write_json(folder / "progress.json", self.progress.__dict__)  # written last: marks it complete
            prune_states(self.plan.state_dir, self.cfg.keep_states)
        self.accelerator.wait_for_everyone()

    # -- the end --------------------------------------------------------------------------------
    def _finish(self) -> dict[str, Any]:
        progress, cfg, accelerator = self.progress, self.cfg, self.accelerator
        if not progress.history or progress.history[-1]["step"] != progress.step or progress.best_step < 0:
            self._validate_and_keep()  # the final model is always validated, and the model folder always holds one
        progress.train_seconds += time.perf_counter() - self.tick
        calibration = self._calibrate() if any(w > 0 for w in cfg.prior_weights) and self.task.ranking == "beam" \
            and cfg.family == "item" else None
        digests = _rank_weight_digests(accelerator, self.model)
        if len(set(digests)) != 1:
            logger.warning("ranks ended with different weights (digests %s)", digests)
        log = {"run_id": self.plan.run_id, "provenance": self.provenance, "config": config_to_dict(cfg),
               "best_step": progress.best_step, "best_ndcg@10": progress.best_ndcg, "steps": progress.step,
               "epochs_done": progress.epoch, "train_seconds": round(progress.train_seconds, 1),
               "processes": accelerator.num_processes, "rank_weight_digests": digests,
               "examples": self.task.num_examples, "history": progress.history, "loss_curve": progress.loss_curve}
        best_entry = next((h for h in progress.history if h["step"] == progress.best_step), None)
        if best_entry is not None and "hybrid_weight" in best_entry:
            log["hybrid_weight"] = best_entry["hybrid_weight"]
        if calibration is not None:
            log["prior_sweep"] = calibration["sweep"]
            chosen = calibration["settings"]
            log["prior_weight"], log["hybrid_weight"] = chosen.prior_weight, chosen.dense_weight
        if accelerator.is_main_process:
            atomic_write_json(self.run.generator_dir / LOG_FILE, log)
            logger.info("best valid ndcg@10 %.4f at step %d -> %s", progress.best_ndcg, progress.best_step,
                        self.run.generator_dir)
        finish(accelerator)
        return log

    def _calibrate(self) -> dict[str, Any]:
        """The popularity correction of the kept checkpoint, chosen on VALID and saved with its settings."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        loaded = self.run.generator(tokenizer=self.tokenizer, dataset_fingerprint=self.provenance["dataset_fingerprint"])
        model = loaded.model.to(accelerator.device)
        result = calibrate_prior(accelerator, model=model, settings=loaded.settings, data=self.data, cfg=self.cfg,
                                 train_counts=self.dataset.train_item_counts())
        if accelerator.is_main_process and result["settings"] != loaded.settings:
            result["settings"].apply_to(model).save_pretrained(self.run.generator_dir)
            result["settings"].save(self.run.generator_dir)
        accelerator.wait_for_everyone()
        return result


def _extra(metrics: dict[str, Any]) -> str:
    """The validation log line's tail: the chosen dense weight and the ablations, where measured."""
    extra = f", hybrid weight {metrics['hybrid_weight']:g}" if "hybrid_weight" in metrics else ""
    if "by_weight" in metrics and "0.0" in metrics["by_weight"]:
        extra += f"; generation only ndcg@10 {metrics['by_weight']['0.0']['ndcg@10']:.4f}"
    if "dense" in metrics:
        extra += f"; dense alone ndcg@10 {metrics['dense']['ndcg@10']:.4f}"
    return extra


def _rank_weight_digests(accelerator, model) -> list[int]:
    """A 63-bit hash of each process's final weights (bytes), gathered: all equal iff the ranks agree."""
    h = hashlib.sha256()
    for name, param in sorted(accelerator.unwrap_model(model).state_dict().items()):
        h.update(name.encode())
        h.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = torch.tensor([int.from_bytes(h.digest()[:8], "little") >> 1], device=accelerator.device)
    return [int(d) for d in accelerator.gather(digest).cpu().tolist()]
