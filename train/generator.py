"""Train a generator: ``accelerate launch -m sidrec.train.generator --run RUN [--config generator/hybrid]``.

Also runs as ``python -m sidrec.train.generator ...`` (``sidrec train``). Reads ``RUN/dataset`` (``sidrec
prepare``) and ``RUN/tokenizer`` (``sidrec tokenize``). The preset's ``family`` picks what is trained
(``sidrec.train.generator_tasks``): ``tiger`` (every prefix an example, per-level cross-entropy), ``item``
(item-level causal encoder, a target at every position, dense head) or ``parallel`` (item positions, all
digits of the next item at once, exact ranking). Everything else is one loop for all
(``sidrec.train.generator_loop``): accelerate (DDP, mixed precision, accumulation), validation of
Recall/NDCG on the VALID split every ``eval_every`` steps (``sidrec.train.generator_validation``; metrics
gathered over processes; the ranking settings validation chooses are saved as ``generator/decoding.json``),
the best model kept in ``RUN/generator/``, early stopping after ``patience`` validations without a gain, a
time budget, and the full training state in ``RUN/generator_state/<run_id>/step-N/`` every ``save_every``
steps (``--resume [RUN_ID]`` continues the newest run, or the one named, from its newest state, mid-epoch;
see ``sidrec.train.states``). The test split is never touched here.

Run folders are not overwritten by accident: a new run refuses when ``RUN/generator`` or another run's
states exist, unless given ``--overwrite`` (other runs' states are kept either way); ``--resume`` refuses
a changed config (except budgets and logging: ``RESUME_FREE_FIELDS``) unless told ``--keep-saved-config``,
and a dataset or tokenizer that changed since the run started. The saved model records its provenance
(dataset fingerprint, semantic-ID table fingerprint, run id) in ``config.json``; every loader checks it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.train.common import parse_run_args
from sidrec.train.generator_config import RESUME_FREE_FIELDS, GeneratorTrainConfig, t5_activations
from sidrec.train.generator_loop import GeneratorTrainer, inverse_sqrt_lambda
from sidrec.train.generator_validation import evaluate_generator
from sidrec.utils import validate_config
from sidrec.utils.locks import stage_lock
from sidrec.utils.run_folder import RunFolder
from sidrec.utils.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = ["RESUME_FREE_FIELDS", "GeneratorTrainConfig", "evaluate_generator", "inverse_sqrt_lambda",
           "load_item_codes", "main", "t5_activations", "train_generator"]


def load_item_codes(run: str | Path, item_ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """``codes (N, L)`` and ``level_sizes`` of ``RUN/tokenizer``, checked against the dataset's items."""
    tokenizer = RunFolder(run).tokenizer(item_ids=item_ids)
    return np.asarray(tokenizer.codes, dtype=np.int64), [int(s) for s in tokenizer.level_sizes]


def train_generator(
    cfg: GeneratorTrainConfig, run: str | Path, *, resume: bool = False, resume_id: str | None = None,
    overwrite: bool = False, keep_saved_config: bool = False, explicit_fields: frozenset[str] | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """Train per ``cfg`` on ``run``; returns the training log (also written to ``RUN/generator/training.json``).

    ``resume``: continue run ``resume_id`` (None: the newest) from its newest state; ``overwrite``: allow
    replacing ``RUN/generator`` (a new run beside other runs' states, or a resumed run that did not make the
    current model); ``keep_saved_config``: on resume, take the run's saved values for fields that differ
    (budgets too, unless named in ``explicit_fields``: the fields given on the command line). ``preset``: the
    preset (or YAML) named on the command line, recorded in the model's provenance (``sidrec serve``'s /v1/info).
    Runs with ``cfg.torch_threads`` intra-op threads and restores the previous count afterwards (as SASRec).
    """
    validate_config(cfg)  # ranges and allowed values, before anything is built
    with torch_threads(cfg.torch_threads):
        trainer = GeneratorTrainer(cfg, RunFolder(run), resume=resume, resume_id=resume_id, overwrite=overwrite,
                                   keep_saved_config=keep_saved_config, explicit_fields=explicit_fields,
                                   preset=preset)
        return trainer.train()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = parse_run_args(
        argv, GeneratorTrainConfig, prog="python -m sidrec.train.generator",
        description="Train the semantic-ID generator on RUN (needs RUN/dataset and RUN/tokenizer).",
        default_config="generator/hybrid",
    )
    with stage_lock(args.run, "generator"):  # a second `sidrec train` (or --resume) of this run refuses at once
        train_generator(args.config, args.run, resume=args.resume, resume_id=args.resume_id,
                        overwrite=args.overwrite, keep_saved_config=args.keep_saved_config,
                        explicit_fields=args.explicit_fields, preset=args.config_name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
