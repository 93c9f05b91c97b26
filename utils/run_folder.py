"""The run folder: its stages, what each one writes and depends on, the overwrite policy, and ``RunFolder``,
the one place that builds a run's paths and loads its stages with their provenance checks.

Policy: a stage whose output already exists refuses to run unless it is given ``--overwrite``; the
error says what is there and which later stages depend on it. ``sidrec prepare --overwrite`` into a
used folder then says which later stages no longer match the new dataset (their loaders refuse them
by provenance, see ``sidrec.utils.provenance``), and which still do when the data came out the same.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "LoadedGenerator", "RunFolder", "Stage", "check_item_table", "existing_outputs",
           "later_stages_present", "refuse_existing"]


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


class LoadedGenerator(NamedTuple):
    """A run's generator as inference needs it: the model, the settings it ranks with, and its tokenizer."""

    model: Any
    settings: Any  # sidrec.decoding.DecodingSettings
    tokenizer: Any  # sidrec.tokenizer.SemanticIdTokenizer


class RunFolder:
    """A run folder (``sidrec prepare --out RUN`` and every later stage) or a released recommender folder.

    The one place that knows where each stage's output lives and how to load it: ``dataset()``,
    ``tokenizer()``, ``generator()``, ``sasrec()``, each checked against what it was built from (the
    provenance records of ``sidrec.utils.provenance``) and against the folder's other stages. A released
    folder (``Recommender.save_pretrained``: no ``dataset/``) skips the dataset checks. The stage packages
    are imported when a loader is called, so this module stays below them all.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------------
    dataset_dir = property(lambda self: self.root / "dataset")
    catalog_file = property(lambda self: self.root / "catalog.jsonl")
    cache_dir = property(lambda self: self.root / "cache")
    tokenizer_dir = property(lambda self: self.root / "tokenizer")
    generator_dir = property(lambda self: self.root / "generator")
    generator_state_dir = property(lambda self: self.root / "generator_state")
    generator_cache_dir = property(lambda self: self.root / "generator_cache")
    sasrec_dir = property(lambda self: self.root / "baselines" / "sasrec")
    eval_dir = property(lambda self: self.root / "eval")
    fusion_file = property(lambda self: self.root / "fusion.json")  # generator + SASRec, chosen on VALID
    tensorboard_dir = property(lambda self: self.root / "tensorboard")

    def rerun(self, stage: str) -> str:
        """The command that rebuilds ``stage`` here (``STAGES``)."""
        return STAGES[stage].rerun(self.root)

    @property
    def has_dataset(self) -> bool:
        return (self.dataset_dir / "stats.json").is_file()

    def dataset_fingerprint(self) -> str | None:
        """The prepared dataset's fingerprint (``dataset/stats.json``); None for a folder without one."""
        from sidrec.utils.provenance import run_dataset_fingerprint

        return run_dataset_fingerprint(self.root)

    # -- loaders ------------------------------------------------------------------------------
    def dataset(self):
        """``dataset/`` (``sidrec.data.PreparedDataset``; its own load checks counts and fingerprint)."""
        from sidrec.data import PreparedDataset

        return PreparedDataset.load(self.root)

    def tokenizer(self, *, item_ids: Sequence[str] | None = None, dataset_fingerprint: str | None = None):
        """``tokenizer/``, checked against the dataset it records (``dataset_fingerprint``, else the folder's
        own) and, when given, the dataset's items (``item_ids``: same ids, same order)."""
        from sidrec.tokenizer.semantic_ids import SemanticIdTokenizer
        from sidrec.utils.provenance import check_dataset

        if not self.tokenizer_dir.is_dir():
            raise ValueError(f"{self.tokenizer_dir} not found; fit the tokenizer first: sidrec tokenize --run {self.root}")
        tokenizer = SemanticIdTokenizer.from_pretrained(self.tokenizer_dir)
        actual = dataset_fingerprint if dataset_fingerprint is not None else self.dataset_fingerprint()
        check_dataset(tokenizer.dataset_fingerprint, actual, stage=str(self.tokenizer_dir),
                      dataset=str(self.dataset_dir), fix=self.rerun("tokenize"))
        if item_ids is not None and list(tokenizer.item_ids) != list(item_ids):
            raise ValueError(
                f"{self.tokenizer_dir} was fitted on another catalog than {self.dataset_dir} ({len(tokenizer.item_ids)} "
                f"vs {len(item_ids)} items, or another order); refit it: {self.rerun('tokenize')}"
            )
        return tokenizer

    def generator(self, *, tokenizer=None, item_ids: Sequence[str] | None = None,
                  dataset_fingerprint: str | None = None) -> LoadedGenerator:
        """``generator/`` (any family) with its ``DecodingSettings`` and the tokenizer it was trained on.

        ``tokenizer``: an already loaded one (else ``tokenizer(item_ids=...)``). Checks the generator's recorded
        dataset and semantic-ID table (rows appended later by ``add_items`` are fine) and, for a generator
        that carries its own item table, that the table holds the tokenizer's codes.
        """
        from sidrec.decoding.settings import DecodingSettings
        from sidrec.seqmodel import load_generator

        actual = dataset_fingerprint if dataset_fingerprint is not None else self.dataset_fingerprint()
        if tokenizer is None:
            tokenizer = self.tokenizer(item_ids=item_ids, dataset_fingerprint=actual)
        model = load_generator(self.generator_dir)
        self._check_generator(model, tokenizer, actual)
        settings = DecodingSettings.load(self.generator_dir, legacy_config=model.config)
        return LoadedGenerator(settings.apply_to(model), settings, tokenizer)

    def sasrec(self, *, dataset_fingerprint: str | None = None):
        """``baselines/sasrec/`` (``sidrec.seqmodel.sasrec.SASRec``), checked against the dataset it records."""
        from sidrec.seqmodel.sasrec import SASRec
        from sidrec.utils.provenance import check_dataset

        if not (self.sasrec_dir / "model.safetensors").is_file():
            raise ValueError(f"{self.sasrec_dir} holds no trained SASRec; run `{self.rerun('sasrec')}` first")
        model = SASRec.from_pretrained(self.sasrec_dir)
        actual = dataset_fingerprint if dataset_fingerprint is not None else self.dataset_fingerprint()
        check_dataset((model.provenance or {}).get("dataset_fingerprint"), actual, stage=str(self.sasrec_dir),
                      dataset=str(self.dataset_dir), fix=self.rerun("sasrec"))
        return model

    # -- checks -------------------------------------------------------------------------------
    def check_training_inputs(self, recorded: dict[str, Any], *, dataset_fingerprint: str, tokenizer,
                              where: str, fix: str) -> None:
        """A training run's recorded inputs (``run.json`` ``inputs``) against this folder's dataset and table."""
        from sidrec.utils.provenance import check_dataset, check_table

        check_dataset(recorded.get("dataset_fingerprint"), dataset_fingerprint, stage=where,
                      dataset=str(self.dataset_dir), fix=fix)
        check_table(recorded.get("semantic_ids"), tokenizer.item_ids, tokenizer.codes, recorded_by=where,
                    table=str(self.tokenizer_dir), fix=f"the tokenizer was refitted since the run started; {fix}")

    def _check_generator(self, model, tokenizer, dataset_fingerprint: str | None) -> None:
        """The generator's recorded inputs against the tokenizer's table and the dataset; its own item table
        (item-level families) against the tokenizer's codes."""
        from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR, check_dataset, check_table

        rerun = self.rerun("train")
        record = getattr(model.config, GENERATOR_PROVENANCE_ATTR, None)
        if not isinstance(record, dict):
            logger.warning("%s records no provenance (trained by an older sidrec): its semantic IDs are not checked "
                           "against %s", self.generator_dir, self.tokenizer_dir)
        else:
            check_dataset(record.get("dataset_fingerprint"), dataset_fingerprint, stage=str(self.generator_dir),
                          dataset=str(self.dataset_dir), fix=rerun)
            check_table(record.get("semantic_ids"), tokenizer.item_ids, tokenizer.codes,
                        recorded_by=f"{self.generator_dir}/config.json", table=f"{self.tokenizer_dir}/semantic_ids.tsv",
                        fix=f"retrain the generator on this tokenizer (`{rerun}`) or restore the tokenizer it was "
                            "trained with", exact=False)
        check_item_table(model, tokenizer.codes, where=str(self.root))


def check_item_table(model, codes: np.ndarray, *, where: str) -> None:
    """A generator that carries its own item table (item-level families) must hold the tokenizer's codes.

    A refitted tokenizer gives other codes to the same items; the generator would then read and
    generate IDs that mean something else. ``ValueError`` naming the fix.
    """
    own = getattr(model, "item_codes", None)
    if own is None:
        return
    if own.shape != np.shape(codes) or not np.array_equal(own, codes):
        raise ValueError(
            f"{where}: the generator was trained on other semantic IDs than the tokenizer now holds "
            f"({own.shape[0]} vs {len(codes)} items, codes differ); retrain the generator "
            "(`sidrec train --run RUN`) after refitting the tokenizer"
        )
