"""Raw dataset folders: detect the format and dispatch to its reader (one module per format).

Every reader returns a :class:`RawDataset` (interactions as int32 codes grouped by user, in sequence
order, plus the metadata of the items that have interactions) and streams its input in bounded memory.
Readers are strict: a problem in a file raises ``ValueError`` naming the file, the line and the fix.

Supported inputs:
- generic (``sidrec.data.generic``): ``interactions.csv`` (``user_id,item_id[,timestamp,...]``) +
  ``items.jsonl`` (``item_id`` plus any text fields); either may be gzipped (``.gz``).
- Amazon 2014 (``sidrec.data.amazon2014``): ``reviews_<Category>_5.json.gz`` + ``meta_<Category>.json.gz``
  (the meta file holds Python-literal lines, parsed with ``ast.literal_eval``, never ``eval``).
- Amazon 2018 (``sidrec.data.amazon2018``): ``<Category>.json.gz`` (or ``_5``) + ``meta_<Category>.json.gz``.
- Amazon 2023 (``sidrec.data.amazon2023``): ``<Category>.jsonl[.gz]`` + ``meta_<Category>.jsonl[.gz]``.
- MovieLens raw folders (``sidrec.data.movielens``): ml-1m (``ratings.dat``, ``movies.dat``) and ml-100k
  (``u.data``, ``u.item``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sidrec.data import amazon2014, amazon2018, amazon2023
from sidrec.data.generic import read_generic
from sidrec.data.movielens import read_movielens_1m, read_movielens_100k
from sidrec.data.raw import RawDataset
from sidrec.utils.memory import paused_gc

__all__ = ["READERS", "RawDataset", "detect_format", "read_dataset"]

READERS: dict[str, Callable[[Path], RawDataset]] = {
    "generic": read_generic,
    "amazon2014": amazon2014.read_amazon2014,
    "amazon2018": amazon2018.read_amazon2018,
    "amazon2023": amazon2023.read_amazon2023,
    "movielens-1m": read_movielens_1m,
    "movielens-100k": read_movielens_100k,
}


def detect_format(folder: Path) -> str:
    """Guess a folder's format from the files it holds."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if names & {"interactions.csv", "interactions.csv.gz"}:
        return "generic"
    if any(amazon2014.REVIEWS.match(n) for n in names):
        return "amazon2014"
    if any(amazon2023.REVIEWS.fullmatch(n) for n in names) and any(n.startswith("meta_") for n in names):
        return "amazon2023"
    if any(amazon2018.REVIEWS.fullmatch(n) for n in names) and any(n.startswith("meta_") for n in names):
        return "amazon2018"
    if names & {"ratings.dat", "ratings.dat.gz"}:
        return "movielens-1m"
    if names & {"u.data", "u.data.gz"}:
        return "movielens-100k"
    raise ValueError(
        f"{folder}: unrecognised dataset folder (files: {sorted(names)[:10]}). Expected interactions.csv + "
        "items.jsonl, reviews_<Cat>_5.json.gz + meta_<Cat>.json.gz (Amazon 2014), <Cat>.json.gz + "
        "meta_<Cat>.json.gz (Amazon 2018), <Cat>.jsonl[.gz] + meta_<Cat>.jsonl[.gz] (Amazon 2023), "
        "ml-1m's ratings.dat, or ml-100k's u.data"
    )


def read_dataset(folder: str | Path, fmt: str | None = None) -> RawDataset:
    """Read a dataset folder in the given (or detected) format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; pass a dataset folder or a bundled name (e.g. 'beauty')")
    fmt = fmt or detect_format(folder)
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; choose one of {', '.join(READERS)}")
    with paused_gc():
        return READERS[fmt](folder)
