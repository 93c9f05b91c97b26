"""A small SASRec grid on the VALID split: one training run per setting, the best by valid NDCG@10.

    python benchmarks/sasrec_sweep.py --run runs/beauty [--config baselines/sasrec]
        [--grid lr=0.0005,0.001,0.002 --grid batch_size=128,256] [--torch-threads 1] [--field value ...]

Every setting of the grid (the product of the ``--grid FIELD=V1,V2,...`` axes; any field of
``SasrecTrainConfig``) trains from the preset plus the ``--field value`` overrides shared by all runs,
with early stopping on valid NDCG@10 exactly as ``sidrec sasrec`` does. The test split is never
read. The table has one row per setting: best epoch, epochs run, best valid Recall@10 / NDCG@10,
training minutes to the best epoch and in all (validation included). The chosen row (highest valid
NDCG@10) is printed last as ``key=value`` pairs: put its fields in your preset. Without ``--grid`` the
default grid below runs (4 settings, about 25-40 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_GRID = ("lr=0.001,0.002", "batch_size=128,256")


def parse_grid(specs: list[str], fields: list[str]) -> list[dict[str, str]]:
    """``["lr=1,2", "dropout=0.2"]`` -> ``[{"lr": "1", "dropout": "0.2"}, {"lr": "2", "dropout": "0.2"}]``.

    Values stay strings (the config loader converts them to the field's type). The settings come
    in product order, the first axis slowest.
    """
    axes: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not vals:
            raise ValueError(f"bad --grid {spec!r}; write FIELD=V1,V2,... (e.g. lr=0.001,0.002)")
        if name not in fields:
            raise ValueError(f"--grid field {name!r} is not a SasrecTrainConfig field; valid: {', '.join(fields)}")
        if name in axes:
            raise ValueError(f"--grid names {name!r} twice; give all its values in one FIELD=V1,V2,...")
        axes[name] = vals
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def summarise(setting: dict[str, str], log: dict[str, Any]) -> dict[str, Any]:
    """One table row from a ``train_sasrec`` log (the best epoch's valid metrics and the minutes)."""
    best = log["history"][log["best_epoch"] - 1]
    return {
        "setting": setting, "best_epoch": log["best_epoch"], "epochs_run": log["epochs_run"],
        "recall@10": best["valid"]["recall@10"], "ndcg@10": best["valid"]["ndcg@10"],
        "minutes_to_best": best["elapsed_s"] / 60, "minutes": log.get("elapsed_seconds", log["train_seconds"]) / 60,
    }


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest valid NDCG@10 (ties: fewer minutes to the best epoch, then grid order)."""
    if not rows:
        raise ValueError("no settings to choose from; give at least one --grid value")
    return min(rows, key=lambda r: (-r["ndcg@10"], r["minutes_to_best"]))


def format_table(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> str:
    """The results as a plain-text table, the chosen row marked."""
    names = [", ".join(f"{k}={v}" for k, v in r["setting"].items()) or "(preset)" for r in rows]
    width = max(len("setting"), *(len(n) for n in names))
    lines = [f"{'setting':<{width}}  best_epoch  epochs  valid_recall@10  valid_ndcg@10  min_to_best  minutes"]
    for name, r in zip(names, rows, strict=True):
        mark = "  <- chosen" if r is chosen else ""
        lines.append(f"{name:<{width}}  {r['best_epoch']:>10}  {r['epochs_run']:>6}  {r['recall@10']:>15.4f}  "
                     f"{r['ndcg@10']:>13.4f}  {r['minutes_to_best']:>11.1f}  {r['minutes']:>7.1f}{mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sidrec.data import PreparedDataset
    from sidrec.train.sasrec import SasrecTrainConfig, config_from_cli, train_sasrec
    from sidrec.utils import configure_logging

    p = argparse.ArgumentParser(prog="python benchmarks/sasrec_sweep.py", description=__doc__.splitlines()[0],
                                epilog="Other --field value pairs override the preset for every run.")
    p.add_argument("--run", required=True, help="run folder with dataset/ (from `sidrec prepare`)")
    p.add_argument("--config", default="baselines/sasrec", help="preset name or YAML path (the base of every run)")
    p.add_argument("--grid", action="append", default=None,
                   help=f"FIELD=V1,V2,... (repeatable; the runs are the product); default: {' '.join(DEFAULT_GRID)}")
    p.add_argument("--out", default=None, help="keep each run's model under OUT/<n>/ (default: a temp folder)")
    args, rest = p.parse_known_args(argv)
    configure_logging()
    fields = [f.name for f in dataclasses.fields(SasrecTrainConfig)]
    settings = parse_grid(args.grid or list(DEFAULT_GRID), fields)
    base = config_from_cli(args.config, rest)  # checks the shared overrides once
    dataset = PreparedDataset.load(args.run)
    print(f"{len(settings)} settings on {Path(args.run)} (VALID split, {dataset.num_users} users); base: "
          + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(base).items()), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sasrec-sweep-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        for i, setting in enumerate(settings):
            cfg = config_from_cli(args.config, rest + [a for k, v in setting.items() for a in (f"--{k}", v)])
            log = train_sasrec(dataset, cfg, root / f"{i:02d}")
            rows.append(summarise(setting, log))
            print(format_table(rows[-1:], chosen={}).splitlines()[-1], flush=True)
    chosen = choose(rows)
    print()
    print(format_table(rows, chosen))
    print(" ".join(f"{k}={v}" for k, v in chosen["setting"].items())
          + f" best_epoch={chosen['best_epoch']} valid_recall@10={chosen['recall@10']:.4f}"
          f" valid_ndcg@10={chosen['ndcg@10']:.4f} minutes_to_best={chosen['minutes_to_best']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
