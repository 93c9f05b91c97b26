"""``sidrec quickstart``: the whole pipeline on the bundled Beauty data, on a laptop CPU.

prepare -> train SASRec -> tokenize -> train the generator (the ``hybrid`` preset: it wins on VALID at this
budget) -> evaluate (test split, with baselines; with a generator that scores the whole catalog, the default
included, also fused with SASRec) -> a few sample recommendations, in under 30 minutes on 2 CPU cores (see the README's Results for
the measured time). SASRec runs before the tokenizer so that codes can carry its collaborative signal
(``--tokenizer-args "--cf-from baselines/sasrec"``, what the ``parallel`` family uses). The generator and SASRec
train on step and epoch budgets measured on an idle machine (``--generator-steps``, ``--sasrec-epochs``; SASRec
also stops by its patience), with minutes only as caps that are logged when they cut a run short: the same
command on a busy machine gives the same models, later.
Each stage is the same function its own command runs, so every step can be re-run or resumed alone;
the summary at the end says where each artefact is. A used ``--out`` folder is refused before anything
runs (it lists what is there): ``--overwrite`` redoes every stage in it, ``--skip`` keeps some.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import time
from pathlib import Path

from sidrec.utils.run_folder import RunFolder

logger = logging.getLogger(__name__)

STAGES = ("prepare", "sasrec", "tokenize", "generator", "evaluate", "samples")
#: the quickstart's models: the generator family that wins on VALID at the quickstart's budget (README
#: "Results": hybrid over parallel, 2026-12-04); for the parallel family pass --tokenizer-config tokenizer/opq
#: --tokenizer-args "--cf-from baselines/sasrec" --generator-config generator/parallel
QUICKSTART_TOKENIZER = "tokenizer/rqvae"
QUICKSTART_TOKENIZER_ARGS: tuple[str, ...] = ()
QUICKSTART_GENERATOR = "generator/hybrid"
#: budgets in steps and epochs (reproducible on a busy machine), with minutes only as caps (see --help). The
#: generator's steps depend on its preset: what the README's measured idle run of that preset made (hybrid: 3,200
#: steps in 10.7 training minutes; parallel: 5,000 in 12.9, its steps are cheaper and it learns later); presets
#: not listed get the hybrid's.
QUICKSTART_GENERATOR_STEPS = 3200
QUICKSTART_STEPS_BY_PRESET = {"generator/hybrid": 3200, "generator/parallel": 5000}
QUICKSTART_GENERATOR_CAP = 30.0
QUICKSTART_SASREC_EPOCHS = 20
QUICKSTART_SASREC_CAP = 15.0
#: quickstart stage -> the run-folder stage whose outputs it writes (``sidrec.utils.run_folder``)
RUN_FOLDER_STAGE = {"prepare": "prepare", "tokenize": "tokenize", "generator": "train", "sasrec": "sasrec",
                    "evaluate": "evaluate"}


def generator_steps(preset: str, steps: int | None = None) -> int:
    """The generator's step budget: ``steps`` when given (``--generator-steps``), else ``preset``'s measured one."""
    return int(steps) if steps is not None else QUICKSTART_STEPS_BY_PRESET.get(preset, QUICKSTART_GENERATOR_STEPS)


def check_fresh(run: Path, stages: list[str]) -> None:
    """``ValueError`` listing the outputs the planned ``stages`` would replace in ``run`` (if any)."""
    from sidrec.utils.run_folder import existing_outputs

    found = [f"{path} ({name})" for name in stages if name in RUN_FOLDER_STAGE
             for path in existing_outputs(run, RUN_FOLDER_STAGE[name])]
    states = RunFolder(run).generator_state_dir
    if "generator" in stages and states.is_dir() and any(states.iterdir()):
        found.append("generator_state/ (generator)")
    if found:
        raise ValueError(
            f"{run} is a used run folder: {', '.join(found)}. Pass --overwrite to redo those stages (saved "
            f"generator states are kept), --skip STAGES to keep some of them, or --out a new folder"
        )


def _stage(name: str, fn, *args) -> float:
    logger.info("==> %s", name)
    t0 = time.perf_counter()
    rc = fn(*args)
    if rc:
        raise SystemExit(f"quickstart: stage {name!r} failed (exit code {rc}); see the log above")
    took = time.perf_counter() - t0
    logger.info("<== %s done in %.1f min", name, took / 60)
    return took


def _prepare(run: Path, dataset: str, overwrite: bool) -> int:
    from sidrec.cli import cmd_prepare

    return cmd_prepare(["--dataset", dataset, "--out", str(run), *(["--overwrite"] if overwrite else [])])


def _samples(run: Path, n: int) -> int:
    from sidrec.api import Recommender
    from sidrec.data import PreparedDataset

    rec = Recommender.from_pretrained(run)
    dataset = PreparedDataset.load(run)
    test = dataset.eval_split("test")
    for u in range(n):
        history = [dataset.item_ids[i] for i in test.histories[u]]
        print(f"\nuser {dataset.user_ids[u]}: last items")
        for iid in history[-3:]:
            print(f"    {iid:>8}  {rec.titles[rec.tokenizer.index_of(iid)] or '(no title)'}")
        target = dataset.item_ids[int(test.targets[u])]
        print(f"  held-out next item: {target}  {rec.titles[rec.tokenizer.index_of(target)]}")
        print("  recommended:")
        for r in rec.recommend(history, k=5):
            hit = "  <- held-out item" if r.item_id == target else ""
            print(f"    {r.item_id:>8}  {r.score:7.2f}  {r.title or '(no title)'}{hit}")
    return 0


def _summary(run: Path, seconds: dict[str, float]) -> None:
    metrics_file = RunFolder(run).eval_dir / "metrics.json"
    print("\n" + "=" * 72)
    if metrics_file.is_file():
        report = json.loads(metrics_file.read_text())
        rows = [("sidrec generator", report.get("metrics"))]
        rows += [(name, block.get("metrics")) for name, block in report.get("generator_variants", {}).items()]
        rows += [(name, block.get("metrics")) for name, block in report.get("baselines", {}).items()]
        keys = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr", "invalid_rate", "coverage")
        width = max(18, *(len(name) + 1 for name, _ in rows))
        print(f"{'test split':<{width}}" + "".join(f"{k:>13}" for k in keys))
        for name, m in rows:
            if m:
                print(f"{name:<{width}}" + "".join(f"{m.get(k, float('nan')):>13.4f}" for k in keys))
    print("\nartefacts:")
    for label, path in (("prepared data", "dataset"), ("catalog", "catalog.jsonl"), ("tokenizer", "tokenizer"),
                        ("generator", "generator"), ("SASRec baseline", "baselines/sasrec"),
                        ("metrics", "eval/metrics.json"), ("report", "eval/report.md"),
                        ("plot", "eval/recall_at_k.png")):
        if (run / path).exists():
            print(f"  {label:<16} {run / path}")
    total = sum(seconds.values())
    print("\ntime: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + f"; total {total / 60:.1f} min")
    print(f"\nnext: sidrec recommend --run {run} --history ID,ID,...   |   python -c \"import sidrec; "
          f"r = sidrec.Recommender.from_pretrained('{run}')\"")


def _fuse_args(generator_config: str, skip: set[str]) -> list[str]:
    """``--fuse sasrec`` when the generator scores the whole catalog (the parallel family, or a dense head: the
    hybrid default) and SASRec is trained."""
    from sidrec.train.generator_config import GeneratorTrainConfig
    from sidrec.utils import load_config

    cfg = load_config(GeneratorTrainConfig, generator_config)
    whole = cfg.family == "parallel" or (cfg.family == "item" and cfg.dense_head)
    return ["--fuse", "sasrec"] if whole and "sasrec" not in skip else []


def _plan(args: argparse.Namespace, run: Path, skip: set[str]) -> dict[str, tuple]:
    """Each stage's function and arguments, in the order they run (``STAGES``)."""
    from sidrec.eval import evaluate
    from sidrec.train import generator, sasrec, tokenizer

    again = ["--overwrite"] if args.overwrite else []
    steps = generator_steps(args.generator_config, args.generator_steps)
    baselines = "popularity,knn,knn-last" + ("" if "sasrec" in skip else ",sasrec")
    plan = {
        "prepare": (_prepare, run, args.dataset, args.overwrite),
        "sasrec": (sasrec.main, ["--run", str(run), "--epochs", str(args.sasrec_epochs), "--max-minutes",
                                 str(args.sasrec_minutes), *again]),
        "tokenize": (tokenizer.main, ["--run", str(run), "--config", args.tokenizer_config,
                                      *shlex.split(args.tokenizer_args), *again]),
        "generator": (generator.main, ["--run", str(run), "--config", args.generator_config, "--max-steps",
                                       str(steps), "--max-minutes", str(args.generator_minutes), *again]),
        "evaluate": (evaluate.main, ["--run", str(run), "--split", "test", "--baselines", baselines,
                                     *_fuse_args(args.generator_config, skip), *again]),
        "samples": (_samples, run, args.samples),
    }
    return {name: plan[name] for name in STAGES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sidrec quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="run folder (default runs/quickstart)")
    p.add_argument("--dataset", default="beauty", help="bundled name or dataset folder (default beauty)")
    p.add_argument("--tokenizer-config", default=QUICKSTART_TOKENIZER, help="tokenizer preset or YAML")
    p.add_argument("--tokenizer-args", default=" ".join(QUICKSTART_TOKENIZER_ARGS),
                   help="extra `sidrec tokenize` flags, e.g. '--cf-from baselines/sasrec' (codes that carry SASRec's "
                        "item vectors, for the parallel family)")
    p.add_argument("--generator-config", default=QUICKSTART_GENERATOR, help="generator preset or YAML")
    p.add_argument("--generator-steps", type=int, default=None,
                   help="generator training budget in optimiser steps (default: the preset's measured budget, "
                        f"{QUICKSTART_STEPS_BY_PRESET}, else {QUICKSTART_GENERATOR_STEPS}: what the README's idle run "
                        "made in its minutes); the same steps give the same model on a busy machine, later")
    p.add_argument("--generator-minutes", type=float, default=QUICKSTART_GENERATOR_CAP,
                   help=f"a cap on the generator's training minutes (validation excluded; default "
                        f"{QUICKSTART_GENERATOR_CAP:g}), logged when it cuts the step budget short")
    p.add_argument("--sasrec-epochs", type=int, default=QUICKSTART_SASREC_EPOCHS,
                   help=f"SASRec's epoch budget (default {QUICKSTART_SASREC_EPOCHS}; it also stops by its patience)")
    p.add_argument("--sasrec-minutes", type=float, default=QUICKSTART_SASREC_CAP,
                   help=f"a cap on SASRec's training minutes (default {QUICKSTART_SASREC_CAP:g}), logged when it cuts "
                        "the epoch budget short")
    p.add_argument("--skip", default="", help=f"comma-separated stages to skip (of {', '.join(STAGES)})")
    p.add_argument("--samples", type=int, default=3, help="users to show sample recommendations for")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the stages whose outputs already exist in --out (default: refuse a used folder)")
    args = p.parse_args(argv)
    run = Path(args.out)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(STAGES):
        raise ValueError(f"unknown stage(s) in --skip: {sorted(skip - set(STAGES))}; stages: {', '.join(STAGES)}")
    if not args.overwrite:
        check_fresh(run, [s for s in STAGES if s not in skip])
    plan = _plan(args, run, skip)
    seconds = {name: _stage(name, fn, *fn_args) for name, (fn, *fn_args) in plan.items() if name not in skip}
    _summary(run, seconds)
    return 0
