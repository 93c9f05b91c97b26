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
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.decoding.settings import DEFAULT_BEAM_SIZE
from sidrec.eval.report import write_report
from sidrec.eval.slices import bootstrap_ci, standard_slices
from sidrec.utils import atomic_write_json, configure_logging
from sidrec.utils.locks import stage_lock
from sidrec.utils.metrics import DEFAULT_KS, catalog_metrics, per_user_metrics, target_ranks
from sidrec.utils.run_folder import RunFolder

logger = logging.getLogger(__name__)

KNOWN_BASELINES = ("popularity", "knn", "knn-last", "sasrec")
DEFAULT_BASELINES = ("popularity", "knn", "sasrec")  # without --baselines (knn-last on request)
LIST_LENGTH = max(DEFAULT_KS)  # every scorer returns this many items
CATALOG_K = 10  # coverage / mean popularity are measured on the top-10 lists


def git_commit(source: str | Path | None = None) -> str | None:
    """The source tree's commit (with ``-dirty`` when modified), or None outside git.

    Read-only: ``--no-optional-locks`` keeps ``git status`` from refreshing the index, which takes
    ``.git/index.lock`` (and leaves it behind when the process is killed at that moment).
    """
    here = Path(source) if source is not None else Path(__file__).resolve().parent
    git = ["git", "--no-optional-locks"]
    try:
        sha = subprocess.run([*git, "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], cwd=here,
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
    num_items: int, item_counts: np.ndarray, n_boot: int, seed: int, cold_items: np.ndarray | None = None,
) -> dict[str, Any]:
    """Run one scorer; returns ``{"metrics", "ci", "slices", "seconds"}`` (the metrics.json block).

    ``cold_items`` (``bool (N,)``, a cold-start split) adds the ``target_cold`` slices (warm / cold targets).
    """
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
        "slices": standard_slices(per_user, histories=histories, targets=targets, item_counts=item_counts,
                                  cold_items=cold_items),
        "seconds": seconds,
    }


# where a trained model's log is (in its RunFolder) and which of its fields the training record keeps
GENERATOR_LOG = (lambda folder: folder.generator_dir / "training.json", {"steps": "steps", "best_step": "best_step"})
BASELINE_LOGS = {"sasrec": (lambda folder: folder.sasrec_dir / "train_log.json",
                            {"epochs": "epochs_run", "best_epoch": "best_epoch"})}


def training_record(run: Path, name: str) -> dict[str, Any] | None:
    """How the scored model was trained, from its own log (the report's "training" column).

    Generator rows (``generator``, ``generator (...)``: one checkpoint) read ``RUN/generator/training.json``:
    ``{"minutes", "steps", "best_step"}``; ``sasrec`` reads ``RUN/baselines/sasrec/train_log.json``:
    ``{"minutes", "epochs", "best_epoch"}``; the other known baselines are not trained: ``{"minutes": 0.0}``.
    Minutes are training time without validation. None (logged) when the log is missing or unreadable: the
    model itself loaded, so the evaluation goes on.
    """
    from sidrec.utils.io import read_json

    if " (fused" in name:  # a fusion: its trained models' training, added up (the text kNN trains none)
        parts = [training_record(run, part) for part in name.split(" (fused")[0].split(" + ") if part != "text"]
        if any(p is None for p in parts):
            return None
        return {"minutes": round(sum(p["minutes"] for p in parts), 2), "parts": parts}
    if name == "generator" or name.startswith("generator ("):
        where, fields = GENERATOR_LOG
    elif name in BASELINE_LOGS:
        where, fields = BASELINE_LOGS[name]
    else:
        return {"minutes": 0.0} if name in KNOWN_BASELINES else None
    try:
        log = read_json(where(RunFolder(run)))
        record = {"minutes": round(float(log["train_seconds"]) / 60, 2)}
        record.update({key: int(log[src]) for key, src in fields.items()})
    except (ValueError, KeyError, TypeError) as e:
        logger.warning("%s: no training record for the report (%s)", name, e)
        return None
    return record


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
                                                cache_dir=RunFolder(run).cache_dir, exclude_history=exclude_history,
                                                name=name))
        elif name == "sasrec":
            from sidrec.eval.baselines.sasrec import SasrecScorer

            folder = RunFolder(run)
            if not (folder.sasrec_dir / "model.safetensors").is_file() and not explicit:
                logger.info("skipping sasrec: %s holds no trained SASRec (`%s`)", folder.sasrec_dir, folder.rerun("sasrec"))
                continue
            model = folder.sasrec(dataset_fingerprint=dataset.fingerprint())
            scorers.append(SasrecScorer(model=model, exclude_history=exclude_history, device=_device()))
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(KNOWN_BASELINES)}")
    return scorers


def build_generator(run: Path, dataset, *, exclude_history: bool, beam_size: int | None, batch_size: int,
                    cold_shares: tuple[float, ...] = ()):
    """The generator's scorers, or ``([], reason)`` when the run has no trained generator/tokenizer.

    The first scorer is the generator as tuned on VALID; for a generator with a dense head the ablation
    follows: generation only (the plain beam's order), the beam's candidates alone (when items join them),
    the hybrid without the beam's popularity correction (when it uses one) and the dense head alone over the
    whole catalog; then one
    row per ``cold_shares`` value (TIGER's epsilon: that share of each list reserved for cold items).
    """
    from sidrec.decoding import has_dense_head
    from sidrec.eval.generator import GeneratorScorer

    folder = RunFolder(run)
    missing = [p for p in (folder.generator_dir / "model.safetensors", folder.tokenizer_dir / "config.json")
               if not p.is_file()]
    if missing:
        return [], f"missing {', '.join(str(p) for p in missing)}"

    main = GeneratorScorer.from_run(run, item_ids=dataset.item_ids, user_ids=dataset.user_ids,
                                    dataset_fingerprint=dataset.fingerprint(), beam_size=beam_size,
                                    batch_size=batch_size, exclude_history=exclude_history, device=_device())
    modes = ["generation", "dense"] if has_dense_head(main.model) else []
    if main.settings.prior_weight:
        modes.insert(1, "uncorrected")
    if has_dense_head(main.model) and (main.settings.dense_candidates or main.settings.new_candidates):
        modes.insert(1, "beam")
    variants = [main.variant(mode) for mode in modes]
    if cold_shares and not main.cold.any():
        logger.info("--cold-share: the tokenizer assigned no items after its fit (no cold-start split); skipped")
    elif cold_shares:
        variants += [main.variant(cold_share=share) for share in cold_shares if share > 0]
    return [main, *variants], "evaluated"


def evaluate_run(
    run: str | Path, *, split: str = "test", baselines: list[str] | None = None, max_users: int | None = None,
    n_boot: int = 1000, seed: int = 0, exclude_history: bool = False, beam_size: int | None = None,
    batch_size: int = 256, generator: bool = True, out: str | Path | None = None, overwrite: bool = False,
    cold_shares: tuple[float, ...] = (), fuse: str | None = None,
) -> dict[str, Any]:
    """Evaluate the run's generator (if any) and baselines; write the three files; return metrics.json.

    ``fuse="sasrec"`` adds the generator fused with SASRec (``sidrec.eval.fusion``: the fusion is chosen on
    VALID and saved as ``RUN/fusion.json`` first). An existing ``metrics.json`` in the output folder is an error
    unless ``overwrite``.
    """
    from sidrec.utils.run_folder import refuse_existing

    _check_args(beam_size=beam_size, n_boot=n_boot, batch_size=batch_size)
    run = Path(run)
    out_dir = Path(out) if out is not None else RunFolder(run).eval_dir
    refuse_existing(run, "evaluate", overwrite=overwrite, outputs=[str((out_dir / "metrics.json").absolute())])
    dataset = RunFolder(run).dataset()
    data = dataset.eval_split(split).sample(max_users, seed=seed)  # random users: file order is not random
    names = list(DEFAULT_BASELINES) if baselines is None else baselines
    scorers = build_baselines(names, run=run, dataset=dataset, exclude_history=exclude_history,
                              explicit=baselines is not None)
    generators, status = [], "disabled (--no-generator)"
    if generator:
        generators, status = build_generator(run, dataset, exclude_history=exclude_history, beam_size=beam_size,
                                             batch_size=batch_size, cold_shares=tuple(cold_shares))
    logger.info("generator: %s", status)
    config = {"run": str(run), "split": split, "baselines": names, "max_users": max_users, "bootstrap": n_boot,
              "seed": seed, "exclude_history": exclude_history, "beam_size": beam_size, "batch_size": batch_size,
              "fuse": fuse}
    result = _result_header(config, dataset=dataset, users=len(data), status=status)
    if generators:
        _describe_generator(result, generators[0])
    if fuse:
        generators += _fused(run, fuse, generators, dataset, result, exclude_history=exclude_history,
                             cold_shares=cold_shares if dataset.num_cold_items else ())
    for scorer in generators + scorers:
        logger.info("scoring %s on %d %s users", scorer.name, len(data), split)
        res = score_model(scorer, histories=data.histories, targets=data.targets, user_index=data.user_index,
                          num_items=dataset.num_items, item_counts=dataset.train_item_counts(), n_boot=n_boot,
                          seed=seed, cold_items=dataset.cold_items if dataset.num_cold_items else None)
        res["seconds"] = round(res["seconds"], 2)
        res["training"] = training_record(run, scorer.name)
        if generators and scorer is generators[0]:
            result.update(res)
        elif scorer in generators:
            result["generator_variants"][scorer.name] = res
        else:
            result["baselines"][scorer.name] = res
        logger.info("%s: recall@10 %.4f ndcg@10 %.4f (%.1fs)", scorer.name, res["metrics"]["recall@10"],
                    res["metrics"]["ndcg@10"], res["seconds"])
    write_report(result, out_dir)
    atomic_write_json(out_dir / "metrics.json", result)
    return result


def _fused(run: Path, fuse: str, generators: list, dataset, result: dict[str, Any], *, exclude_history: bool,
           cold_shares: tuple[float, ...] = ()) -> list:
    """The generator fused with ``fuse`` (only SASRec; plus the text kNN's score for a generator that reads
    text), the fusion chosen on VALID and recorded in ``result``, then its ablations (``sidrec.eval.fusion.
    ablations``: SASRec + text, generator + text) and, on a cold-start split, a row per ``cold_shares`` value
    (TIGER's epsilon in the fused list; a generator with item text only)."""
    from sidrec.eval.fusion import ablations, fit_run_fusion

    if fuse != "sasrec":
        raise ValueError(f"--fuse {fuse!r}: only 'sasrec' can be fused with the generator")
    if not generators:
        raise ValueError(f"--fuse sasrec needs the run's generator ({result['generator_status']})")
    scorer, grid = fit_run_fusion(run, generator=generators[0], dataset=dataset, exclude_history=exclude_history)
    result["fusion"] = {"norm": scorer.settings.norm, "weight": scorer.settings.weight,
                        "popularity": scorer.settings.popularity, "text_weight": scorer.settings.text_weight,
                        "name": scorer.name, "chosen_on": "valid", "grid": grid}
    shares = [share for share in cold_shares if share > 0] if scorer.unit_text is not None else []
    return [scorer, *ablations(scorer, grid), *(scorer.with_cold_share(share) for share in shares)]


def _check_args(*, beam_size: int | None, n_boot: int, batch_size: int) -> None:
    if beam_size is not None and beam_size < LIST_LENGTH:
        raise ValueError(f"beam_size {beam_size} is below the {LIST_LENGTH} items each list holds (the beam proposes "
                         f"them); use a beam size of {LIST_LENGTH} or more")
    if n_boot < 0:
        raise ValueError(f"bootstrap resamples must be >= 0 (0 = no intervals), got {n_boot}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _result_header(config: dict[str, Any], *, dataset, users: int, status: str) -> dict[str, Any]:
    """metrics.json before any model is scored: the settings, the dataset, the code version, date and machine."""
    return {
        "split": config["split"], "num_users": users, "exclude_history": config["exclude_history"],
        "bootstrap": config["bootstrap"], "seed": config["seed"], "list_length": LIST_LENGTH, "catalog_k": CATALOG_K,
        "config": config,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "num_items": dataset.num_items,
                    "num_users": dataset.num_users, "cold_items": dataset.num_cold_items},
        "git_commit": git_commit(), "generator_status": status,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"device": _device(), "cpu_cores": os.cpu_count()},
        "metrics": {}, "ci": {}, "slices": {}, "seconds": None, "generator_variants": {}, "baselines": {},
    }


def _describe_generator(result: dict[str, Any], scorer) -> None:
    """The generator's family, decoding settings, provenance and table in ``result`` (and the beam used)."""
    from sidrec.decoding import ranks_exactly
    from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR

    settings = scorer.settings  # the checkpoint's own, with any --beam-size applied
    if ranks_exactly(scorer.model):
        result["config"]["beam_size"] = None  # exact ranking of the whole catalog: no beam
    else:
        effective = settings.beam_size
        if effective < LIST_LENGTH:  # the ranker widens it to the list length; say so and record that
            logger.info("the generator was validated with beam %d; the %d-item lists are decoded with beam %d",
                        effective, LIST_LENGTH, LIST_LENGTH)
            effective = LIST_LENGTH
        result["config"]["beam_size"] = effective
    result["generator"] = {"family": scorer.model.family, "hybrid_weight": settings.dense_weight,
                           "decoding": settings.to_dict(),
                           "provenance": getattr(scorer.model.config, GENERATOR_PROVENANCE_ATTR, None),
                           "semantic_ids": scorer.table}


def _print_rows(result: dict[str, Any], out_dir: Path) -> None:
    """One line of headline metrics per scored model (the CLI's summary)."""
    rows = [("generator", result)] if result["metrics"] else []
    rows += list(result["generator_variants"].items()) + list(result["baselines"].items())
    width = max((len(name) for name, _ in rows), default=12)
    for name, block in rows:
        m = block["metrics"]
        cold = block.get("slices", {}).get("target_cold", {})
        split = "".join(f" {part}_recall@10={cold[part]['recall@10']:.4f}" for part in ("warm", "cold") if part in cold)
        print(f"{name:{width}s} recall@10={m['recall@10']:.4f} ndcg@10={m['ndcg@10']:.4f} mrr={m['mrr']:.4f} "
              f"coverage={m['coverage']:.4f} invalid_rate={m['invalid_rate']:.4f}{split}")
    print(f"wrote {out_dir / 'metrics.json'}")


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
    p.add_argument("--beam-size", type=int, default=None,
                   help="generator beam width (default: the one the generator was validated with, else "
                        f"{DEFAULT_BEAM_SIZE}; the parallel family ranks exactly, without a beam)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="generator users per beam-search batch (256: 1.5x the users/s of 64 here)")
    p.add_argument("--no-generator", action="store_true", help="evaluate the baselines only")
    p.add_argument("--out", default=None, help="output folder (default RUN/eval)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json in the output folder")
    p.add_argument("--fuse", default=None, choices=("sasrec",),
                   help="add the generator fused with SASRec (weight and normalization chosen on VALID, saved as "
                        "RUN/fusion.json); needs a generator that scores the whole catalog (family parallel, or a "
                        "dense head: item/hybrid, whose dense scores are fused)")
    p.add_argument("--cold-share", default="",
                   help="TIGER's epsilon: comma list of shares of each generator list reserved for cold-start items "
                        "(rows the tokenizer assigned after its fit), one extra row each, e.g. 0.1,0.2")
    args = p.parse_args(argv)
    try:
        cold_shares = tuple(float(x) for x in args.cold_share.split(",") if x.strip())
    except ValueError:
        p.error(f"--cold-share must be a comma list of numbers in [0, 1], got {args.cold_share!r}")
    if any(not 0.0 <= x <= 1.0 for x in cold_shares):
        p.error(f"--cold-share values must lie in [0, 1], got {args.cold_share!r}")
    if args.max_users is not None and args.max_users < 1:
        p.error(f"--max-users must be >= 1, got {args.max_users}")
    if args.bootstrap < 0:
        p.error(f"--bootstrap must be >= 0 (0 = no confidence intervals), got {args.bootstrap}")
    if args.beam_size is not None and args.beam_size < LIST_LENGTH:
        p.error(f"--beam-size must be >= {LIST_LENGTH} (each list holds {LIST_LENGTH} items), got {args.beam_size}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():  # found before scoring, not after
        p.error(f"--out {args.out} is a file; give a folder for the report (metrics.json, report.md)")
    configure_logging()
    baselines = None
    if args.baselines is not None:
        baselines = [] if args.baselines.strip() == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    with stage_lock(args.run, "evaluate"):  # one writer of RUN/eval (and fusion.json) at a time
        result = evaluate_run(args.run, split=args.split, baselines=baselines, max_users=args.max_users,
                              n_boot=args.bootstrap, seed=args.seed, exclude_history=args.exclude_history,
                              beam_size=args.beam_size, batch_size=args.batch_size,
                              generator=not args.no_generator, out=args.out, overwrite=args.overwrite,
                              cold_shares=cold_shares, fuse=args.fuse)
    _print_rows(result, Path(args.out) if args.out else RunFolder(args.run).eval_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
