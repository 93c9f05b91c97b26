"""Quality per CPU minute: SASRec, the TIGER-style ``cpu-small`` generator, the ``hybrid`` item-level generator
and the ``parallel`` generator (long IDs, exact ranking), trained on the same budget on one machine in one run.

    python benchmarks/quality_per_minute.py --run runs/beauty [--minutes 5,10,20] [--threads 2] [--test]
    python benchmarks/quality_per_minute.py --run runs/beauty --minutes 60 --models sasrec,parallel  # 60 minutes

The beam families use ``RUN/tokenizer``; ``parallel`` uses ``--long-tokenizer`` (a tokenizer folder with long
IDs, e.g. the quickstart's: ``sidrec tokenize --config tokenizer/opq --cf-from baselines/sasrec``; default
``RUN/tokenizer``). ``--minutes 60`` (a single budget of 20 minutes or more) validates every 2 minutes
instead of every minute.

``RUN`` needs ``dataset/`` and ``tokenizer/`` (``sidrec prepare`` + ``sidrec tokenize``). Each model trains in
its own folder ``OUT/<model>/`` (``OUT`` = ``RUN/quality_per_minute``; the dataset, tokenizer and embedding
cache are linked, never copied or changed) for the largest budget, with early stopping off so the curve
covers the whole budget, validating on the same 3,000 fixed random VALID users (``EvalSplit.sample(3000,
seed=0)``): the generators at every whole training minute (``eval_at_minutes``), SASRec after every epoch.
Training time excludes validation for every model. The value of a model at budget ``m`` is its best
validation so far at ``m`` minutes of training (each trainer keeps its best checkpoint, so that is the
model you would have).

Prints a table of VALID Recall@10 / NDCG@10 at each budget, writes ``OUT/learning_curve.png`` (metric
against training minutes, one line per model) and ``OUT/results.json``; with ``--test``, also evaluates each
model's kept checkpoint on the TEST split (all users, full ranking, with the long-tail slice and, for the
hybrid generator, its generation-only and dense-only ablation). Ends with
``new_vs_sasrec_ndcg10_at_20min=<ratio> new_vs_cpu_small_ndcg10_at_20min=<ratio>`` (at the largest budget).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VALID_USERS = 3000
MARK_SLACK = 0.05  # minutes: a validation at the m-minute mark runs when training time first passes m
MODELS = {  # name -> (trainer module, preset, output subfolder holding the training log)
    "sasrec": ("sidrec.train.sasrec", "baselines/sasrec", "baselines/sasrec/train_log.json"),
    "cpu-small": ("sidrec.train.generator", "generator/cpu-small", "generator/training.json"),
    "hybrid": ("sidrec.train.generator", "generator/hybrid", "generator/training.json"),
    "parallel": ("sidrec.train.generator", "generator/parallel", "generator/training.json"),
}
NEW, SASREC, TIGER, HYBRID = "parallel", "sasrec", "cpu-small", "hybrid"


def link_run(run: Path, folder: Path, tokenizer: Path | None = None) -> None:
    """A fresh model folder sharing RUN's dataset, tokenizer (or ``tokenizer``) and embedding cache (symlinks)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("dataset", "tokenizer", "cache"):
        source = tokenizer if part == "tokenizer" and tokenizer is not None else run / part
        target, link = source.resolve(), folder / part
        if link.is_symlink() or link.exists():
            if link.resolve() != target:
                raise SystemExit(f"{link} exists and is not a link to {target}; use another --out")
            continue
        if target.exists():
            link.symlink_to(target, target_is_directory=True)


def train(name: str, folder: Path, *, minutes: float, threads: int, log_file: Path) -> float:
    """Run one trainer as a subprocess; returns its wall-clock seconds."""
    module, preset, _ = MODELS[name]
    common = ["--max-minutes", str(minutes), "--valid-max-users", str(VALID_USERS), "--torch-threads", str(threads)]
    if module.endswith("generator"):
        every = 2 if minutes >= 20 else 1
        marks = ",".join(str(m) for m in range(every, int(minutes) + 1, every))
        extra = ["--eval-every", "0", "--eval-at-minutes", marks, "--patience", "0", "--save-every", "0",
                 "--max-steps", "1000000"]
    else:
        extra = ["--patience", "1000", "--epochs", "1000"]
    cmd = [sys.executable, "-m", module, "--run", str(folder), "--config", preset, *common, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    with open(log_file, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise SystemExit(f"{name} training failed (exit {proc.returncode}); see {log_file}")
    return time.perf_counter() - t0


def curve(name: str, folder: Path) -> list[dict[str, float]]:
    """Validation points ``{minutes, recall@10, ndcg@10}`` in training-time order (validation excluded)."""
    log = json.loads((folder / MODELS[name][2]).read_text())
    points = []
    for entry in log["history"]:
        metrics = entry.get("valid", entry)  # SASRec nests its metrics under "valid"
        points.append({"minutes": entry["train_seconds"] / 60, "step": entry.get("step", 0),
                       "epoch": entry.get("epoch", 0), "recall@10": metrics["recall@10"],
                       "ndcg@10": metrics["ndcg@10"]})
    return points


def at_budget(points: list[dict[str, float]], minutes: float) -> dict[str, float] | None:
    """The best validation (by NDCG@10) reached within ``minutes`` of training, or None before the first."""
    seen = [p for p in points if p["minutes"] <= minutes + MARK_SLACK]
    return max(seen, key=lambda p: p["ndcg@10"]) if seen else None


def plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("recall@10", "ndcg@10"), strict=True):
        for name, points in curves.items():
            ax.plot([p["minutes"] for p in points], [p[metric] for p in points], marker="o", ms=3, label=name)
        ax.set_xlabel("training minutes (validation excluded)")
        ax.set_ylabel(f"VALID {metric} ({VALID_USERS:,} users)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def test_metrics(name: str, folder: Path) -> dict[str, dict[str, float]]:
    """TEST Recall/NDCG@10 overall and on the 1-9 training-interaction tail, per scorer of this model."""
    from sidrec.eval.evaluate import evaluate_run

    # the benchmark's own folders: a rerun (--reuse) evaluates the kept checkpoints again, the same way
    if name == SASREC:
        result = evaluate_run(folder, split="test", baselines=["sasrec"], generator=False, n_boot=0, overwrite=True)
        blocks = {"sasrec": result["baselines"]["sasrec"]}
    else:
        result = evaluate_run(folder, split="test", baselines=[], n_boot=0, overwrite=True)
        blocks = {name: result, **{f"{name}: {k}": v for k, v in result["generator_variants"].items()}}
    out = {}
    for label, block in blocks.items():
        tail = block["slices"]["target_popularity"].get("1-9", {})
        out[label] = {"recall@10": block["metrics"]["recall@10"], "ndcg@10": block["metrics"]["ndcg@10"],
                      "tail_recall@10": tail.get("recall@10", float("nan")), "tail_users": tail.get("users", 0)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--run", required=True, help="run folder with dataset/ and tokenizer/")
    p.add_argument("--out", default=None, help="output folder (default RUN/quality_per_minute)")
    p.add_argument("--minutes", default="5,10,20", help="budgets to report (the largest is trained)")
    p.add_argument("--models", default=",".join(MODELS), help=f"subset of {', '.join(MODELS)}")
    p.add_argument("--threads", type=int, default=2, help="torch threads per training (default 2)")
    p.add_argument("--test", action="store_true", help="also evaluate each kept checkpoint on TEST")
    p.add_argument("--reuse", action="store_true", help="skip training where OUT/<model> holds a training log")
    p.add_argument("--long-tokenizer", default=None,
                   help="tokenizer folder with long IDs for the parallel family (default RUN/tokenizer)")
    args = p.parse_args(argv)
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "quality_per_minute"
    budgets = sorted(float(m) for m in args.minutes.split(","))
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; choose from {', '.join(MODELS)}")
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start; {args.threads} torch threads; "
          f"budget {budgets[-1]:g} min per model; {VALID_USERS:,} fixed VALID users")
    curves, wall = {}, {}
    for name in names:
        folder = out / name
        if not (args.reuse and (folder / MODELS[name][2]).is_file()):
            link_run(run, folder, Path(args.long_tokenizer) if name == NEW and args.long_tokenizer else None)
            print(f"training {name} for {budgets[-1]:g} min ...", flush=True)
            wall[name] = train(name, folder, minutes=budgets[-1], threads=args.threads, log_file=out / f"{name}.log")
        curves[name] = curve(name, folder)

    header = "| model | " + " | ".join(f"R@10 @{m:g}min | N@10 @{m:g}min" for m in budgets) + " | last point (min) |"
    print("\nVALID (3,000 fixed users; best so far at each training budget)\n")
    print(header)
    print("|---|" + "---|---|" * len(budgets) + "---|")
    table = {}
    for name, points in curves.items():
        row = {m: at_budget(points, m) for m in budgets}
        table[name] = {f"{m:g}": row[m] for m in budgets}
        cells = [f"{row[m]['recall@10']:.4f} | {row[m]['ndcg@10']:.4f}" if row[m] else "- | -" for m in budgets]
        unit = "epoch" if name == SASREC else "step"
        print(f"| {name} | " + " | ".join(cells) + f" | {points[-1]['minutes']:.1f} ({unit} {points[-1][unit]}) |")
    plot(curves, out / "learning_curve.png")
    print(f"\nlearning curve: {out / 'learning_curve.png'}")

    tests = {}
    if args.test:
        print("\nTEST (all users, full ranking, history not excluded; tail = targets with 1-9 training "
              "interactions)\n")
        print("| model | Recall@10 | NDCG@10 | tail Recall@10 (users) |")
        print("|---|---|---|---|")
        for name in names:
            for label, m in test_metrics(name, out / name).items():
                tests[label] = m
                print(f"| {label} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | "
                      f"{m['tail_recall@10']:.4f} ({m['tail_users']}) |")
    results = {"budgets": budgets, "threads": args.threads, "load_at_start": load, "valid_users": VALID_USERS,
               "curves": curves, "at_budget": table, "test": tests, "wall_seconds": wall}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    last = f"{budgets[-1]:g}"

    def ratio(a: str, b: str) -> str:
        if a not in table or b not in table or not table[a][last] or not table[b][last]:
            return "nan"
        return f"{table[a][last]['ndcg@10'] / table[b][last]['ndcg@10']:.3f}"

    print(f"\nnew_vs_sasrec_ndcg10_at_{last}min={ratio(NEW, SASREC)} "
          f"new_vs_hybrid_ndcg10_at_{last}min={ratio(NEW, HYBRID)} "
          f"new_vs_cpu_small_ndcg10_at_{last}min={ratio(NEW, TIGER)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
