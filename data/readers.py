"""Readers for raw interaction logs and item metadata.

Every reader returns a :class:`RawDataset`: interactions as parallel ``users``/``items`` lists in
sequence order (row order within each user) and item metadata keyed by item id. Readers are strict:
a problem in a file raises ``ValueError`` naming the file, the line and the fix.

Supported inputs:
- generic: ``interactions.csv`` (``user_id,item_id[,timestamp,...]``) + ``items.jsonl`` (``item_id`` plus
  any text fields); either may be gzipped (``.gz``).
- Amazon-2014 raw downloads: ``reviews_<Category>_5.json.gz`` + ``meta_<Category>.json.gz`` (the meta file
  holds Python-literal lines, parsed with ``ast.literal_eval``, never ``eval``).
- MovieLens raw folders: ml-1m (``ratings.dat``, ``movies.dat``) and ml-100k (``u.data``, ``u.item``).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class RawDataset:
    """Interactions in sequence order plus item metadata, before filtering and ID remapping."""

    name: str
    users: list[str]
    items: list[str]
    item_meta: dict[str, dict[str, Any]]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.users) != len(self.items):
            raise ValueError("users and items must be parallel lists of the same length")


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    """Read a (possibly gzipped) text file; undecodable bytes raise an error naming the line."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a valid gzip file ({e}); re-download or decompress it") from e
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: bytes that are not valid {encoding} ({raw[e.start:e.start + 8]!r}); "
            f"re-save the file as {encoding}"
        ) from e
    text = text.lstrip("\ufeff")  # a byte-order mark is not content: a file holding only one is empty
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; it needs a header and at least one row")
    return text


def _find(folder: Path, *names: str) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


# ----------------------------------------------------------------------------- generic


def _short(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (a broken quote can make a row hold the rest of the file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` pairs; a CSV syntax error names the file and the line where its row starts."""
    reader = csv.reader(io.StringIO(text), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            hint = ("a quoted field is never closed (a stray '\"')" if "end of data" in str(e) or "EOF" in str(e)
                    else "quote fields that hold commas or quotes (\"...\", with \"\" for a quote)")
            if "field larger than field limit" in str(e):
                hint = (f"a field is longer than {csv.field_size_limit():,} characters, usually a quote that is "
                        "never closed")
            raise ValueError(f"{path}, line {start}: not valid CSV ({e}); {hint}") from None
        yield start, row


def read_interactions_csv(path: Path) -> tuple[list[str], list[str]]:
    """Read ``user_id,item_id[,...]`` rows in file order."""
    text = _read_text(path)
    rows = _csv_rows(path, text)
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{path}: the file is empty; it needs a header and at least one row")
    header = [h.strip() for h in first[1]]
    missing = [c for c in ("user_id", "item_id") if c not in header]
    if missing:
        raise ValueError(
            f"{path}, line 1: missing column(s) {', '.join(missing)} in header {header}; "
            "the first line must name at least user_id,item_id"
        )
    ui, ii = header.index("user_id"), header.index("item_id")
    need = max(ui, ii) + 1
    users: list[str] = []
    items: list[str] = []
    for lineno, row in rows:
        if not row:
            continue
        if len(row) < need:
            raise ValueError(f"{path}, line {lineno}: expected {len(header)} columns, got {len(row)}: {_short(row)}")
        u, i = row[ui].strip(), row[ii].strip()
        if not u or not i:
            raise ValueError(f"{path}, line {lineno}: empty user_id or item_id; fill it in or delete the row")
        users.append(u)
        items.append(i)
    if not users:
        raise ValueError(f"{path}: no interaction rows after the header")
    return users, items


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _read_text(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({e.msg}); one JSON object per line") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_items_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    """Read ``items.jsonl``: one object per item with an ``item_id`` and any text fields."""
    meta: dict[str, dict[str, Any]] = {}
    for lineno, obj in _iter_jsonl(path):
        if "item_id" not in obj or obj["item_id"] in (None, ""):
            raise ValueError(f"{path}, line {lineno}: missing column item_id; every line needs an \"item_id\"")
        iid = str(obj["item_id"]).strip()
        if iid in meta:
            raise ValueError(
                f"{path}, line {lineno}: duplicate item_id {iid!r} (first seen earlier in the file); "
                "keep one row per item"
            )
        meta[iid] = obj
    if not meta:
        raise ValueError(f"{path}: no item rows")
    return meta


def read_generic(folder: Path) -> RawDataset:
    """Read a folder holding ``interactions.csv`` and ``items.jsonl`` (optionally gzipped)."""
    inter = _find(folder, "interactions.csv")
    items = _find(folder, "items.jsonl")
    if inter is None or items is None:
        raise ValueError(
            f"{folder}: expected interactions.csv and items.jsonl (optionally .gz); "
            f"found {sorted(p.name for p in folder.iterdir())}"
        )
    users, its = read_interactions_csv(inter)
    meta = read_items_jsonl(items)
    missing = {}
    for n, i in enumerate(its):
        if i not in meta and i not in missing:
            missing[i] = n + 2
    if missing:
        first, line = next(iter(missing.items()))
        raise ValueError(
            f"{inter}, line {line}: item {first!r} has no row in {items.name} "
            f"({len(missing)} item id(s) without metadata in all); add a row for each to {items.name} "
            "(text fields may be null) or remove their interactions"
        )
    return RawDataset(name=folder.name, users=users, items=its, item_meta=meta, source=str(folder))


# ----------------------------------------------------------------------------- Amazon 2014

_AMAZON_REVIEWS = re.compile(r"reviews_(.+?)(_5)?\.json(\.gz)?$")


def read_amazon2014(folder: Path) -> RawDataset:
    """Read Amazon-2014 ``reviews_<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``.

    Each user's reviews are ordered by ``unixReviewTime`` (stable on ties, i.e. file order), the
    convention of P5/S3-Rec/TIGER.
    """
    reviews = sorted(p for p in folder.iterdir() if _AMAZON_REVIEWS.match(p.name))
    if len(reviews) != 1:
        raise ValueError(f"{folder}: expected exactly one reviews_<Category>_5.json[.gz], found {len(reviews)}")
    rpath = reviews[0]
    category = _AMAZON_REVIEWS.match(rpath.name).group(1)
    mpath = _find(folder, f"meta_{category}.json")
    if mpath is None:
        raise ValueError(f"{folder}: missing meta_{category}.json.gz next to {rpath.name}")
    rows: list[tuple[str, int, int, str]] = []
    for lineno, obj in _iter_jsonl(rpath):
        try:
            rows.append((str(obj["reviewerID"]), int(obj["unixReviewTime"]), lineno, str(obj["asin"])))
        except KeyError as e:
            raise ValueError(f"{rpath}, line {lineno}: missing field {e.args[0]!r} (need reviewerID, asin, "
                             "unixReviewTime)") from e
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    meta: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(_read_text(mpath).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{mpath}, line {lineno}: not a Python-literal dict ({e})") from e
        if not isinstance(obj, dict) or "asin" not in obj:
            raise ValueError(f"{mpath}, line {lineno}: expected a dict with an 'asin' key")
        asin = str(obj["asin"])
        if asin in meta:
            raise ValueError(f"{mpath}, line {lineno}: duplicate asin {asin!r}; keep one row per item")
        obj = dict(obj)
        obj["item_id"] = asin
        meta[asin] = obj
    missing = sorted({r[3] for r in rows} - meta.keys())
    if missing:
        raise ValueError(f"{rpath}: {len(missing)} reviewed item(s) have no row in {mpath.name} "
                         f"(first: {missing[0]!r}); use the meta file of the same category")
    return RawDataset(
        name=f"amazon2014_{category.lower()}",
        users=[r[0] for r in rows], items=[r[3] for r in rows], item_meta=meta, source=str(folder),
    )


# ----------------------------------------------------------------------------- MovieLens


def _timestamp(value: str, path: Path, lineno: int) -> int:
    """A MovieLens timestamp (integer seconds); ``ValueError`` naming the file and line otherwise."""
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: timestamp {_short(value, 40)} is not an integer "
                         "(seconds since 1970); fix or delete the row") from None


def _sort_by_user_time(rows: list[tuple[str, str, int]]) -> tuple[list[str], list[str]]:
    order = sorted(range(len(rows)), key=lambda n: (rows[n][0].zfill(12), rows[n][2], n))
    return [rows[n][0] for n in order], [rows[n][1] for n in order]


def read_movielens_1m(folder: Path) -> RawDataset:
    """Read GroupLens ml-1m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) + ``movies.dat``."""
    rpath, mpath = _find(folder, "ratings.dat"), _find(folder, "movies.dat")
    if rpath is None or mpath is None:
        raise ValueError(f"{folder}: ml-1m needs ratings.dat and movies.dat")
    rows = []
    for lineno, line in enumerate(_read_text(rpath, "latin-1").splitlines(), start=1):
        parts = line.split("::")
        if len(parts) < 4:
            raise ValueError(f"{rpath}, line {lineno}: expected UserID::MovieID::Rating::Timestamp")
        rows.append((parts[0], parts[1], _timestamp(parts[3], rpath, lineno)))
    meta = {}
    for lineno, line in enumerate(_read_text(mpath, "latin-1").splitlines(), start=1):
        parts = line.split("::")
        if len(parts) < 3:
            raise ValueError(f"{mpath}, line {lineno}: expected MovieID::Title::Genres")
        if parts[0] in meta:
            raise ValueError(f"{mpath}, line {lineno}: duplicate MovieID {parts[0]!r}")
        meta[parts[0]] = {"item_id": parts[0], "title": parts[1], "categories": parts[2].split("|")}
    users, items = _sort_by_user_time(rows)
    _check_known(items, meta, rpath, mpath)
    return RawDataset(name="ml-1m", users=users, items=items, item_meta=meta, source=str(folder))


_ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                  "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                  "Thriller", "War", "Western"]


def read_movielens_100k(folder: Path) -> RawDataset:
    """Read GroupLens ml-100k: ``u.data`` (tab-separated) + ``u.item`` (pipe-separated, latin-1)."""
    rpath, mpath = _find(folder, "u.data"), _find(folder, "u.item")
    if rpath is None or mpath is None:
        raise ValueError(f"{folder}: ml-100k needs u.data and u.item")
    rows = []
    for lineno, line in enumerate(_read_text(rpath, "latin-1").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 4:
            raise ValueError(f"{rpath}, line {lineno}: expected user<TAB>item<TAB>rating<TAB>timestamp")
        rows.append((parts[0], parts[1], _timestamp(parts[3], rpath, lineno)))
    meta = {}
    for lineno, line in enumerate(_read_text(mpath, "latin-1").splitlines(), start=1):
        parts = line.split("|")
        if len(parts) < 5:
            raise ValueError(f"{mpath}, line {lineno}: expected movie id|title|release date|...|genre flags")
        flags = parts[-19:]
        genres = [g for g, f in zip(_ML100K_GENRES, flags, strict=False) if f.strip() == "1"]
        title = parts[1] if parts[1] != "unknown" else None
        if parts[0] in meta:
            raise ValueError(f"{mpath}, line {lineno}: duplicate movie id {parts[0]!r}; keep one row per movie")
        meta[parts[0]] = {"item_id": parts[0], "title": title, "categories": genres}
    users, items = _sort_by_user_time(rows)
    _check_known(items, meta, rpath, mpath)
    return RawDataset(name="ml-100k", users=users, items=items, item_meta=meta, source=str(folder))


def _check_known(items: list[str], meta: dict, rpath: Path, mpath: Path) -> None:
    missing = sorted(set(items) - meta.keys())
    if missing:
        raise ValueError(f"{rpath}: {len(missing)} item(s) have no row in {mpath.name} (first: {missing[0]!r})")


# ----------------------------------------------------------------------------- dispatch

READERS = {
    "generic": read_generic,
    "amazon2014": read_amazon2014,
    "movielens-1m": read_movielens_1m,
    "movielens-100k": read_movielens_100k,
}


def detect_format(folder: Path) -> str:
    """Guess a folder's format from the files it holds."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if names & {"interactions.csv", "interactions.csv.gz"}:
        return "generic"
    if any(_AMAZON_REVIEWS.match(n) for n in names):
        return "amazon2014"
    if names & {"ratings.dat", "ratings.dat.gz"}:
        return "movielens-1m"
    if names & {"u.data", "u.data.gz"}:
        return "movielens-100k"
    raise ValueError(
        f"{folder}: unrecognised dataset folder (files: {sorted(names)[:10]}). Expected interactions.csv + "
        "items.jsonl, reviews_<Cat>_5.json.gz + meta_<Cat>.json.gz, ml-1m's ratings.dat, or ml-100k's u.data"
    )


def read_dataset(folder: str | Path, fmt: str | None = None) -> RawDataset:
    """Read a dataset folder in the given (or detected) format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; pass a dataset folder or a bundled name (e.g. 'beauty')")
    fmt = fmt or detect_format(folder)
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; choose one of {', '.join(READERS)}")
    return READERS[fmt](folder)
