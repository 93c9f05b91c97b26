"""Human-readable outputs of an evaluation: ``report.md`` and the Recall@K plot.

``metrics.json`` is the source of truth (written by :mod:`sidrec.eval.evaluate`); this module
only renders it. The report compares against the TIGER paper's numbers (Rajput et al., NeurIPS
2023, Table 2) when the dataset is one the paper used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sidrec.utils import atomic_write_text

logger = logging.getLogger(__name__)

# TIGER paper, Table 2 (leave-one-out, full ranking)
TIGER_PAPER: dict[str, dict[str, float]] = {
    "beauty": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384},
    "sports": {"recall@10": 0.0400, "ndcg@10": 0.0225},
    "toys": {"recall@10": 0.0712, "ndcg@10": 0.0432},
}

TIGER_PAPER_TRAINING = {"beauty": "200k steps (GPU)"}  # as the paper reports it

TABLE_COLUMNS = ("recall@1", "recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")
CI_COLUMNS = ("recall@10", "ndcg@10")


def paper_reference(dataset_name: str) -> tuple[str, dict[str, float]] | None:
    """TIGER's numbers for a dataset whose name mentions beauty/sports/toys, else None."""
    low = dataset_name.lower()
    for key, vals in TIGER_PAPER.items():
        if key in low:
            return key, vals
    return None


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.4f}"
    return str(x)


def _blocks(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(model name, block with metrics/ci/slices/seconds): the generator first, its ablation variants
    (generation only, dense only; generators with a dense head), then the baselines."""
    rows = []
    if result.get("metrics"):
        rows.append(("generator", result))
    rows.extend(result.get("generator_variants", {}).items())
    rows.extend(result.get("baselines", {}).items())
    return rows


def _models(result: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return [(name, block["metrics"]) for name, block in _blocks(result)]


def training_cell(record: dict[str, Any] | None) -> str:
    """``"14.0 min, 3,260 steps (best 3,260)"`` / ``"5.2 min, 18 epochs (best 13)"`` / ``"none"`` / ``"-"``."""
    if record is None:
        return "-"
    if "steps" in record:
        return f"{record['minutes']:.1f} min, {record['steps']:,} steps (best {record['best_step']:,})"
    if "epochs" in record:
        return f"{record['minutes']:.1f} min, {record['epochs']} epochs (best {record['best_epoch']})"
    return "none" if not record.get("minutes") else f"{record['minutes']:.1f} min"


def render_report(result: dict[str, Any]) -> str:
    """Markdown report from the ``metrics.json`` object."""
    ds = result["dataset"]
    lines = [
        f"# Evaluation: {ds['name']} ({result['split']} split)",
        "",
        f"- users evaluated: {result['num_users']}; catalog: {ds['num_items']} items; full ranking, "
        f"history items {'excluded' if result['exclude_history'] else 'not excluded'} (same for every model)",
        f"- dataset fingerprint `{ds['fingerprint']}`, git commit `{result.get('git_commit') or 'unknown'}`",
        f"- bootstrap: {result['bootstrap']} resamples of users, seed {result['seed']}, 95% percentile CIs",
    ]
    if "date" in result:
        machine = result.get("machine", {})
        lines.append(f"- evaluated {result['date']} on {machine.get('device', '?')} "
                     f"({machine.get('cpu_cores', '?')} CPU cores); training minutes exclude validation")
    if not result.get("metrics"):
        lines.append(f"- generator: absent ({result.get('generator_status', 'not found')})")
    lines += ["", "## Overall", ""]
    header = ["model", *TABLE_COLUMNS, "coverage@10", "mean pop@10", "invalid", "seconds", "training"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, block in _blocks(result):
        m, secs = block["metrics"], block.get("seconds")
        cells = [name, *(_fmt(m.get(c)) for c in TABLE_COLUMNS), _fmt(m.get("coverage")),
                 f"{m['mean_popularity']:.1f}" if "mean_popularity" in m else "-",
                 _fmt(m.get("invalid_rate")), f"{secs:.1f}" if secs is not None else "-",
                 training_cell(block.get("training"))]
        lines.append("| " + " | ".join(cells) + " |")
    ref = paper_reference(ds["name"])
    if ref is not None:
        key, vals = ref
        cells = [f"TIGER paper ({key})", *(_fmt(vals.get(c)) for c in TABLE_COLUMNS), "-", "-", "-", "-",
                 TIGER_PAPER_TRAINING.get(key, "as published")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## 95% bootstrap confidence intervals", ""]
    lines.append("| model | " + " | ".join(CI_COLUMNS) + " |")
    lines.append("|---|" + "---|" * len(CI_COLUMNS))
    for name, block in _blocks(result):
        m, ci = block["metrics"], block.get("ci", {})
        cells = [
            f"{m[c]:.4f} [{ci[c][0]:.4f}, {ci[c][1]:.4f}]" if c in ci else _fmt(m.get(c)) for c in CI_COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _slice_tables(result)
    lines += ["", "Recall@K plot: `recall_at_k.png`." if result.get("plot") else "No plot (matplotlib missing).", ""]
    return "\n".join(lines)


def _slice_tables(result: dict[str, Any]) -> list[str]:
    """The report's "Recall@10 by ..." sections: one table of users' buckets per slicing, every model a row."""
    lines: list[str] = []
    slicings = ["history_length", "target_popularity"]
    if any("target_cold" in block.get("slices", {}) for _, block in _blocks(result)):
        slicings.append("target_cold")  # a cold-start split: users whose target is warm / cold
    for slicing in slicings:
        lines += ["", f"## Recall@10 by {slicing.replace('_', ' ')}", ""]
        users: dict[str, int] = {}
        for _, block in _blocks(result):
            for b, row in block.get("slices", {}).get(slicing, {}).items():
                users.setdefault(b, int(row["users"]))
        if not users:
            lines.append("(no slices)")
            continue
        buckets = list(users)
        lines.append("| model | " + " | ".join(f"{b} (n={users[b]})" for b in buckets) + " |")
        lines.append("|---|" + "---|" * len(buckets))
        for name, block in _blocks(result):
            sl = block.get("slices", {}).get(slicing, {})
            lines.append(f"| {name} | " + " | ".join(_fmt(sl.get(b, {}).get("recall@10")) for b in buckets) + " |")
    return lines


def plot_recall_at_k(result: dict[str, Any], path: str | os.PathLike) -> bool:
    """Recall@K curves for every model; returns False (and logs) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed; skipping the Recall@K plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, m in _models(result):
        ks = sorted(int(key.split("@")[1]) for key in m if key.startswith("recall@"))
        ax.plot(ks, [m[f"recall@{k}"] for k in ks], marker="o", label=name)
    ref = paper_reference(result["dataset"]["name"])
    if ref is not None:
        ks = sorted(int(key.split("@")[1]) for key in ref[1] if key.startswith("recall@"))
        ax.plot(ks, [ref[1][f"recall@{k}"] for k in ks], "k--", marker="x", label=f"TIGER paper ({ref[0]})")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(f"{result['dataset']['name']} ({result['split']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def write_report(result: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """``report.md`` (+ ``recall_at_k.png``) in ``out_dir``; sets ``result['plot']``."""
    out_dir = Path(out_dir)
    result["plot"] = plot_recall_at_k(result, out_dir / "recall_at_k.png")
    atomic_write_text(out_dir / "report.md", render_report(result))
