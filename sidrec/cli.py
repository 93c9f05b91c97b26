"""The ``sidrec`` command line.

Each subcommand is one function taking its own argv, registered in ``COMMANDS``; stage commands forward
their arguments to the stage's ``main(argv)`` (the same function ``python -m sidrec.train.<stage>`` runs),
so the CLI and ``accelerate launch`` accept the same flags.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("sidrec")


def _setup_logging(verbose: bool = False) -> None:
    from sidrec.utils import configure_logging

    configure_logging(logging.DEBUG if verbose else logging.INFO)


def format_stats(stats: dict) -> str:
    """A small aligned table of dataset stats."""
    rows = [
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("sequence length min/median/mean/max",
         f"{stats['seq_len_min']} / {stats['seq_len_median']:g} / {stats['seq_len_mean']:.2f} / {stats['seq_len_max']}"),
        ("items without text", f"{stats['items_without_text']:,}"),
    ]
    if stats.get("cold_items"):
        rows.append(("cold-start items (held out)", f"{stats['cold_items']:,} ({stats.get('cold_method', '')})"))
        rows.append(("test users with a cold target", f"{stats['cold_test_users']:,}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def check_out_folder(out: Path) -> None:
    """``ValueError`` unless ``out`` is (or can be made) a writable folder; creates it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder for the run (e.g. runs/mine)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        import tempfile

        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e}); choose a folder you can write to") from e


def _report_invalidated(out: Path, before: str | None, after: str) -> None:
    """After ``prepare --overwrite``: which later stages still match the new dataset, which no longer do."""
    from sidrec.utils.run_folder import later_stages_present

    later = later_stages_present(out, "prepare")
    if not later:
        return
    if before == after:
        logger.info("the dataset is unchanged (fingerprint %s): %s still match it", after, ", ".join(later))
        return
    logger.warning(
        "the dataset changed (fingerprint %s -> %s); built on the old one and now refused by their loaders: %s. "
        "Rebuild them: sidrec tokenize --run %s --overwrite, then sidrec train / sidrec sasrec / sidrec evaluate "
        "with --overwrite", before or "unknown", after, ", ".join(later), out,
    )


def cmd_prepare(argv: list[str]) -> int:
    """Read a dataset, filter and split it, and write RUN/dataset/."""
    from sidrec.data import BUNDLED, PrepareConfig
    from sidrec.data.readers import READERS
    from sidrec.utils import load_config
    from sidrec.utils.locks import stage_lock

    p = argparse.ArgumentParser(prog="sidrec prepare", description=cmd_prepare.__doc__)
    p.add_argument("--dataset", required=True,
                   help=f"a bundled dataset ({', '.join(BUNDLED)}) or a folder: interactions.csv + items.jsonl, "
                        "Amazon-2014 reviews_*_5.json.gz + meta_*.json.gz, Amazon-2018 <Cat>.json.gz + "
                        "meta_<Cat>.json.gz, Amazon-2023 <Cat>.jsonl[.gz] + meta_<Cat>.jsonl[.gz], or a MovieLens "
                        "ml-1m/ml-100k folder")
    p.add_argument("--out", required=True, help="run folder; the prepared data goes to OUT/dataset/")
    p.add_argument("--format", choices=sorted(READERS), help="force a reader instead of detecting it")
    p.add_argument("--min-user-count", type=int, default=0, help="k-core: drop users with fewer interactions")
    p.add_argument("--min-item-count", type=int, default=0, help="k-core: drop items with fewer interactions")
    p.add_argument("--text-template", default=None, help="item text template, e.g. 'Title: {title}; Brand: {brand}'")
    p.add_argument("--cold-items", type=float, default=0.0, metavar="FRACTION",
                   help="cold-start split: hold out this share of the items, the newest by first interaction "
                        "(a seeded random choice without timestamps), as items no stage trains on; they stay only "
                        "as test targets (default 0 = off)")
    p.add_argument("--cold-seed", type=int, default=0, help="seed of the cold-start choice (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the prepared dataset of a used run folder (later stages that no longer match "
                        "are listed, and their loaders refuse them)")
    args = p.parse_args(argv)
    overrides = {"min_user_count": args.min_user_count, "min_item_count": args.min_item_count,
                 "cold_items": args.cold_items, "cold_seed": args.cold_seed}
    if args.text_template is not None:
        overrides["text_template"] = args.text_template
    config = load_config(PrepareConfig, None, overrides)
    run = Path(args.out)
    check_out_folder(run)
    with stage_lock(run, "prepare"):  # one writer per stage: a second `prepare` into this folder refuses
        return _prepare_into(run, args, config)


def _prepare_into(run: Path, args: argparse.Namespace, config: Any) -> int:
    """``sidrec prepare``'s work once ``run`` is locked: refuse or replace, read, prepare, write, report."""
    from sidrec.data import CATALOG_FILE, load_raw, prepare, save_catalog
    from sidrec.utils.provenance import run_dataset_fingerprint
    from sidrec.utils.run_folder import later_stages_present, refuse_existing

    found = refuse_existing(run, "prepare", overwrite=args.overwrite)
    later = later_stages_present(run, "prepare")
    if later and not found and not args.overwrite:
        raise ValueError(f"{run} holds later stages ({', '.join(later)}) but no dataset; pass --overwrite to "
                         "prepare into it anyway (they will be checked against the new dataset), or use another folder")
    try:
        before = run_dataset_fingerprint(run)
    except ValueError:  # a damaged stats.json: the old dataset is unknown, the new one replaces it
        before = None
    raw = load_raw(args.dataset, args.format)
    dataset, dropped = prepare(raw, config)
    del raw  # the raw metadata is not needed for writing (1-2 GB at 1M items)
    out = dataset.save(run, extra={"dataset_arg": args.dataset, "config": vars(config), "dropped": dropped})
    save_catalog(run / CATALOG_FILE, dataset.item_ids, dataset.item_titles)
    stats = json.loads((out / "stats.json").read_text())  # written by save: its fingerprint, no second hash
    if found or later:
        _report_invalidated(run, before, stats["fingerprint"])
    print(f"prepared {dataset.name} -> {out}")
    print(format_stats(stats))
    if any(dropped.values()):
        print("dropped: " + json.dumps(dropped))
    return 0


def _history_arg(value: str) -> list[str]:
    """``--history``: ``12,873,40``, or a JSON list of ids (``["a,b", "c"]``) when an id holds a comma."""
    if value.lstrip().startswith("["):
        try:
            ids = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"--history {value!r} starts with '[' but is not a JSON list ({e}); e.g. "
                             "'[\"a,b\", \"c\"]'") from None
        if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"--history {value!r}: the JSON list must hold item ids (strings or integers)")
        return [str(i) for i in ids]
    return [h.strip() for h in value.split(",") if h.strip()]


def cmd_recommend(argv: list[str]) -> int:
    """Print the top-k recommendations (id, score, title) for one history."""
    from sidrec.api import Recommender

    p = argparse.ArgumentParser(prog="sidrec recommend", description=cmd_recommend.__doc__)
    p.add_argument("--run", required=True, help="run or recommender folder (tokenizer/, generator/, catalog.jsonl)")
    p.add_argument("--history", required=True,
                   help="item ids, oldest first: comma-separated (12,873,40) or a JSON list for ids that hold a "
                        "comma ('[\"a,b\", \"c\"]')")
    p.add_argument("-k", "--k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    p.add_argument("--skip-unknown", action="store_true", help="skip unknown item ids instead of failing")
    p.add_argument("--fuse", action="store_true",
                   help="rank by the generator fused with SASRec (RUN/fusion.json, from `sidrec evaluate --fuse sasrec`)")
    args = p.parse_args(argv)
    history = _history_arg(args.history)
    rec = Recommender.from_pretrained(args.run, fuse=True if args.fuse else None)
    results = rec.recommend(history, k=args.k, exclude_seen=not args.include_seen,
                            on_unknown="skip" if args.skip_unknown else "error")
    width = max(len(r.item_id) for r in results) if results else 4
    print(f"{'rank':>4}  {'item_id':<{width}}  {'score':>8}  title")
    for n, r in enumerate(results, start=1):
        print(f"{n:>4}  {r.item_id:<{width}}  {r.score:>8.3f}  {r.title or '(no title)'}")
    return 0


def _forward(module: str, prog: str) -> Callable[[list[str]], int]:
    """A subcommand that forwards its argv to ``module.main``."""

    def run(argv: list[str]) -> int:
        return int(importlib.import_module(module).main(argv) or 0)

    run.__doc__ = prog
    return run


#: name -> (one-line help, handler). Only commands that work are listed.
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "prepare": ("prepare a dataset into a run folder and print its stats", cmd_prepare),
    "tokenize": ("fit the semantic-ID tokenizer (RUN/tokenizer)", _forward("sidrec.train.tokenizer", "tokenize")),
    "train": ("train the generator (RUN/generator)", _forward("sidrec.train.generator", "train")),
    "sasrec": ("train the SASRec baseline (RUN/baselines/sasrec)", _forward("sidrec.train.sasrec", "sasrec")),
    "evaluate": ("leave-one-out evaluation with baselines (RUN/eval)", _forward("sidrec.eval.evaluate", "evaluate")),
    "recommend": ("print recommendations for a history", cmd_recommend),
    "serve": ("serve a run over HTTP (needs the 'serve' extra)", _forward("sidrec.serve.main", "serve")),
    "quickstart": ("prepare -> tokenize -> train -> evaluate on bundled Beauty", _forward("sidrec.quickstart", "quickstart")),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(len(n) for n in COMMANDS)
    epilog = "commands:\n" + "\n".join(f"  {n:<{width}}  {h}" for n, (h, _) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="sidrec", description="Generative recommendation with semantic IDs.",
        epilog=epilog + "\n\nRun `sidrec COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's own options")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (before COMMAND)")
    p.add_argument("--version", action="version", version=f"sidrec {_version()}")
    if not argv:
        p.print_help()
        return 2
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command][1](args.args)
    except ValueError as e:
        logger.error("%s", e)
        logger.debug("where it was raised", exc_info=True)
        return 1
    except Exception as e:  # disk full, read-only, file-size limit, permissions: one line, the traceback with -v
        from sidrec.utils.io import as_os_error

        os_error = as_os_error(e)  # an OSError, or a library's wrapper of one (safetensors in accelerate's states)
        if os_error is None:
            raise
        logger.error("%s", os_error_line(os_error))
        logger.debug("where it was raised", exc_info=True)
        return 1


#: what to do about each kind of file-system error a stage can meet
_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space (or write the run to another disk) and rerun the command",
    errno.EDQUOT: "the disk quota is used up: free space (or write the run to another disk) and rerun the command",
    errno.EFBIG: "a file hit the file-size limit (`ulimit -f`): raise it and rerun the command",
    errno.EROFS: "the file system is read-only: copy the run folder somewhere writable (or pass --out) and rerun",
    errno.EACCES: "permission denied: run as the folder's owner, make it writable (`chmod -R u+w`), or use --out",
    errno.EPERM: "permission denied: run as the folder's owner, make it writable (`chmod -R u+w`), or use --out",
}


def os_error_line(e: OSError) -> str:
    """One line for a file-system error of a stage: the path, what happened and what to do. Stages write
    through temporary names, so what they had finished is kept and what they were writing is not published."""
    where = f"{e.filename}: " if e.filename else ""
    fix = _OS_FIXES.get(e.errno, "rerun the command once the cause is fixed; -v shows where it happened")
    return f"{where}{e.strerror or e} ({fix}; stages write through temporary names, so finished outputs are kept)"


def _version() -> str:
    from sidrec.utils.version import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
