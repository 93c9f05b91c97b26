"""Cold start, measured: items no model trained on (TIGER's protocol, cold-start section).

    python benchmarks/cold_start.py --run runs/cold [--dataset beauty] [--cold-items 0.05] [--reference RUN]

Runs the whole protocol into ``RUN`` with the CLI a user would type, each stage logged to ``RUN/logs/``:
``sidrec prepare --cold-items 0.05`` (the newest 5% of items by first interaction are held out: they stay
only as test targets), ``sidrec sasrec`` (cold items keep untrained embeddings, as items added after training
would), ``sidrec tokenize`` (the quickstart's tokenizer: fitted on the warm items, with SASRec's item vectors
when it uses collaborative codes, which the cold items lack: theirs are predicted from their text; the cold
ones get IDs through ``assign``), ``sidrec train`` (the quickstart's generator preset), then ``sidrec
evaluate`` on the test split with every
baseline, the warm / cold target slices and TIGER's cold share (epsilon) at 0.1 and 0.2. Stages whose
output exists are kept (``--fresh`` redoes them).

Prints Recall@10 / NDCG@10 per model on all users, warm-target users and cold-target users, and the
epsilon sweep; with ``--reference RUN`` (a run of the same generator preset trained WITHOUT a cold split
and evaluated on its test split, e.g. ``runs/quickstart``) also the ratio of all-user Recall@10. Ends with
``gen_cold_recall10=<x> knn_cold_recall10=<y> sasrec_cold_recall10=<z>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sidrec.quickstart import (
    QUICKSTART_GENERATOR,
    QUICKSTART_GENERATOR_CAP,
    QUICKSTART_SASREC_CAP,
    QUICKSTART_SASREC_EPOCHS,
    QUICKSTART_TOKENIZER,
    QUICKSTART_TOKENIZER_ARGS,
    generator_steps,
)

SHARES = (0.1, 0.2, 0.3)


def stage(name: str, argv: list[str], run: Path, *, done: bool) -> float:
    """Run ``sidrec <argv>`` unless ``done``; returns the wall seconds (0 when kept)."""
    if done:
        print(f"  {name}: kept (output exists)")
        return 0.0
    (run / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(run / "logs" / f"{name}.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "sidrec.cli", *argv], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {run / 'logs' / (name + '.log')}")
    print(f"  {name}: {seconds / 60:.1f} min")
    return seconds


def row(block: dict) -> dict[str, float]:
    cold = block["slices"].get("target_cold", {})
    out = {"all_r": block["metrics"]["recall@10"], "all_n": block["metrics"]["ndcg@10"]}
    for part in ("warm", "cold"):
        out[f"{part}_r"] = cold.get(part, {}).get("recall@10", float("nan"))
        out[f"{part}_n"] = cold.get(part, {}).get("ndcg@10", float("nan"))
        out[f"{part}_users"] = cold.get(part, {}).get("users", 0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--run", required=True, help="run folder for the cold-start protocol")
    p.add_argument("--dataset", default="beauty", help="bundled name or dataset folder (default beauty)")
    p.add_argument("--cold-items", type=float, default=0.05, help="share of items held out (default 0.05)")
    p.add_argument("--tokenizer-config", default=QUICKSTART_TOKENIZER, help=f"tokenizer preset (default "
                   f"{QUICKSTART_TOKENIZER}, the quickstart's)")
    p.add_argument("--tokenizer-args", default=" ".join(QUICKSTART_TOKENIZER_ARGS),
                   help="extra `sidrec tokenize` flags (default: the quickstart's)")
    p.add_argument("--generator-config", default=QUICKSTART_GENERATOR,
                   help=f"generator preset (default {QUICKSTART_GENERATOR}, the quickstart's)")
    p.add_argument("--reference", default=None, help="a run of the same preset without a cold split (evaluated)")
    p.add_argument("--cache-from", default=None, help="copy RUN/cache (item embeddings) from this run first")
    p.add_argument("--fresh", action="store_true", help="redo every stage (--overwrite)")
    p.add_argument("--train-args", default=None,
                   help="extra `sidrec train` flags (default: the quickstart's budget for the generator's preset)")
    p.add_argument("--sasrec-args", default=f"--epochs {QUICKSTART_SASREC_EPOCHS} --max-minutes {QUICKSTART_SASREC_CAP:g}",
                   help="extra `sidrec sasrec` flags (default: the quickstart's budget)")
    args = p.parse_args(argv)
    if args.train_args is None:
        args.train_args = f"--max-steps {generator_steps(args.generator_config)} --max-minutes {QUICKSTART_GENERATOR_CAP:g}"
    run = Path(args.run)
    over = ["--overwrite"] if args.fresh else []
    if args.cache_from and not (run / "cache").exists():
        shutil.copytree(Path(args.cache_from) / "cache", run / "cache")
    print(f"cold-start protocol in {run} ({args.dataset}, {args.cold_items:.0%} cold items):")
    seconds = {
        "prepare": stage("prepare", ["prepare", "--dataset", args.dataset, "--out", str(run), "--cold-items",
                                     str(args.cold_items), *over], run,
                         done=not args.fresh and (run / "dataset").is_dir()),
        "sasrec": stage("sasrec", ["sasrec", "--run", str(run), *shlex.split(args.sasrec_args), *over], run,
                        done=not args.fresh and (run / "baselines" / "sasrec" / "train_log.json").is_file()),
        "tokenize": stage("tokenize", ["tokenize", "--run", str(run), "--config", args.tokenizer_config,
                                       *shlex.split(args.tokenizer_args), *over], run,
                          done=not args.fresh and (run / "tokenizer").is_dir()),
        "generator": stage("generator", ["train", "--run", str(run), "--config", args.generator_config,
                                         *shlex.split(args.train_args), *over], run,
                           done=not args.fresh and (run / "generator" / "training.json").is_file()),
    }
    seconds["evaluate"] = stage("evaluate", ["evaluate", "--run", str(run), "--split", "test", "--cold-share",
                                             ",".join(map(str, SHARES)), "--overwrite"], run, done=False)
    result = json.loads((run / "eval" / "metrics.json").read_text())
    stats = json.loads((run / "dataset" / "stats.json").read_text())
    blocks = {"generator": result, **result["generator_variants"], **result["baselines"]}
    rows = {name: row(block) for name, block in blocks.items()}
    g = rows["generator"]
    print(f"\n{stats['cold_items']:,} cold items ({stats['cold_method']}); test users: {result['num_users']:,}, "
          f"{g['cold_users']:,} with a cold target\n")
    print("| model | Recall@10 all | NDCG@10 all | Recall@10 warm | Recall@10 cold | NDCG@10 cold |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['all_r']:.4f} | {r['all_n']:.4f} | {r['warm_r']:.4f} | {r['cold_r']:.4f} | "
              f"{r['cold_n']:.4f} |")
    print("\nTIGER's epsilon (share of the top 10 reserved for cold items: the cold candidates whose text is closest "
          "to the user's recent items; not tuned):")
    print("| epsilon | Recall@10 all | Recall@10 cold |\n|---|---|---|")
    print(f"| 0 | {g['all_r']:.4f} | {g['cold_r']:.4f} |")
    for share in SHARES:
        r = rows.get(f"generator (cold share {share:g})")
        if r:
            print(f"| {share:g} | {r['all_r']:.4f} | {r['cold_r']:.4f} |")
    if args.reference:
        ref = json.loads((Path(args.reference) / "eval" / "metrics.json").read_text())["metrics"]["recall@10"]
        print(f"\nall-users Recall@10 with the cold split / without (reference {args.reference}): "
              f"{g['all_r']:.4f} / {ref:.4f} = {g['all_r'] / ref:.3f}")
    json.dump({"rows": rows, "seconds": seconds, "cold_items": stats["cold_items"]},
              open(run / "eval" / "cold_start.json", "w"), indent=2)
    sas = rows.get("sasrec", {}).get("cold_r", float("nan"))
    print(f"\ngen_cold_recall10={g['cold_r']:.4f} knn_cold_recall10={rows['knn']['cold_r']:.4f} "
          f"sasrec_cold_recall10={sas:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
