"""GroupLens MovieLens raw folders: ml-1m (``ratings.dat``, ``movies.dat``) and ml-100k (``u.data``, ``u.item``).

Both are small (at most 1M ratings) and line-oriented; they are read line by line (latin-1) into an
``InteractionLog``. Each user's ratings are ordered by timestamp, ties in file order; users in numeric
order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidrec.data.generic import PY_CHUNK_ROWS, _find
from sidrec.data.raw import InteractionLog, RawDataset
from sidrec.data.rawio import iter_lines, short

_ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                  "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                  "Thriller", "War", "Western"]


def _timestamp(value: str, path: Path, lineno: int) -> int:
    """A MovieLens timestamp (integer seconds); ``ValueError`` naming the file and line otherwise."""
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: timestamp {short(value, 40)} is not an integer "
                         "(seconds since 1970); fix or delete the row") from None


def _ratings(path: Path, sep: str, expected: str) -> InteractionLog:
    log = InteractionLog(with_time=True)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    for lineno, line in iter_lines(path, "latin-1"):
        parts = line.split(sep)
        if len(parts) < 4:
            raise ValueError(f"{path}, line {lineno}: expected {expected}")
        times.append(_timestamp(parts[3], path, lineno))
        users.append(parts[0])
        items.append(parts[1])
        if len(users) == PY_CHUNK_ROWS:
            log.add(users, items, times)
            users, items, times = [], [], []
    log.add(users, items, times)
    return log


def _finish(log: InteractionLog, meta: dict[str, dict[str, Any]], name: str, folder: Path,
            rpath: Path, mpath: Path) -> RawDataset:
    missing = sorted(set(log.item_vocab) - meta.keys())
    if missing:
        raise ValueError(f"{rpath}: {len(missing)} item(s) have no row in {mpath.name} (first: {missing[0]!r})")
    return log.finish(name=name, item_meta=meta, source=str(folder), order="user-time",
                      user_key=lambda u: u.zfill(12))


def read_movielens_1m(folder: Path) -> RawDataset:
    """Read GroupLens ml-1m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) + ``movies.dat``."""
    rpath, mpath = _find(folder, "ratings.dat"), _find(folder, "movies.dat")
    if rpath is None or mpath is None:
        raise ValueError(f"{folder}: ml-1m needs ratings.dat and movies.dat")
    log = _ratings(rpath, "::", "UserID::MovieID::Rating::Timestamp")
    meta: dict[str, dict[str, Any]] = {}
    for lineno, line in iter_lines(mpath, "latin-1"):
        parts = line.split("::")
        if len(parts) < 3:
            raise ValueError(f"{mpath}, line {lineno}: expected MovieID::Title::Genres")
        if parts[0] in meta:
            raise ValueError(f"{mpath}, line {lineno}: duplicate MovieID {parts[0]!r}")
        meta[parts[0]] = {"item_id": parts[0], "title": parts[1], "categories": parts[2].split("|")}
    return _finish(log, meta, "ml-1m", folder, rpath, mpath)


def read_movielens_100k(folder: Path) -> RawDataset:
    """Read GroupLens ml-100k: ``u.data`` (tab-separated) + ``u.item`` (pipe-separated, latin-1)."""
    rpath, mpath = _find(folder, "u.data"), _find(folder, "u.item")
    if rpath is None or mpath is None:
        raise ValueError(f"{folder}: ml-100k needs u.data and u.item")
    log = _ratings(rpath, "\t", "user<TAB>item<TAB>rating<TAB>timestamp")
    meta: dict[str, dict[str, Any]] = {}
    for lineno, line in iter_lines(mpath, "latin-1"):
        parts = line.split("|")
        if len(parts) < 5:
            raise ValueError(f"{mpath}, line {lineno}: expected movie id|title|release date|...|genre flags")
        flags = parts[-19:]
        genres = [g for g, f in zip(_ML100K_GENRES, flags, strict=False) if f.strip() == "1"]
        title = parts[1] if parts[1] != "unknown" else None
        if parts[0] in meta:
            raise ValueError(f"{mpath}, line {lineno}: duplicate movie id {parts[0]!r}; keep one row per movie")
        meta[parts[0]] = {"item_id": parts[0], "title": title, "categories": genres}
    return _finish(log, meta, "ml-100k", folder, rpath, mpath)
