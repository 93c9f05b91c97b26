"""``sidrec evaluate``: leave-one-out evaluation of the generator and the baselines on one split.

    sidrec evaluate --run RUN --split test [--baselines popularity,knn,knn-last,sasrec] [--max-users N]
                    [--bootstrap 1000] [--seed 0] [--exclude-history]

Every model ranks the whole catalog for the same users (no sampled negatives) and goes through
the same metric code (:mod:`sidrec.eval.metrics`). The generator is evaluated when
``RUN/generator`` and ``RUN/tokenizer`` exist. Writes ``RUN/eval/metrics.json``, ``report.md``
and ``recall_at_k.png`` (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.eval.metrics import DEFAULT_KS, catalog_metrics, per_user_metrics, target_ranks
from sidrec.eval.report import write_report
from sidrec.eval.slices import bootstrap_ci, standard_slices
from sidrec.utils import atomic_write_json, configure_logging

logger = logging.getLogger(__name__)

KNOWN_BASELINES = ("popularity", "knn", "knn-last", "sasrec")
DEFAULT_BASELINES = ("popularity", "knn", "sasrec")  # without --baselines (knn-last on request)
LIST_LENGTH = max(DEFAULT_KS)  # every scorer returns this many items
CATALOG_K = 10  # coverage / mean popularity are measured on the top-10 lists


def git_commit() -> str | None:
    """The source tree's commit (with ``-dirty`` when modified), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _device() -> str:
    """A GPU when one is visible (neural scorers only; the metrics are device-independent)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def score_model(
    scorer, *, histories: list[list[int]], targets: np.ndarray, user_index: np.ndarray,
    num_items: int, item_counts: np.ndarray, n_boot: int, seed: int,
) -> dict[str, Any]:
    """Run one scorer; returns ``{"metrics", "ci", "slices", "seconds"}`` (the metrics.json block)."""
    t0 = time.perf_counter()
    topk = scorer.recommend(histories, LIST_LENGTH, user_index=user_index)  # (U, K)
    seconds = time.perf_counter() - t0
    if topk.shape != (len(histories), LIST_LENGTH):
        raise ValueError(f"scorer {scorer.name!r} returned shape {topk.shape}, "
                         f"expected {(len(histories), LIST_LENGTH)}")
    # an invalid index must never match a target by accident; ranks only count catalog items
    ranks = target_ranks(np.where((topk >= 0) & (topk < num_items), topk, -1), targets)
    per_user = per_user_metrics(ranks, ks=DEFAULT_KS, list_length=LIST_LENGTH)
    per_user.pop("ndcg@1", None)  # identical to recall@1 with one target
    metrics = {name: float(v.mean()) for name, v in per_user.items()}
    metrics["invalid_rate"] = catalog_metrics(topk, num_items=num_items)["invalid_rate"]
    cat = catalog_metrics(topk, num_items=num_items, item_popularity=item_counts, k=CATALOG_K)
    metrics.update(coverage=cat["coverage"], mean_popularity=cat["mean_popularity"], empty_rate=cat["empty_rate"])
    return {
        "metrics": metrics,
        "ci": bootstrap_ci(per_user, n_boot=n_boot, seed=seed),
        "slices": standard_slices(per_user, histories=histories, targets=targets, item_counts=item_counts),
        "seconds": seconds,
    }


def build_baselines(names: list[str], *, run: Path, dataset, exclude_history: bool, explicit: bool) -> list:
    """Scorers for the requested baselines; SASRec is skipped (or an error if asked for) when untrained."""
    from sidrec.eval.baselines.knn import KNN_BASELINES, KnnScorer
    from sidrec.eval.baselines.popularity import PopularityScorer

    scorers = []
    for name in names:
        if name == "popularity":
            scorers.append(PopularityScorer(counts=dataset.train_item_counts(), exclude_history=exclude_history))
        elif name in KNN_BASELINES:  # knn (recent items, the VALID winner), knn-last (last item)
            scorers.append(KnnScorer.from_texts(dataset.item_texts, template=dataset.text_template,
                                                cache_dir=run / "cache", exclude_history=exclude_history,
                                                name=name))
        elif name == "sasrec":
            folder = run / "baselines" / "sasrec"
            if not (folder / "model.safetensors").is_file():
                msg = f"{folder} holds no trained SASRec; run `python -m sidrec.train.sasrec --run {run}` first"
                if explicit:
                    raise ValueError(msg)
                logger.info("skipping sasrec: %s", msg)
                continue
            from sidrec.eval.baselines.sasrec import SasrecScorer

            scorers.append(SasrecScorer.from_pretrained(folder, exclude_history=exclude_history, device=_device()))
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(KNOWN_BASELINES)}")
    return scorers


def build_generator(run: Path, dataset, *, exclude_history: bool, beam_size: int, batch_size: int):
    """The generator scorer, or ``(None, reason)`` when the run has no trained generator/tokenizer."""
    missing = [p for p in ("generator/model.safetensors", "tokenizer/config.json") if not (run / p).is_file()]
    if missing:
        return None, f"missing {', '.join(str(run / p) for p in missing)}"
    from sidrec.eval.generator import GeneratorScorer

    scorer = GeneratorScorer.from_run(run, item_ids=dataset.item_ids, user_ids=dataset.user_ids,
                                      beam_size=beam_size, batch_size=batch_size,
                                      exclude_history=exclude_history, device=_device())
    return scorer, "evaluated"


def evaluate_run(
    run: str | Path, *, split: str = "test", baselines: list[str] | None = None, max_users: int | None = None,
    n_boot: int = 1000, seed: int = 0, exclude_history: bool = False, beam_size: int = 20,
    batch_size: int = 256, generator: bool = True, out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the run's generator (if any) and baselines; write the three files; return metrics.json."""
    from sidrec.data import PreparedDataset

    run = Path(run)
    dataset = PreparedDataset.load(run)
    data = dataset.eval_split(split).sample(max_users, seed=seed)  # random users: file order is not random
    item_counts = dataset.train_item_counts()
    explicit = baselines is not None
    names = list(DEFAULT_BASELINES) if baselines is None else baselines
    scorers = build_baselines(names, run=run, dataset=dataset, exclude_history=exclude_history, explicit=explicit)
    gen, status = (None, "disabled (--no-generator)")
    if generator:
        gen, status = build_generator(run, dataset, exclude_history=exclude_history, beam_size=beam_size,
                                      batch_size=batch_size)
    logger.info("generator: %s", status)
    result: dict[str, Any] = {
        "split": split, "num_users": len(data), "exclude_history": exclude_history,
        "bootstrap": n_boot, "seed": seed, "list_length": LIST_LENGTH, "catalog_k": CATALOG_K,
        "config": {"run": str(run), "split": split, "baselines": names, "max_users": max_users,
                   "bootstrap": n_boot, "seed": seed, "exclude_history": exclude_history,
                   "beam_size": beam_size, "batch_size": batch_size},
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(),
                    "num_items": dataset.num_items, "num_users": dataset.num_users},
        "git_commit": git_commit(), "generator_status": status,
        "metrics": {}, "ci": {}, "slices": {}, "seconds": None, "baselines": {},
    }
    for scorer in ([gen] if gen is not None else []) + scorers:
        logger.info("scoring %s on %d %s users", scorer.name, len(data), split)
        res = score_model(scorer, histories=data.histories, targets=data.targets, user_index=data.user_index,
                          num_items=dataset.num_items, item_counts=item_counts, n_boot=n_boot, seed=seed)
        res["seconds"] = round(res["seconds"], 2)
        if scorer is gen:
            result.update(res)
        else:
            result["baselines"][scorer.name] = res
        logger.info("%s: recall@10 %.4f ndcg@10 %.4f (%.1fs)", scorer.name, res["metrics"]["recall@10"],
                    res["metrics"]["ndcg@10"], res["seconds"])
    out_dir = Path(out) if out is not None else run / "eval"
    write_report(result, out_dir)
    atomic_write_json(out_dir / "metrics.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point behind ``sidrec evaluate``."""
    p = argparse.ArgumentParser(prog="sidrec evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder (dataset/, optional tokenizer/, generator/, baselines/)")
    p.add_argument("--split", default="test", choices=("test", "valid"))
    p.add_argument("--baselines", default=None,
                   help="comma list of popularity,knn,knn-last,sasrec ('none' for no baselines); "
                        "default: popularity,knn,sasrec (sasrec when trained)")
    p.add_argument("--max-users", type=int, default=None, help="evaluate a seeded random sample of N users")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude-history", action="store_true",
                   help="remove each user's history items from every model's list (default: keep them)")
    p.add_argument("--beam-size", type=int, default=20, help="generator beam width (>= 20)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="generator users per beam-search batch (256: 1.5x the users/s of 64 here)")
    p.add_argument("--no-generator", action="store_true", help="evaluate the baselines only")
    p.add_argument("--out", default=None, help="output folder (default RUN/eval)")
    args = p.parse_args(argv)
    if args.max_users is not None and args.max_users < 1:
        p.error(f"--max-users must be >= 1, got {args.max_users}")
    configure_logging()
    baselines = None
    if args.baselines is not None:
        baselines = [] if args.baselines.strip() == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    result = evaluate_run(args.run, split=args.split, baselines=baselines, max_users=args.max_users,
                          n_boot=args.bootstrap, seed=args.seed, exclude_history=args.exclude_history,
                          beam_size=args.beam_size, batch_size=args.batch_size,
                          generator=not args.no_generator, out=args.out)
    out_dir = Path(args.out) if args.out else Path(args.run) / "eval"
    rows = [("generator", result["metrics"])] if result["metrics"] else []
    rows += [(name, block["metrics"]) for name, block in result["baselines"].items()]
    for name, m in rows:
        print(f"{name:12s} recall@10={m['recall@10']:.4f} ndcg@10={m['ndcg@10']:.4f} mrr={m['mrr']:.4f} "
              f"coverage={m['coverage']:.4f} invalid_rate={m['invalid_rate']:.4f}")
    print(f"wrote {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
