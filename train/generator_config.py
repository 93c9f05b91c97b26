"""``GeneratorTrainConfig``: the flat config of ``sidrec train`` (presets in ``configs/generator/``).

The model's fields are declared once, in ``sidrec.seqmodel.config`` (``T5Shape``, ``ItemInputs``,
``DenseHeadFields``, ``ParallelHeads``), and inherited here; this class adds what training alone decides:
the family, optimisation, budgets, validation and saved states. A preset and the command line stay flat
(``--d-model 64 --lr 0.005``), and ``--resume`` compares the same flat dict as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sidrec.decoding.settings import DEFAULT_BEAM_SIZE
from sidrec.seqmodel.config import DenseHeadFields, ItemInputs, ParallelHeads, T5Shape, t5_activations
from sidrec.utils.config import Choice, Range, Rule

__all__ = ["RESUME_FREE_FIELDS", "GeneratorTrainConfig", "t5_activations"]

#: fields ``--resume`` may change: budgets, validation cadence, logging (the saved states do not depend on them)
RESUME_FREE_FIELDS = ("max_steps", "epochs", "max_minutes", "patience", "eval_every", "eval_at_minutes", "save_every",
                      "keep_states", "log_every", "tensorboard", "torch_threads", "eval_batch_size")


def _families() -> list[str]:
    from sidrec.train.generator_tasks import TASKS

    return sorted(TASKS)


@dataclass
class GeneratorTrainConfig(T5Shape, ItemInputs, DenseHeadFields, ParallelHeads):
    """Generator training settings (presets: ``configs/generator/*.yaml``).

    family: which generator is trained (``sidrec.train.generator_tasks``): ``tiger`` (TIGER: token-level
    encoder over the history's codes, one target per prefix), ``item`` (one encoder position per history
    item, causal, a target at every position, dense head, beam search) or ``parallel`` (item positions,
    all digits of the next item predicted at once, exact scoring of the whole catalog). The model fields
    come from the field groups this class inherits (see their docstrings); user_buckets: user-hash tokens
    (tiger only; 0 = none).

    Ranking, chosen on VALID and saved as ``generator/decoding.json`` (``DecodingSettings``):
    hybrid_weights (dense weights tried at each validation to rank the beam's candidates by
    logp + w * dense; the best is kept; 0 = generation only), prior_weights (after training the best
    checkpoint is validated again with each popularity correction of the beam search, ``CodePrior``:
    0 = plain, 1 = prior removed; the best pair on VALID NDCG@10 is kept; [0] = skip), beam_size (the
    beam validated with and kept for inference), dense_candidates and new_candidates (with a dense head:
    the items with the best dense scores over the whole catalog, and the best items never seen in training,
    that join the beam's candidates, scored like them; ``sidrec.decoding.join_candidates``; 0 = off),
    valid_dense (also measure the dense head alone over the whole catalog at each validation: an ablation).

    Optimisation: AdamW(lr, weight_decay), linear warm-up for warmup_steps, then lr_schedule:
    ``inverse_sqrt`` (TIGER: lr * sqrt(w / s)) or ``constant`` (lr), batch_size examples per optimiser step (global, split over processes)
    x grad_accum, max_grad_norm clipping (0 = off), mixed_precision no|bf16|fp16.
    Length: max_steps optimiser steps (0 = no limit) and/or epochs (0 = no limit); one must be set;
    max_minutes also stops after that much training time (validation excluded; 0 = no limit). cooldown:
    over this last fraction of the budget the learning rate falls linearly to 0 (0 = off).
    Validation: every eval_every steps (0 = only at the end) and when training time first reaches each of
    eval_at_minutes, on a fixed random valid_max_users users (0 = all), eval_batch_size users per batch;
    early stop after patience validations without an NDCG@10 gain (0 = never).
    State: save_every steps (0 = off) into RUN/generator_state/, keep_states newest kept. log_every: steps
    per log line; tensorboard: also log to RUN/tensorboard. group_by_length: batch examples of similar
    length (less padding; the model math is unchanged). torch_threads: intra-op threads per process
    (0 = torch default; 1 is much faster on a busy shared CPU). seed: model init, batches and dropout.
    """

    family: str = "tiger"
    user_buckets: int = 2000
    hybrid_weights: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    prior_weights: list[float] = field(default_factory=lambda: [0.0])
    valid_dense: bool = True
    lr: float = 0.01
    lr_schedule: str = "inverse_sqrt"
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
    beam_size: int = DEFAULT_BEAM_SIZE
    dense_candidates: int = 0
    new_candidates: int = 0
    patience: int = 10
    save_every: int = 5000
    keep_states: int = 2
    log_every: int = 100
    tensorboard: bool = False
    group_by_length: bool = True
    torch_threads: int = 0
    seed: int = 0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "family": Choice(provider=_families), "user_buckets": Range(0),
        "hybrid_weights": Range(0), "prior_weights": Range(0, 1), "lr": Range(0, lo_open=True),
        "lr_schedule": Choice(("inverse_sqrt", "constant")), "weight_decay": Range(0), "warmup_steps": Range(0), "batch_size": Range(1), "grad_accum": Range(1),
        "max_grad_norm": Range(0), "mixed_precision": Choice(("no", "bf16", "fp16")), "max_steps": Range(0),
        "epochs": Range(0), "max_minutes": Range(0), "cooldown": Range(0, 1), "eval_every": Range(0),
        "eval_at_minutes": Range(0), "valid_max_users": Range(0), "eval_batch_size": Range(1),
        "beam_size": Range(10), "dense_candidates": Range(0), "new_candidates": Range(0), "patience": Range(0), "save_every": Range(0), "keep_states": Range(1),
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
        return self.family in ("item", "parallel") and self.dense_head
