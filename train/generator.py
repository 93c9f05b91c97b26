"""Train a generator: ``accelerate launch -m sidrec.train.generator --run RUN [--config generator/hybrid]``.

Also runs as ``python -m sidrec.train.generator ...`` (``sidrec train``). Reads ``RUN/dataset`` (``sidrec
prepare``) and ``RUN/tokenizer`` (``sidrec tokenize``). The preset's ``family`` picks what is trained
(``sidrec.train.generator_tasks``): ``tiger`` (every prefix an example, per-level cross-entropy) or
``item`` (item-level causal encoder, a target at every position, dense head). Everything else is one
loop for both: accelerate (DDP, mixed precision, accumulation), validation of Recall/NDCG on the VALID
split with trie-constrained beam search every ``eval_every`` steps (metrics gathered over processes; for a
dense head, the hybrid weight that scores best is chosen there), the best model kept in ``RUN/generator/``,
early stopping after ``patience`` validations without a gain, a time budget, and the full training state
in ``RUN/generator_state/<run_id>/step-N/`` every ``save_every`` steps (``--resume [RUN_ID]`` continues the
newest run, or the one named, from its newest state, mid-epoch; see ``sidrec.train.states``). The test
split is never touched here.

Run folders are not overwritten by accident: a new run refuses when ``RUN/generator`` or another run's
states exist, unless given ``--overwrite`` (other runs' states are kept either way); ``--resume`` refuses
a changed config (except budgets and logging: ``RESUME_FREE_FIELDS``) unless told ``--keep-saved-config``,
and a dataset or tokenizer that changed since the run started. The saved model records its provenance
(dataset fingerprint, semantic-ID table fingerprint, run id) in ``config.json``; every loader checks it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from sidrec.train.common import (
    budget_progress,
    cooldown_factor,
    finish,
    main_process_values,
    make_accelerator,
    parse_run_args,
    prune_states,
    setup_logging,
    state_dir_name,
)
from sidrec.train.generator_tasks import TASKS, TaskContext, build_task
from sidrec.train.states import (
    LEGACY_RUN_ID,
    TrainingPlan,
    new_run_id,
    plan_new_run,
    plan_resume,
    write_run_meta,
)
from sidrec.utils import Choice, Range, atomic_write_json, config_to_dict, read_json, validate_config
from sidrec.utils.config import Rule
from sidrec.utils.provenance import (
    GENERATOR_PROVENANCE_ATTR,
    check_dataset,
    check_table,
    stage_record,
)
from sidrec.utils.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = ["GeneratorTrainConfig", "evaluate_generator", "load_item_codes", "load_tokenizer", "main",
           "train_generator"]

STATE_DIR = "generator_state"
MODEL_DIR = "generator"
LOG_FILE = "training.json"

#: fields ``--resume`` may change: budgets, validation cadence, logging (the saved states do not depend on them)
RESUME_FREE_FIELDS = ("max_steps", "epochs", "max_minutes", "patience", "eval_every", "eval_at_minutes", "save_every",
                      "keep_states", "log_every", "tensorboard", "torch_threads", "eval_batch_size")


def t5_activations() -> list[str]:
    """What T5Config accepts as ``feed_forward_proj``: an activation ``ACT`` or ``gated-ACT``."""
    from transformers.activations import ACT2FN

    plain = sorted(a for a in ACT2FN if "-" not in a)
    return ["relu", "gated-gelu", *(a for a in plain if a != "relu"), *(f"gated-{a}" for a in plain if a != "gelu")]


@dataclass
class GeneratorTrainConfig:
    """Generator training settings (presets: ``configs/generator/hybrid.yaml``, ``tiger.yaml``, ``cpu-small.yaml``).

    family: ``tiger`` (TIGER: token-level encoder over the history's codes, one target per prefix) or
    ``item`` (one encoder position per history item, causal, a target at every position, dense head).
    Model (T5): d_model, num_layers (encoder), num_decoder_layers, num_heads x d_kv, d_ff, dropout,
    feed_forward_proj. Inputs: max_items history items (the item family's window), user_buckets
    user-hash tokens (tiger only; 0 = none).
    Item family only: text_input (item vectors include a projection of the tokenizer's frozen text
    embedding), id_min_count (items with at least this many training interactions get a learned ID
    embedding; 0 = none; all others, and items added later, are represented by codes and text), id_dropout
    (training-time chance of hiding an item's ID vector, so codes and text carry rare items too),
    dense_head (train a dense head: user state . item vector, full softmax), dense_weight (its loss weight),
    distill_weight (the decoder also learns the dense head's distribution over each level's codes given
    the true prefix: self-distillation, a soft target per level),
    hybrid_weights (dense weights tried at each validation to rank the beam's candidates by
    logp + w * dense; the best is stored with the model; 0 = generation only), prior_weights (after
    training, the best checkpoint is validated again with each popularity correction of the beam search,
    ``CodePrior``: 0 = plain, 1 = prior removed; the best (prior, hybrid) pair on VALID NDCG@10 is stored;
    [0] = skip), valid_dense (also measure
    the dense head alone over the whole catalog at each validation: an ablation, U x N dot products).
    Optimisation: AdamW(lr, weight_decay), LR warm-up for warmup_steps then inverse square root
    (lr * min(s / w, sqrt(w / s))), batch_size examples (tiger: prefixes; item: user windows) per
    optimiser step (global, split over processes) x grad_accum, max_grad_norm clipping (0 = off),
    mixed_precision no|bf16|fp16.
    Length: max_steps optimiser steps (0 = no limit) and/or epochs (0 = no limit); one must be set;
    max_minutes also stops after that much training time (validation excluded; 0 = no limit).
    cooldown: over this last fraction of the budget (max_minutes, or max_steps / epochs, whichever ends
    first) the learning rate falls linearly to 0 ("warm-up, stable, decay"; 0 = off). Validations before
    the cooldown see the un-annealed model, so ``eval_at_minutes`` curves are unchanged by it.
    Validation: every eval_every steps (0 = only at the end) and when training time first reaches each of
    eval_at_minutes (learning curves at fixed budgets), on a fixed random valid_max_users users (0 = all),
    beam search with beam_size, early stop after patience validations without an NDCG@10 gain (0 = never).
    State: save_every steps (0 = off) into RUN/generator_state/, keep_states newest kept.
    group_by_length: batch examples of similar length (less padding; the model math is unchanged).
    torch_threads: intra-op threads per process (0 = torch default; 1 is much faster on a busy shared CPU).
    """

    family: str = "tiger"
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
    text_input: bool = True
    id_min_count: int = 1
    id_dropout: float = 0.0
    dense_head: bool = True
    dense_weight: float = 1.0
    distill_weight: float = 0.0
    hybrid_weights: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    prior_weights: list[float] = field(default_factory=lambda: [0.0])
    valid_dense: bool = True
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
    cooldown: float = 0.0
    eval_every: int = 5000
    eval_at_minutes: list[float] = field(default_factory=list)
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

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "family": Choice(provider=lambda: sorted(TASKS)), "d_model": Range(1), "num_layers": Range(1),
        "num_decoder_layers": Range(1), "num_heads": Range(1), "d_kv": Range(1), "d_ff": Range(1),
        "dropout": Range(0, 1, hi_open=True), "feed_forward_proj": Choice(provider=t5_activations),
        "max_items": Range(1), "user_buckets": Range(0), "id_min_count": Range(0),
        "id_dropout": Range(0, 1, hi_open=True), "dense_weight": Range(0), "distill_weight": Range(0),
        "hybrid_weights": Range(0), "prior_weights": Range(0, 1), "lr": Range(0, lo_open=True), "weight_decay": Range(0), "warmup_steps": Range(0),
        "batch_size": Range(1), "grad_accum": Range(1), "max_grad_norm": Range(0),
        "mixed_precision": Choice(("no", "bf16", "fp16")), "max_steps": Range(0), "epochs": Range(0),
        "max_minutes": Range(0), "cooldown": Range(0, 1), "eval_every": Range(0), "eval_at_minutes": Range(0), "valid_max_users": Range(0),
        "eval_batch_size": Range(1),
        "beam_size": Range(10), "patience": Range(0), "save_every": Range(0), "keep_states": Range(1),
        "log_every": Range(1), "torch_threads": Range(0), "seed": Range(0),
    }

    def validate(self) -> None:
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set max_steps or epochs (> 0); both 0 would train forever")
        if self.beam_size < 10:
            raise ValueError(f"beam_size must be >= 10 (validation reports Recall@10), got {self.beam_size}")
        for name in ("batch_size", "grad_accum", "max_items", "eval_batch_size", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.hybrid_weights or min(self.hybrid_weights) < 0:
            raise ValueError(f"hybrid_weights must be a non-empty list of weights >= 0, got {self.hybrid_weights}")

    def uses_dense_head(self) -> bool:
        return self.family == "item" and self.dense_head


# ---------------------------------------------------------------------------------------- inputs
def load_tokenizer(run: Path, item_ids: Sequence[str], *, dataset_fingerprint: str | None = None):
    """``RUN/tokenizer``, checked against the dataset's items (same ids, same order) and, when given, the
    dataset fingerprint it recorded."""
    from sidrec.tokenizer.semantic_ids import SemanticIdTokenizer

    folder = run / "tokenizer"
    if not folder.is_dir():
        raise ValueError(f"{folder} not found; train the tokenizer first: python -m sidrec.train.tokenizer --run {run}")
    tokenizer = SemanticIdTokenizer.from_pretrained(folder)
    check_dataset(tokenizer.dataset_fingerprint, dataset_fingerprint, stage=str(folder), dataset=f"{run}/dataset",
                  fix=f"sidrec tokenize --run {run} --overwrite")
    if list(tokenizer.item_ids) != list(item_ids):
        raise ValueError(
            f"{folder} was trained on another catalog than {run}/dataset ({len(tokenizer.item_ids)} vs "
            f"{len(item_ids)} items, or another order); retrain the tokenizer on this run"
        )
    return tokenizer


def load_item_codes(run: Path, item_ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """``codes (N, L)`` and ``level_sizes`` of ``RUN/tokenizer``, checked against the dataset's items."""
    tokenizer = load_tokenizer(run, item_ids)
    return np.asarray(tokenizer.codes, dtype=np.int64), [int(s) for s in tokenizer.level_sizes]


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
    """Top-k item indices ``(U, k)`` by trie-constrained beam search (hybrid-ranked for a dense head;
    -1 = fewer than k items). ``user_ids`` are used iff the model has user tokens. Never samples."""
    from sidrec.decoding import recommend_topk

    users = list(user_ids) if user_ids is not None and model.vocab.num_user_buckets else None
    items, _ = recommend_topk(model, trie, histories, k=k, beam_size=beam_size, item_codes=item_codes,
                              user_ids=users, batch_size=batch_size)
    return items.numpy()


def _dense_topk(model, histories: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """Top-k of the dense head alone over the whole catalog ``(B, k)`` (validation ablation)."""
    input_ids, mask = model.history_inputs(histories)
    device = next(model.parameters()).device
    scores = model.dense_scores(input_ids.to(device), mask.to(device))  # (B, N)
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.cpu()


def _validate(accelerator, model, *, trie, item_codes, split, user_ids, cfg, prior_weight: float = 0.0,
              tail: np.ndarray | None = None, dense_alone: bool = True) -> dict[str, Any]:
    """Valid metrics over all processes: users sharded by an unshuffled prepared loader, gathered back.

    With a dense head the beam's candidates are ranked with every ``cfg.hybrid_weights`` weight; the
    returned top-level metrics are those of the best weight (``hybrid_weight``), with ``by_weight`` and,
    when ``cfg.valid_dense`` and ``dense_alone``, ``dense`` (the dense head alone over the whole catalog).
    ``prior_weight`` corrects the search for popularity (``CodePrior``); ``tail`` (``bool (U,)``) adds the
    Recall@10 of those users (``tail_recall@10``).
    """
    from sidrec.decoding import Candidates, beam_candidates, popularity_prior
    from sidrec.eval.metrics import ranking_metrics

    users = np.arange(len(split))
    local_tail = torch.from_numpy(tail if tail is not None else np.zeros(len(split), dtype=bool))
    loader = accelerator.prepare_data_loader(
        DataLoader(users, batch_size=cfg.eval_batch_size, shuffle=False), device_placement=False
    )
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    dense = cfg.uses_dense_head()
    use_users = unwrapped.vocab.num_user_buckets > 0
    prior = popularity_prior(unwrapped, trie) if prior_weight else None
    parts: dict[str, list[np.ndarray]] = {"items": [], "scores": [], "dense": [], "dense_top": [], "targets": [],
                                          "tail": []}
    for batch in loader:
        idx = batch.cpu().numpy()
        histories = [split.histories[i] for i in idx]
        cands = beam_candidates(
            unwrapped, trie, histories, beam_size=cfg.beam_size, item_codes=item_codes,
            user_ids=[user_ids[split.user_index[i]] for i in idx] if use_users else None,
            batch_size=cfg.eval_batch_size, prior_weight=prior_weight, prior=prior,
        )
        local = {"items": cands.items, "scores": cands.scores, "targets": torch.from_numpy(split.targets[idx]),
                 "tail": local_tail[idx]}
        if dense:
            local["dense"] = cands.dense
            if cfg.valid_dense and dense_alone:
                local["dense_top"] = _dense_topk(unwrapped, histories, 10)
        # gathered per batch, while the loader is active, so gather_for_metrics drops the padding users
        gathered = accelerator.gather_for_metrics({k: v.to(accelerator.device) for k, v in local.items()})
        for key, value in gathered.items():
            parts[key].append(value.cpu())
    unwrapped.train(was_training)
    cat = {k: torch.cat(v) for k, v in parts.items() if v}
    targets = cat["targets"].numpy()
    candidates = Candidates(cat["items"], cat["scores"], cat.get("dense"))
    by_weight = {}
    for weight in (cfg.hybrid_weights if dense else [0.0]):
        top, _ = candidates.rank(weight=weight, k=10)
        by_weight[weight] = ranking_metrics(top.numpy(), targets, ks=(1, 5, 10))
    best = max(by_weight, key=lambda w: by_weight[w]["ndcg@10"])  # ties: the first (smallest) weight
    metrics: dict[str, Any] = {**by_weight[best], "users": int(len(targets))}
    if tail is not None:
        top, _ = candidates.rank(weight=best, k=10)
        hits = (top.numpy() == targets[:, None]).any(1)
        in_tail = cat["tail"].numpy().astype(bool)
        metrics["tail_recall@10"] = float(hits[in_tail].mean()) if in_tail.any() else float("nan")
        metrics["tail_users"] = int(in_tail.sum())
    if dense:
        metrics["hybrid_weight"] = float(best)
        metrics["by_weight"] = {str(w): {k: round(m[k], 5) for k in ("recall@10", "ndcg@10")} for w, m in by_weight.items()}
        if "dense_top" in cat:
            m = ranking_metrics(cat["dense_top"].numpy(), targets, ks=(1, 5, 10))
            metrics["dense"] = {k: round(m[k], 5) for k in ("recall@10", "ndcg@10")}
    return metrics


def _calibrate_prior(accelerator, *, run: Path, trie, item_codes, split, user_ids, cfg,
                     train_counts: np.ndarray) -> dict[str, Any]:
    """Validate the kept model again with each ``cfg.prior_weights`` popularity correction; store the best.

    The (prior weight, hybrid weight) pair with the best VALID NDCG@10 goes into the checkpoint's config;
    every row of the sweep (with the Recall@10 of users whose target has 1-9 training interactions, the
    long tail the correction is for) is returned for ``training.json``.
    """
    from sidrec.seqmodel import load_generator

    accelerator.wait_for_everyone()
    model = load_generator(run / MODEL_DIR).to(accelerator.device)
    counts = train_counts[split.targets]
    tail = (counts >= 1) & (counts <= 9)
    sweep = []
    for weight in sorted(set(cfg.prior_weights)):
        m = _validate(accelerator, model, trie=trie, item_codes=item_codes, split=split, user_ids=user_ids,
                      cfg=cfg, prior_weight=weight, tail=tail, dense_alone=False)
        sweep.append({"prior_weight": weight, "hybrid_weight": m.get("hybrid_weight", 0.0),
                      **{k: round(m[k], 5) for k in ("recall@10", "ndcg@10", "tail_recall@10")}})
        logger.info("popularity correction %.2f: valid recall@10 %.4f ndcg@10 %.4f, tail (1-9 interactions, %d "
                    "users) recall@10 %.4f (hybrid weight %g)", weight, m["recall@10"], m["ndcg@10"],
                    m["tail_users"], m["tail_recall@10"], m.get("hybrid_weight", 0.0))
    best = max(sweep, key=lambda row: row["ndcg@10"])  # ties: the smallest correction
    if accelerator.is_main_process and best["prior_weight"] > 0:
        model.config.prior_weight = best["prior_weight"]
        model.config.hybrid_weight_plain = model.config.hybrid_weight  # the weight without a correction
        model.config.hybrid_weight = best["hybrid_weight"]
        model.save_pretrained(run / MODEL_DIR)
    accelerator.wait_for_everyone()
    logger.info("kept popularity correction %.2f with hybrid weight %g (valid ndcg@10 %.4f)", best["prior_weight"],
                best["hybrid_weight"], best["ndcg@10"])
    return {"sweep": sweep, "prior_weight": best["prior_weight"], "hybrid_weight": best["hybrid_weight"]}


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
    marks_done: int = 0  # eval_at_minutes marks already validated
    history: list[dict[str, Any]] | None = None
    loss_curve: list[list[float]] | None = None  # [step, mean loss since the previous entry]


def _rank_weight_digests(accelerator, model) -> list[int]:
    """A 63-bit hash of each process's final weights (bytes), gathered: all equal iff the ranks agree."""
    h = hashlib.sha256()
    for name, param in sorted(accelerator.unwrap_model(model).state_dict().items()):
        h.update(name.encode())
        h.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = torch.tensor([int.from_bytes(h.digest()[:8], "little") >> 1], device=accelerator.device)
    return [int(d) for d in accelerator.gather(digest).cpu().tolist()]


def _save_state(accelerator, root: Path, progress: Progress, keep: int) -> None:
    """Save the state after ``progress.step`` into ``root`` (this run's own folder) and prune only there."""
    folder = root / state_dir_name(progress.step)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        atomic_write_json(folder / "progress.json", progress.__dict__)  # written last: marks the state complete
        prune_states(root, keep)
    accelerator.wait_for_everyone()


def _plan(cfg: GeneratorTrainConfig, run: Path, accelerator, *, inputs: dict[str, Any], resume: bool,
          resume_id: str | None, overwrite: bool, keep_saved_config: bool,
          explicit_fields: Sequence[str] | frozenset[str] | None) -> TrainingPlan:
    """Which run this command trains (new or resumed, see ``sidrec.train.states``); the same on every rank."""
    state_root, model_dir = run / STATE_DIR, run / MODEL_DIR
    restart = f"start a new run with these settings: sidrec train --run {run} --overwrite (the saved states are kept)"

    def check_inputs(recorded: dict[str, Any], run_id: str) -> None:
        where = f"run {run_id} ({state_root / run_id}/run.json)"
        check_dataset(recorded.get("dataset_fingerprint"), inputs["dataset_fingerprint"], stage=where,
                      dataset=f"{run}/dataset", fix=restart)
        check_table(recorded.get("semantic_ids"), inputs["item_ids"], inputs["codes"], recorded_by=where,
                    table=f"{run}/tokenizer", fix=f"the tokenizer was refitted since the run started; {restart}")

    recorded_inputs = {k: inputs[k] for k in ("dataset_fingerprint", "semantic_ids")}
    if resume:
        return plan_resume(state_root, cfg, run_id=resume_id, model_dir=model_dir, overwrite=overwrite,
                           inputs=recorded_inputs, free_fields=RESUME_FREE_FIELDS, keep_saved_config=keep_saved_config,
                           check_inputs=check_inputs, restart=restart, explicit_fields=explicit_fields)
    from accelerate.utils import broadcast_object_list

    run_id = broadcast_object_list([new_run_id()])[0] if accelerator.num_processes > 1 else new_run_id()
    return plan_new_run(state_root, cfg, model_dir=model_dir, overwrite=overwrite, inputs=recorded_inputs,
                        resume_hint="--resume", run_id=run_id)


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


def train_generator(
    cfg: GeneratorTrainConfig, run: Path, *, resume: bool = False, resume_id: str | None = None,
    overwrite: bool = False, keep_saved_config: bool = False, explicit_fields: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Train per ``cfg`` on ``run``; returns the training log (also written to ``RUN/generator/training.json``).

    ``resume``: continue run ``resume_id`` (None: the newest) from its newest state; ``overwrite``: allow
    replacing ``RUN/generator`` (a new run beside other runs' states, or a resumed run that did not make the
    current model); ``keep_saved_config``: on resume, take the run's saved values for fields that differ
    (budgets too, unless named in ``explicit_fields``: the fields given on the command line).
    Runs with ``cfg.torch_threads`` intra-op threads and restores the previous count afterwards (as SASRec).
    """
    validate_config(cfg)  # ranges and allowed values, before anything is built
    with torch_threads(cfg.torch_threads):
        return _train_generator(cfg, Path(run), resume=resume, resume_id=resume_id, overwrite=overwrite,
                                keep_saved_config=keep_saved_config, explicit_fields=explicit_fields)


def _train_generator(
    cfg: GeneratorTrainConfig, run: Path, *, resume: bool, resume_id: str | None, overwrite: bool,
    keep_saved_config: bool, explicit_fields: frozenset[str] | None,
) -> dict[str, Any]:
    from accelerate import skip_first_batches
    from tqdm.auto import tqdm

    from sidrec.data import PreparedDataset
    from sidrec.decoding import CatalogTrie

    accelerator = make_accelerator(
        seed=cfg.seed, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
        tensorboard_dir=run / "tensorboard" if cfg.tensorboard else None,
    )
    setup_logging(accelerator)
    if cfg.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {accelerator.num_processes} processes")
    dataset = PreparedDataset.load(run)
    dataset_fingerprint = dataset.fingerprint()
    tokenizer = load_tokenizer(run, dataset.item_ids, dataset_fingerprint=dataset_fingerprint)
    inputs = {"dataset_fingerprint": dataset_fingerprint, "semantic_ids": tokenizer.table_record(),
              "item_ids": tokenizer.item_ids, "codes": tokenizer.codes}
    plan = _plan(cfg, run, accelerator, inputs=inputs, resume=resume, resume_id=resume_id, overwrite=overwrite,
                 keep_saved_config=keep_saved_config, explicit_fields=explicit_fields)
    cfg = plan.cfg
    if accelerator.is_main_process and plan.run_id != LEGACY_RUN_ID:  # legacy states have no run.json
        write_run_meta(plan)
    accelerator.wait_for_everyone()
    logger.info("training run %s (states in %s)", plan.run_id, plan.state_dir)
    provenance = {"dataset_fingerprint": dataset_fingerprint, "semantic_ids": inputs["semantic_ids"],
                  "train_run_id": plan.run_id}
    task = build_task(TaskContext(cfg=cfg, run=run, dataset=dataset, tokenizer=tokenizer, accelerator=accelerator))
    item_codes = np.asarray(tokenizer.codes, dtype=np.int64)
    split = dataset.eval_split("valid").sample(cfg.valid_max_users or None, seed=0)
    trie = CatalogTrie(codes=item_codes, level_sizes=tokenizer.level_sizes)
    if dataset.num_cold_items:  # a cold-start split's held-out items do not exist yet while training
        trie.remove_items(np.flatnonzero(dataset.cold_items))

    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt_lambda(cfg.warmup_steps))
    # Own generator: DataLoader iterators draw a base seed from it, not from the global RNG that drives
    # dropout, so a resumed run (new iterator mid-epoch) replays the same dropout masks.
    loader, sampler = task.loader(torch.Generator().manual_seed(cfg.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us once per optimiser step
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters() if p.requires_grad)
    logger.info("family %s: %d training examples, %d valid users, %d items, vocab %d, %.2fM parameters, "
                "%d process(es)", cfg.family, task.num_examples, len(split), dataset.num_items,
                accelerator.unwrap_model(model).vocab.vocab_size, n_params / 1e6, accelerator.num_processes)

    progress = Progress(history=[], loss_curve=[])
    if plan.resume_from is not None:
        latest = plan.resume_from
        fix = f"delete {latest} to resume from the state before it, or start a new run (--overwrite)"
        try:
            progress = Progress(**read_json(latest / "progress.json", fix=fix))
        except TypeError as e:
            raise ValueError(f"{latest / 'progress.json'} does not hold a training position ({e}); {fix}") from e
        try:
            accelerator.load_state(str(latest))
        except Exception as e:  # truncated or foreign files: name the state folder, not torch's internals
            raise ValueError(f"{latest}: cannot load the saved state ({type(e).__name__}: {e}); {fix}") from e
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", latest, progress.step, progress.epoch,
                    progress.batch_in_epoch)
        if not plan.keeps_best:
            logger.info("%s does not hold run %s's best model; the next validation saves this run's model",
                        run / MODEL_DIR, plan.run_id)
            progress.best_ndcg, progress.best_step, progress.bad_evals = -1.0, -1, 0
    if cfg.tensorboard:
        accelerator.init_trackers("generator", config=config_to_dict(cfg))

    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = min(b for b in (cfg.max_steps, cfg.epochs * steps_per_epoch) if b > 0)  # whichever ends first
    bar = tqdm(total=total, initial=progress.step, disable=not accelerator.is_local_main_process, desc="generator")
    stop = progress.step >= total
    meter = _LossMeter()
    marks = sorted(cfg.eval_at_minutes)
    tick = time.perf_counter()

    def validate_and_keep() -> None:
        nonlocal tick
        progress.train_seconds += time.perf_counter() - tick
        metrics = _validate(accelerator, model, trie=trie, item_codes=item_codes, split=split,
                            user_ids=dataset.user_ids, cfg=cfg)
        entry = {"step": progress.step, "epoch": progress.epoch, "train_seconds": round(progress.train_seconds, 1),
                 "lr": optimizer.param_groups[0]["lr"],  # the rate of the next step (after any cooldown)
                 **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}}
        progress.history.append(entry)
        extra = f", hybrid weight {metrics['hybrid_weight']:g}" if "hybrid_weight" in metrics else ""
        if "by_weight" in metrics and "0.0" in metrics["by_weight"]:
            extra += f"; generation only ndcg@10 {metrics['by_weight']['0.0']['ndcg@10']:.4f}"
        if "dense" in metrics:
            extra += f"; dense alone ndcg@10 {metrics['dense']['ndcg@10']:.4f}"
        logger.info("valid @ step %d: recall@10 %.4f ndcg@10 %.4f (%d users, %.0f s trained%s)", progress.step,
                    metrics["recall@10"], metrics["ndcg@10"], metrics["users"], progress.train_seconds, extra)
        accelerator.log({f"valid/{k}": v for k, v in metrics.items() if isinstance(v, float | int)}, step=progress.step)
        if metrics["ndcg@10"] > progress.best_ndcg:
            progress.best_ndcg, progress.best_step, progress.bad_evals = metrics["ndcg@10"], progress.step, 0
            if accelerator.is_main_process:
                best = accelerator.unwrap_model(model)
                best.config.beam_size = cfg.beam_size  # inference decodes with the beam it was validated with
                if "hybrid_weight" in metrics:
                    best.config.hybrid_weight = metrics["hybrid_weight"]  # chosen on VALID, used at inference
                setattr(best.config, GENERATOR_PROVENANCE_ATTR, stage_record(**provenance, step=progress.step))
                best.save_pretrained(run / MODEL_DIR)
        else:
            progress.bad_evals += 1
        accelerator.wait_for_everyone()
        tick = time.perf_counter()

    while not stop and (cfg.epochs <= 0 or progress.epoch < cfg.epochs):
        loader.set_epoch(progress.epoch)
        if sampler is not None:
            sampler.set_epoch(progress.epoch)
        epoch_loader = skip_first_batches(loader, progress.batch_in_epoch) if progress.batch_in_epoch else loader
        model.train()
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss, parts = task.loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batch_in_epoch += 1
            meter.add(loss, parts)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.step += 1
            bar.update(1)
            at_mark = out_of_time = False
            if marks or cfg.max_minutes > 0 or cfg.cooldown > 0:  # time-based: the main process's view, on every rank
                trained = progress.train_seconds + time.perf_counter() - tick
                mark_due, time_up, spent = main_process_values(
                    accelerator, progress.marks_done < len(marks) and trained >= 60 * marks[progress.marks_done],
                    cfg.max_minutes > 0 and trained >= 60 * cfg.max_minutes,
                    budget_progress(step=progress.step, total_steps=total, train_seconds=trained,
                                    max_seconds=60 * cfg.max_minutes),
                )
                at_mark, out_of_time = bool(mark_due), bool(time_up)
                if at_mark:
                    progress.marks_done += 1
                if cfg.cooldown > 0:  # the scheduler set this step's lr afresh; anneal it to the budget's end
                    for group in optimizer.param_groups:
                        group["lr"] *= cooldown_factor(spent, cfg.cooldown)
            if progress.step % cfg.log_every == 0 or progress.step == total:
                means = meter.pop()
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.2e}")
                logger.info("step %d %s lr %.3e", progress.step,
                            " ".join(f"{k} {v:.4f}" for k, v in means.items()), lr)
                progress.loss_curve.append([progress.step, round(means["loss"], 5)])
                accelerator.log({**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr}, step=progress.step)
            if (cfg.eval_every > 0 and progress.step % cfg.eval_every == 0) or at_mark:
                validate_and_keep()
                if cfg.patience > 0 and progress.bad_evals >= cfg.patience:
                    logger.info("early stop: %d validations without an NDCG@10 gain", progress.bad_evals)
                    stop = True
            if cfg.save_every > 0 and progress.step % cfg.save_every == 0:
                _save_state(accelerator, plan.state_dir, progress, cfg.keep_states)
            if out_of_time and not stop:
                logger.info("time budget: %.1f min of training reached at step %d", cfg.max_minutes, progress.step)
                stop = True
            if stop or progress.step >= total:
                stop = True
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    bar.close()
    if not progress.history or progress.history[-1]["step"] != progress.step or progress.best_step < 0:
        validate_and_keep()  # the final model is always validated, and the model folder always holds one
    progress.train_seconds += time.perf_counter() - tick
    calibration = None
    if any(w > 0 for w in cfg.prior_weights) and cfg.family == "item":
        calibration = _calibrate_prior(accelerator, run=run, trie=trie, item_codes=item_codes, split=split,
                                       user_ids=dataset.user_ids, cfg=cfg, train_counts=dataset.train_item_counts())
    digests = _rank_weight_digests(accelerator, model)
    if len(set(digests)) != 1:
        logger.warning("ranks ended with different weights (digests %s)", digests)
    log = {"run_id": plan.run_id, "provenance": provenance, "config": config_to_dict(cfg),
           "best_step": progress.best_step, "best_ndcg@10": progress.best_ndcg,
           "steps": progress.step, "epochs_done": progress.epoch, "train_seconds": round(progress.train_seconds, 1),
           "processes": accelerator.num_processes, "rank_weight_digests": digests, "examples": task.num_examples,
           "history": progress.history, "loss_curve": progress.loss_curve}
    best_entry = next((h for h in progress.history if h["step"] == progress.best_step), None)
    if best_entry is not None and "hybrid_weight" in best_entry:
        log["hybrid_weight"] = best_entry["hybrid_weight"]
    if calibration is not None:
        log["prior_sweep"] = calibration["sweep"]
        log["prior_weight"], log["hybrid_weight"] = calibration["prior_weight"], calibration["hybrid_weight"]
    if accelerator.is_main_process:
        atomic_write_json(run / MODEL_DIR / LOG_FILE, log)
        logger.info("best valid ndcg@10 %.4f at step %d -> %s", progress.best_ndcg, progress.best_step, run / MODEL_DIR)
    finish(accelerator)
    return log


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = parse_run_args(
        argv, GeneratorTrainConfig, prog="python -m sidrec.train.generator",
        description="Train the semantic-ID generator on RUN (needs RUN/dataset and RUN/tokenizer).",
        default_config="generator/hybrid",
    )
    train_generator(args.config, args.run, resume=args.resume, resume_id=args.resume_id, overwrite=args.overwrite,
                    keep_saved_config=args.keep_saved_config, explicit_fields=args.explicit_fields)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
