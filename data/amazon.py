"""Pieces shared by the Amazon readers (2014, 2018, 2023): reviews into a log, metadata, the coverage check.

Reviews are JSON lines; only the user, item and time fields are read (``json_columns_fast``: pyarrow
blocks; ``json_columns_python``: line by line, for exact errors). Each user's reviews are ordered by time, ties in file
order (the P5/S3-Rec/TIGER convention). Metadata is read line by line and only the items that were
reviewed are kept (the others are counted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from sidrec.data.raw import InteractionLog, RawDataset
from sidrec.data.rawio import NotClean, iter_lines, json_columns_fast, json_columns_python

logger = logging.getLogger(__name__)

Meta = dict[str, dict[str, Any]]


def read_reviews(path: Path, *, user: str, item: str, time: str) -> InteractionLog:
    """The (user, item, time) of every review line, streamed into a log (file order).

    pyarrow first; if it cannot vouch for the file, line by line (same result, or the precise error).
    """
    fields = {user: pa.string(), item: pa.string(), time: pa.int64()}
    try:
        log = InteractionLog(with_time=True)
        for cols in json_columns_fast(path, fields):
            log.add(cols[user], cols[item], cols[time])
    except NotClean as e:
        logger.info("%s: pyarrow could not read it as clean JSON lines (%s); reading it line by line", path, e)
        log = InteractionLog(with_time=True)
        for cols in json_columns_python(path, fields):
            log.add(cols[user], cols[item], cols[time])
    if log.num_rows == 0:
        raise ValueError(f"{path}: the file is empty; it needs at least one JSON line with {', '.join(fields)}")
    return log


def line_of_row(path: Path, row: int) -> int:
    """Line number of the ``row``-th (0-based) non-blank line of ``path`` (for error messages)."""
    seen = -1
    for lineno, text in iter_lines(path):
        if text.strip():
            seen += 1
            if seen == row:
                return lineno
    return 0


def check_covered(log: InteractionLog, meta: Meta, rpath: Path, mpath: Path, item_field: str) -> None:
    """``ValueError`` naming the first reviewed item without a metadata row (file, line, fix)."""
    vocab = log.item_vocab
    if len(meta) == len(vocab):
        return
    codes = log.file_order_items().tolist()
    first_row = next(n for n, c in enumerate(codes) if vocab[c] not in meta)
    missing = sum(1 for iid in vocab if iid not in meta)
    raise ValueError(
        f"{rpath}, line {line_of_row(rpath, first_row)}: reviewed item {vocab[codes[first_row]]!r} ({item_field}) has "
        f"no row in {mpath.name} ({missing} reviewed item(s) without metadata in all); use the meta file of the "
        "same category, or remove their reviews"
    )


def read_meta(lines: Iterator[tuple[int, dict[str, Any]]], path: Path, *, id_field: str, keep: set[str],
              convert: Callable[[dict[str, Any]], dict[str, Any]], strict: bool) -> tuple[Meta, int]:
    """Metadata rows ``item_id -> fields`` of the items in ``keep``; returns them and the rows skipped.

    ``convert`` maps a raw row to the stored fields (it must set ``item_id``). ``strict``: a duplicate
    id is an error (2014, as before); otherwise the first row wins and the duplicates are counted in
    the log (the 2018 downloads repeat some items).
    """
    meta: Meta = {}
    seen: set[str] = set()
    skipped = duplicates = 0
    for lineno, obj in lines:
        if obj.get(id_field) in (None, ""):
            raise ValueError(f"{path}, line {lineno}: missing field {id_field!r}; every line needs one "
                             "(use the meta file as downloaded)")
        iid = str(obj[id_field]).strip()
        if iid in seen:
            if strict:
                raise ValueError(f"{path}, line {lineno}: duplicate {id_field} {iid!r}; keep one row per item")
            duplicates += 1
            continue
        seen.add(iid)
        if iid in keep:
            meta[iid] = convert(obj)
        else:
            skipped += 1
    if duplicates:
        logger.warning("%s: %d duplicate %s row(s) skipped (the first row of each item is kept)",
                       path, duplicates, id_field)
    if not seen:
        raise ValueError(f"{path}: no item rows")
    return meta, skipped


def finish(log: InteractionLog, meta: Meta, skipped: int, *, name: str, folder: Path) -> RawDataset:
    """The dataset, users sorted by id and each user's reviews by time (ties in file order)."""
    if skipped:
        logger.info("%d metadata row(s) describe items nobody reviewed; not in the catalog", skipped)
    return log.finish(name=name, item_meta=meta, source=str(folder), order="user-time",
                      meta_without_interactions=skipped)


def category_path(value: Any) -> list[list[str]] | None:
    """A flat category list (2018 ``category``, 2023 ``categories``) as one path ``[[a, b, c]]``."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [value]
    return value or None
