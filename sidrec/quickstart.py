"""``sidrec quickstart``: the whole pipeline on the bundled Beauty data, on a laptop CPU.

prepare -> tokenize -> train the generator -> train SASRec -> evaluate (test split, with baselines) ->
a few sample recommendations, in under 30 minutes on 2 CPU cores (see the README's Results for the measured
time): the generator (the ``hybrid`` preset) and SASRec train on time budgets (``--generator-minutes``,
``--sasrec-minutes``, training time without validation) and stop early when validation stalls.
Each stage is the same function its own command runs, so every step can be re-run or resumed alone;
the summary at the end says where each artefact is. A used ``--out`` folder is refused before anything
runs (it lists what is there): ``--overwrite`` redoes every stage in it, ``--skip`` keeps some.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STAGES = ("prepare", "tokenize", "generator", "sasrec", "evaluate", "samples")
#: quickstart stage -> the run-folder stage whose outputs it writes (``sidrec.utils.run_folder``)
RUN_FOLDER_STAGE = {"prepare": "prepare", "tokenize": "tokenize", "generator": "train", "sasrec": "sasrec",
                    "evaluate": "evaluate"}


def check_fresh(run: Path, stages: list[str]) -> None:
    """``ValueError`` listing the outputs the planned ``stages`` would replace in ``run`` (if any)."""
    from sidrec.utils.run_folder import existing_outputs

    found = [f"{path} ({name})" for name in stages if name in RUN_FOLDER_STAGE
             for path in existing_outputs(run, RUN_FOLDER_STAGE[name])]
    if "generator" in stages and (run / "generator_state").is_dir() and any((run / "generator_state").iterdir()):
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
    metrics_file = run / "eval" / "metrics.json"
    print("\n" + "=" * 72)
    if metrics_file.is_file():
        report = json.loads(metrics_file.read_text())
        rows = [("sidrec generator", report.get("metrics"))]
        rows += [(name, block.get("metrics")) for name, block in report.get("baselines", {}).items()]
        keys = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr", "invalid_rate", "coverage")
        print(f"{'test split':<18}" + "".join(f"{k:>13}" for k in keys))
        for name, m in rows:
            if m:
                print(f"{name:<18}" + "".join(f"{m.get(k, float('nan')):>13.4f}" for k in keys))
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


def main(argv: list[str] | None = None) -> int:
    from sidrec.eval import evaluate
    from sidrec.train import generator, sasrec, tokenizer

    p = argparse.ArgumentParser(prog="sidrec quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="run folder (default runs/quickstart)")
    p.add_argument("--dataset", default="beauty", help="bundled name or dataset folder (default beauty)")
    p.add_argument("--tokenizer-config", default="tokenizer/rqvae", help="tokenizer preset or YAML")
    p.add_argument("--generator-config", default="generator/hybrid", help="generator preset or YAML")
    p.add_argument("--generator-minutes", type=float, default=14.0,
                   help="generator training budget in minutes (validation excluded; default 14)")
    p.add_argument("--sasrec-minutes", type=float, default=6.0,
                   help="SASRec training budget in minutes (validation excluded; stops after the epoch that "
                        "crosses it; default 6: on Beauty its best valid epoch came at 4 min)")
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
    again = ["--overwrite"] if args.overwrite else []
    baselines = "popularity,knn,knn-last" + ("" if "sasrec" in skip else ",sasrec")
    plan = {
        "prepare": (_prepare, run, args.dataset, args.overwrite),
        "tokenize": (tokenizer.main, ["--run", str(run), "--config", args.tokenizer_config, *again]),
        "generator": (generator.main, ["--run", str(run), "--config", args.generator_config,
                                       "--max-minutes", str(args.generator_minutes), *again]),
        "sasrec": (sasrec.main, ["--run", str(run), "--max-minutes", str(args.sasrec_minutes), *again]),
        "evaluate": (evaluate.main, ["--run", str(run), "--split", "test", "--baselines", baselines, *again]),
        "samples": (_samples, run, args.samples),
    }
    seconds = {name: _stage(name, fn, *fn_args) for name, (fn, *fn_args) in plan.items() if name not in skip}
    _summary(run, seconds)
    return 0
