"""The run folder's stages, what each one writes, what depends on it, and the overwrite policy.

Policy: a stage whose output already exists refuses to run unless it is given ``--overwrite``; the
error says what is there and which later stages depend on it. ``sidrec prepare --overwrite`` into a
used folder then says which later stages no longer match the new dataset (their loaders refuse them
by provenance, see ``sidrec.utils.provenance``), and which still do when the data came out the same.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STAGES", "Stage", "existing_outputs", "later_stages_present", "refuse_existing"]


class Stage:
    """One stage: its command, the paths it writes (relative to RUN) and the stages built on it."""

    def __init__(self, name: str, command: str, outputs: tuple[str, ...], later: tuple[str, ...]) -> None:
        self.name = name
        self.command = command
        self.outputs = outputs
        self.later = later

    def rerun(self, run: str | os.PathLike) -> str:
        """The command line that rebuilds this stage in ``run``."""
        return self.command.format(run=run)


STAGES: dict[str, Stage] = {
    "prepare": Stage("prepare", "sidrec prepare --dataset DATASET --out {run} --overwrite",
                     ("dataset", "catalog.jsonl"), ("tokenize", "train", "sasrec", "evaluate")),
    "tokenize": Stage("tokenize", "sidrec tokenize --run {run} --overwrite", ("tokenizer",), ("train", "evaluate")),
    "train": Stage("train", "sidrec train --run {run} --overwrite", ("generator",), ("evaluate",)),
    "sasrec": Stage("sasrec", "sidrec sasrec --run {run} --overwrite", ("baselines/sasrec",), ("evaluate",)),
    "evaluate": Stage("evaluate", "sidrec evaluate --run {run} --overwrite", ("eval/metrics.json",), ()),
}

#: outputs that belong to a stage without being its result (kept on overwrite, listed as dependants)
EXTRA_OUTPUTS = {"train": ("generator_state",)}


def existing_outputs(run: str | os.PathLike, stage: str) -> list[str]:
    """The stage's outputs (relative paths) that exist in ``run``."""
    run = Path(run)
    return [p for p in STAGES[stage].outputs if (run / p).exists()]


def later_stages_present(run: str | os.PathLike, stage: str) -> list[str]:
    """Outputs of the stages built on ``stage`` (transitively) that exist in ``run``, as ``'path/ (stage)'``."""
    run = Path(run)
    seen: list[str] = []
    todo = list(STAGES[stage].later)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        todo += STAGES[name].later
    found = []
    for name in seen:
        for p in (*STAGES[name].outputs, *EXTRA_OUTPUTS.get(name, ())):
            if (run / p).exists():
                found.append(f"{p}{'/' if (run / p).is_dir() else ''} ({name})")
    return found


def refuse_existing(run: str | os.PathLike, stage: str, *, overwrite: bool, outputs: list[str] | None = None) -> list[str]:
    """``ValueError`` when the stage's outputs exist in ``run`` and ``overwrite`` is false.

    ``outputs`` replaces the stage's default paths (e.g. ``evaluate --out DIR``). Returns the existing
    outputs (empty for a fresh folder), so a caller given ``overwrite`` can say what it replaces.
    """
    run = Path(run)
    paths = outputs if outputs is not None else STAGES[stage].outputs
    found = [p for p in paths if (run / p).exists()]
    if found and not overwrite:
        later = later_stages_present(run, stage)
        depends = f"; built on it: {', '.join(later)}" if later else ""
        raise ValueError(
            f"{run} already holds the output of `sidrec {stage}` ({', '.join(found)}){depends}. Pass --overwrite "
            f"to replace it, or use another run folder"
        )
    return found
