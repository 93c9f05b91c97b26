"""Training runs and their saved states: one folder per run id, never shared between runs.

``RUN/<stage>_state/<run_id>/`` holds one training run: ``run.json`` (when it started, its config, the
fingerprints of its inputs, each resume) and its ``step-N/`` states (accelerate ``save_state`` +
``progress.json``, written last). A run id is the UTC start time plus a random suffix
(``20260314-091502-a3f9c1``), so ids sort by start time. A new run only ever writes and prunes inside
its own folder; ``--resume`` continues the newest run, or the one named (``--resume RUN_ID``), and only
after checking that its config and inputs match (``plan_resume``).

States written before run ids existed (``step-N/`` straight under the state folder) form one run with
the id ``legacy``; they can be resumed (without a config check: they recorded none) and are never
pruned by another run.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sidrec.train.common import latest_state
from sidrec.utils import atomic_write_json, config_to_dict, read_json, validate_config

logger = logging.getLogger(__name__)

__all__ = ["LEGACY_RUN_ID", "RUN_META", "TrainingPlan", "TrainingRun", "config_differences", "list_training_runs",
           "new_run_id", "plan_new_run", "plan_resume", "write_run_meta"]

RUN_META = "run.json"
LEGACY_RUN_ID = "legacy"


def new_run_id() -> str:
    """UTC start time plus 6 random hex digits: unique, and sorted by start time (to the second)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _now() -> str:
    """UTC time to the microsecond (``run.json`` ``started``: orders runs started within one second)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class TrainingRun:
    """One training run's state folder."""

    run_id: str
    folder: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def latest(self) -> Path | None:
        """Its newest complete state (a ``step-N`` folder with ``progress.json``), or None."""
        return latest_state(self.folder)

    def describe(self) -> str:
        state = self.latest
        return f"{self.run_id} ({'last state ' + state.name if state else 'no saved state'})"


def list_training_runs(state_root: str | Path) -> list[TrainingRun]:
    """Every run under ``state_root``, oldest first (``legacy`` first of all)."""
    root = Path(state_root)
    if not root.is_dir():
        return []
    runs = []
    if latest_state(root) is not None:
        runs.append(TrainingRun(LEGACY_RUN_ID, root, {}))
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / RUN_META).is_file()):
        meta = read_json(folder / RUN_META, fix=f"delete {folder} if that run is no longer needed")
        runs.append(TrainingRun(folder.name, folder, meta if isinstance(meta, dict) else {}))
    return runs


@dataclass
class TrainingPlan:
    """What a training command will do: which run id, where its states go, where it resumes from."""

    run_id: str
    state_dir: Path
    cfg: Any
    meta: dict[str, Any]
    resume_from: Path | None = None
    #: the model folder holds this run's best model (False: the next validation must save one, whatever
    #: the run's best score so far, so that the folder and training.json describe this run)
    keeps_best: bool = True


def write_run_meta(plan: TrainingPlan) -> None:
    """Write ``run.json`` of the plan's run (main process only)."""
    atomic_write_json(plan.state_dir / RUN_META, plan.meta)


def config_differences(saved: dict[str, Any], cfg: Any) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, new value)}`` for every field of ``cfg`` that differs from ``saved``.

    A field ``saved`` lacks (added to sidrec since) is compared with the field's default.
    """
    out = {}
    now = config_to_dict(cfg)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                for f in dataclasses.fields(cfg)}
    for name, value in now.items():
        before = saved.get(name, defaults.get(name))
        if _normal(before) != _normal(value):
            out[name] = (before, value)
    return out


def _normal(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def plan_new_run(
    state_root: Path, cfg: Any, *, model_dir: Path, overwrite: bool, inputs: dict[str, Any], resume_hint: str,
    run_id: str,
) -> TrainingPlan:
    """A new run (id ``run_id``); refuses, without ``overwrite``, when ``model_dir`` or other runs' states exist.

    The other runs' states are never touched: each run prunes only its own folder.
    """
    if not overwrite:
        if model_dir.exists():
            raise ValueError(
                f"{model_dir} already holds a trained model{_model_summary(model_dir)}. Pass --overwrite to train a "
                f"new one in its place, {resume_hint} to continue the run that made it, or use another run folder"
            )
        resumable = [r for r in list_training_runs(state_root) if r.latest is not None]
        if resumable:
            raise ValueError(
                f"{state_root} holds the saved states of {', '.join(r.describe() for r in resumable)}. Continue with "
                f"{resume_hint} [RUN_ID], or start a new run with --overwrite (their states are kept)"
            )
    meta = {"run_id": run_id, "started": _now(),
            "config": config_to_dict(cfg), "inputs": inputs, "resumes": []}
    return TrainingPlan(run_id=run_id, state_dir=state_root / run_id, cfg=cfg, meta=meta)


def plan_resume(
    state_root: Path, cfg: Any, *, run_id: str | None, model_dir: Path, overwrite: bool, inputs: dict[str, Any],
    free_fields: Collection[str], keep_saved_config: bool, check_inputs: Callable[[dict[str, Any], str], None],
    restart: str, explicit_fields: Collection[str] | None = None,
) -> TrainingPlan:
    """Continue run ``run_id`` (None or ``"latest"``: the newest run) from its newest state.

    Checks, each an error naming the fix: the run exists and has a state; its recorded inputs match
    ``inputs`` (``check_inputs(recorded, run_id)``); its config equals ``cfg`` except in ``free_fields``
    (budgets, logging); and ``model_dir`` does not hold another run's model (unless ``overwrite``).
    With ``keep_saved_config`` the saved values replace every differing field, except free fields in
    ``explicit_fields`` (those given on the command line; None = all of ``cfg`` was given explicitly).
    """
    runs = list_training_runs(state_root)
    chosen, state = _choose_run(runs, run_id, state_root=state_root, restart=restart)
    if chosen.run_id == LEGACY_RUN_ID:
        logger.warning("resuming states saved before run ids existed (%s): their config was not recorded, so it is "
                       "not checked; pass the same settings as before", chosen.folder)
        meta = {"run_id": LEGACY_RUN_ID, "config": config_to_dict(cfg), "inputs": inputs, "resumes": []}
    else:
        meta = dict(chosen.meta)
        check_inputs(meta.get("inputs") or {}, chosen.run_id)
        cfg, free = _resume_config(chosen, cfg, free_fields=free_fields, keep_saved_config=keep_saved_config,
                                   explicit_fields=explicit_fields, restart=restart)
        meta["config"] = config_to_dict(cfg)
        meta.setdefault("resumes", []).append({
            "at": _now(), "from": state.name,
            "changed": {k: [a, b] for k, (a, b) in free.items()},
        })
    keeps_best = _check_model_owner(model_dir, chosen.run_id, overwrite=overwrite)
    return TrainingPlan(run_id=chosen.run_id, state_dir=chosen.folder, cfg=cfg, meta=meta, resume_from=state,
                        keeps_best=keeps_best)


def _choose_run(runs: list[TrainingRun], run_id: str | None, *, state_root: Path,
                restart: str) -> tuple[TrainingRun, Path]:
    """The run ``plan_resume`` continues (None or ``"latest"``: the newest) and its newest state.

    Errors naming the fix when there is no run, no such run, or the run has no saved state yet.
    """
    if not runs:
        raise ValueError(f"--resume: no saved state under {state_root}; start without --resume")
    if run_id in (None, "latest"):
        chosen = max(runs, key=lambda r: (r.run_id != LEGACY_RUN_ID, r.meta.get("started", ""), r.run_id))
    else:
        by_id = {r.run_id: r for r in runs}
        if run_id not in by_id:
            raise ValueError(f"--resume {run_id}: no such run under {state_root}; runs: "
                             f"{', '.join(r.describe() for r in runs)}")
        chosen = by_id[run_id]
    state = chosen.latest
    if state is None:
        others = [r.describe() for r in runs if r is not chosen and r.latest is not None]
        hint = f"; resume another run by id: --resume RUN_ID, one of {', '.join(others)}" if others else ""
        raise ValueError(f"--resume: run {chosen.run_id}, the {'newest' if run_id in (None, 'latest') else 'named'} "
                         f"run, has no saved state yet; {restart}{hint}")
    return chosen, state


def _resume_config(
    chosen: TrainingRun, cfg: Any, *, free_fields: Collection[str], keep_saved_config: bool,
    explicit_fields: Collection[str] | None, restart: str,
) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    """The config to resume ``chosen`` with, and the free fields that changed (``{field: (saved, new)}``).

    A differing field that is not free is an error, or with ``keep_saved_config`` takes its saved value
    (as do free fields not in ``explicit_fields``); see ``plan_resume``.
    """
    diffs = config_differences(chosen.meta.get("config") or {}, cfg)
    fixed = {k: v for k, v in diffs.items() if k not in free_fields}
    if keep_saved_config and explicit_fields is not None:  # unnamed budgets: the run's own, too
        fixed.update({k: v for k, v in diffs.items() if k in free_fields and k not in explicit_fields})
    if fixed and not keep_saved_config:
        lines = "\n".join(f"  {k}: saved {a!r}, now {b!r}" for k, (a, b) in fixed.items())
        raise ValueError(
            f"--resume: run {chosen.run_id} was started with other settings, and its saved weights, optimiser "
            f"and schedule depend on them:\n{lines}\nResume with the saved values (add --keep-saved-config), "
            f"or {restart}"
        )
    if fixed:
        logger.warning("--keep-saved-config: using run %s's saved %s", chosen.run_id,
                       ", ".join(f"{k}={a!r} (not {b!r})" for k, (a, b) in fixed.items()))
        cfg = dataclasses.replace(cfg, **{k: a for k, (a, _) in fixed.items()})
        validate_config(cfg)
    free = {k: v for k, v in diffs.items() if k not in fixed}
    if free:
        logger.info("resume: changed %s", ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in free.items()))
    return cfg, free


def _check_model_owner(model_dir: Path, run_id: str, *, overwrite: bool) -> bool:
    """Refuse (unless ``overwrite``) when ``model_dir`` holds another run's model; returns whether the
    resumed run keeps the best model already there (its own, or one from before run ids)."""
    exists = (model_dir / "config.json").is_file()
    owner = _model_run_id(model_dir)
    if exists and owner is not None and owner != run_id and not overwrite:
        raise ValueError(
            f"{model_dir} holds the model of run {owner}, not of run {run_id}; resuming would replace it. "
            f"Pass --overwrite to allow that, or resume run {owner}"
        )
    return exists and owner in (None, run_id)  # None: a model from before run ids, kept as before


def _model_run_id(model_dir: Path) -> str | None:
    """The training run id a model folder records (None: no folder, or written before run ids)."""
    from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR

    config = model_dir / "config.json"
    if not config.is_file():
        return None
    raw = read_json(config)
    record = raw.get(GENERATOR_PROVENANCE_ATTR) if isinstance(raw, dict) else None
    return record.get("train_run_id") if isinstance(record, dict) else None


def _model_summary(model_dir: Path) -> str:
    log = model_dir / "training.json"
    if not log.is_file():
        return " (its training did not finish: no training.json)"
    try:
        data = read_json(log)
        return (f" (run {data.get('run_id', '?')}: {data.get('steps')} steps, best valid ndcg@10 "
                f"{data.get('best_ndcg@10', float('nan')):.4f} at step {data.get('best_step')})")
    except (ValueError, TypeError, AttributeError):
        return ""
