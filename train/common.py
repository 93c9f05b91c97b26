"""Skeleton shared by the ``sidrec.train.<stage>`` entry points.

Every stage is started as ``python -m sidrec.train.<stage> --run RUN [--config PRESET] [--resume]
[--field value ...]`` or the same under ``accelerate launch``. This module parses that command line
into a typed config, builds the ``Accelerator`` (mixed precision, gradient accumulation, seeding),
sets up logging so that only the main process talks at INFO level, and finds the latest saved state.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sidrec.utils import configure_logging, load_config, parse_overrides

logger = logging.getLogger(__name__)

__all__ = [
    "LengthGroupedBatchSampler",
    "RunArgs",
    "budget_progress",
    "cooldown_factor",
    "latest_state",
    "main_process_values",
    "make_accelerator",
    "parse_run_args",
    "prune_states",
    "setup_logging",
    "state_dir_name",
]

T = TypeVar("T")

_STATE_RE = re.compile(r"^step-(\d+)$")


@dataclass
class RunArgs:
    """What every stage's command line gives: the run folder, the typed config, whether to resume (which
    run: ``resume_id``, None = the newest), whether an existing output may be replaced, and whether a
    resumed run keeps its saved config where the command line differs."""

    run: Path
    config: Any
    config_name: str | None
    resume: bool
    resume_id: str | None = None
    overwrite: bool = False
    keep_saved_config: bool = False
    explicit_fields: frozenset[str] = frozenset()  # the fields given as --field value


def budget_progress(*, step: int, total_steps: int, train_seconds: float, max_seconds: float) -> float:
    """How much of the training budget is spent, in [0, 1]: the larger of the step and time fractions.

    ``total_steps`` 0 and ``max_seconds`` 0 mean no such budget. Learning-rate schedules that end with the
    budget (SASRec's ``lr_schedule: linear``, the generator's ``cooldown``) read it at every step.
    """
    fractions = [0.0]
    if total_steps:
        fractions.append(step / total_steps)
    if max_seconds:
        fractions.append(train_seconds / max_seconds)
    return min(1.0, max(fractions))


def cooldown_factor(progress: float, cooldown: float) -> float:
    """LR multiplier that falls linearly from 1 to 0 over the last ``cooldown`` fraction of the budget.

    The warm-up/stable/decay ("WSD") recipe: a run that anneals at the end of its budget scores
    better than one that stops at an arbitrary point of its schedule. ``cooldown`` 0 = always 1.
    """
    if cooldown <= 0:
        return 1.0
    return max(0.0, min(1.0, (1.0 - progress) / cooldown))


def main_process_values(accelerator, *values: float) -> list[float]:
    """The main process's values on every rank: decisions from wall-clock time must not split the ranks
    (one validating or stopping while another trains on would hang the next collective, and ranks
    stepping with different learning rates would drift apart)."""
    if accelerator.num_processes == 1:
        return [float(v) for v in values]
    import torch

    mine = [float(v) if accelerator.is_main_process else 0.0 for v in values]
    return accelerator.reduce(torch.tensor(mine, device=accelerator.device), reduction="sum").tolist()


def parse_run_args(
    argv: Sequence[str] | None, config_cls: type[T], *, prog: str, description: str, default_config: str | None
) -> RunArgs:
    """Parse ``--run RUN [--config NAME_OR_PATH] [--resume [RUN_ID]] [--overwrite] [--keep-saved-config]
    [--field value ...]``.

    Unknown ``--field`` names raise ``ValueError`` listing the valid fields of ``config_cls``.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog=f"Any field of {config_cls.__name__} can be overridden: --field value (e.g. --max-steps 20).",
    )
    parser.add_argument("--run", required=True, help="run folder (RUN/dataset must exist)")
    parser.add_argument("--config", default=default_config, help=f"preset name or YAML path (default {default_config})")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_ID",
                        help="continue the newest training run (or RUN_ID) from its latest saved state; the config "
                             "must match the saved one except budgets and logging. States hold pickles: resume only "
                             "from run folders you made")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this stage's existing output (other runs' saved states are kept)")
    parser.add_argument("--keep-saved-config", action="store_true",
                        help="with --resume: use the run's saved values for the fields that differ")
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    overrides = parse_overrides(config_cls, rest)
    cfg = load_config(config_cls, args.config, overrides)
    resume_id = None if args.resume in (None, "latest") else args.resume
    return RunArgs(run=Path(args.run), config=cfg, config_name=args.config, resume=args.resume is not None,
                   resume_id=resume_id, overwrite=args.overwrite, keep_saved_config=args.keep_saved_config,
                   explicit_fields=frozenset(overrides))


def setup_logging(accelerator: Any | None = None, level: int = logging.INFO) -> None:
    """INFO logs on the main process, warnings only elsewhere; one line format for all stages."""
    main = accelerator is None or accelerator.is_main_process
    rank = "" if accelerator is None or accelerator.num_processes == 1 else f"[rank {accelerator.process_index}] "
    configure_logging(level if main else logging.WARNING, prefix=rank, force=True)


def make_accelerator(
    *,
    seed: int,
    mixed_precision: str = "no",
    gradient_accumulation_steps: int = 1,
    split_batches: bool = True,
    tensorboard_dir: str | os.PathLike | None = None,
):
    """An ``Accelerator`` with a seedable sampler (reproducible shuffles, exact mid-epoch resume), seeded.

    ``split_batches=True`` makes a DataLoader's batch size the global batch, split over processes, so a
    preset means the same optimisation on 1 or N processes.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {mixed_precision!r}")
    kwargs: dict[str, Any] = {}
    if tensorboard_dir is not None:
        kwargs["log_with"] = "tensorboard"
        kwargs["project_config"] = ProjectConfiguration(project_dir=str(tensorboard_dir), logging_dir=str(tensorboard_dir))
    # Several processes without CUDA (accelerate launch --multi_gpu on a CPU machine): accelerate only
    # picks MULTI_CPU (gloo) when told cpu=True; otherwise each process would train alone.
    import torch

    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(
            split_batches=split_batches, use_seedable_sampler=True, data_seed=seed
        ),
        step_scheduler_with_optimizer=False,
        **kwargs,
    )
    set_seed(seed)
    return accelerator


def finish(accelerator) -> None:
    """End a run on every process: flush trackers, then tear down the process group together.

    Left to garbage collection, a gloo process group can hang in its destructor once the peer
    process has exited (seen with 2 CPU processes), so all ranks leave it at the same point.
    """
    import torch.distributed as dist

    accelerator.wait_for_everyone()
    accelerator.end_training()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def state_dir_name(step: int) -> str:
    """Folder name of the state saved after optimiser step ``step``."""
    return f"step-{step:08d}"


def _states(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STATE_RE.match(p.name))]
    return sorted(found)


def latest_state(root: str | os.PathLike) -> Path | None:
    """The newest complete ``root/step-N`` folder (one with ``progress.json``), or None."""
    complete = [p for _, p in _states(Path(root)) if (p / "progress.json").is_file()]
    return complete[-1] if complete else None


def prune_states(root: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` state folders under ``root``."""
    states = _states(Path(root))
    for _, path in states[: max(0, len(states) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


class LengthGroupedBatchSampler:
    """Shuffled batches of similar-length examples, so padding (and attention cost) stays small.

    Each epoch: a permutation seeded by ``(seed, epoch)``, cut into chunks of ``batch_size * group``
    examples; each chunk is sorted by length and cut into batches; the batch order is shuffled. Every
    example appears once per epoch, exactly as with a plain shuffle; only which examples share a batch
    changes. Deterministic given (seed, epoch), so ``skip_first_batches`` resumes mid-epoch exactly.
    """

    def __init__(self, *, lengths: Sequence[int], batch_size: int, seed: int, group: int = 50) -> None:
        import numpy as np

        if batch_size < 1 or group < 1:
            raise ValueError(f"batch_size and group must be >= 1, got {batch_size}, {group}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.drop_last = False
        self.seed = seed
        self.group = group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, chunk = len(self.lengths), self.batch_size * self.group
        full, rest = divmod(n, chunk)
        return full * self.group + -(-rest // self.batch_size)

    def __iter__(self):
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.group
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        for b in rng.permutation(len(batches)):
            yield batches[b]
