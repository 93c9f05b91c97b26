"""The generic format: ``interactions.csv`` (``user_id,item_id[,...]``) + ``items.jsonl`` (either gzipped).

Row order of ``interactions.csv`` is the sequence order within a user. The CSV is streamed through
``pyarrow.csv`` in blocks (only the two id columns are decoded); a file pyarrow rejects, or one with an
empty id, is read again with the ``csv`` module, which either gives the same rows (e.g. ragged extra
columns, which pyarrow refuses) or raises the precise error. ``items.jsonl`` is read line by line; only
the items that have interactions are kept (the others are counted).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from sidrec.data.raw import InteractionLog, RawDataset
from sidrec.data.rawio import BLOCK_BYTES, iter_json_objects, iter_lines

logger = logging.getLogger(__name__)

#: Rows handed to the log per chunk by the line-by-line (fallback) path.
PY_CHUNK_ROWS = 200_000


def _find(folder: Path, *names: str) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """Records of a CSV file (header first), streamed; decode/gzip/empty errors name the file."""
    return csv.reader(text for _, text in iter_lines(path, keepends=True))


def _header(path: Path) -> tuple[list[str], int, int, int]:
    """Stripped header, index of user_id and item_id, and the physical lines the header spans."""
    reader = _csv_rows(path)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in ("user_id", "item_id") if c not in header]
    if missing:
        raise ValueError(
            f"{path}, line 1: missing column(s) {', '.join(missing)} in header {header}; "
            "the first line must name at least user_id,item_id"
        )
    return header, header.index("user_id"), header.index("item_id"), reader.line_num


class _Fallback(Exception):
    """The fast path cannot vouch for this file; read it line by line."""


def _read_fast(path: Path, header: list[str], ui: int, ii: int, skip: int) -> InteractionLog:
    names = [f"c{i}" for i in range(len(header))]
    log = InteractionLog()
    source = pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)
    reader = pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(skip_rows=skip, column_names=names, block_size=BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
        convert_options=pa_csv.ConvertOptions(
            include_columns=[names[ui], names[ii]],
            column_types={names[ui]: pa.string(), names[ii]: pa.string()},
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    for batch in reader:
        users = pc.utf8_trim_whitespace(batch.column(names[ui]))
        items = pc.utf8_trim_whitespace(batch.column(names[ii]))
        if pc.any(pc.equal(pc.utf8_length(users), 0)).as_py() or pc.any(pc.equal(pc.utf8_length(items), 0)).as_py():
            raise _Fallback("empty id")
        log.add(users, items)
    return log


def _read_python(path: Path, header: list[str], ui: int, ii: int) -> InteractionLog:
    """The line-by-line reader (exact ``csv`` semantics and errors)."""
    reader = _csv_rows(path)
    next(reader)
    need = max(ui, ii) + 1
    log = InteractionLog()
    users: list[str] = []
    items: list[str] = []
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < need:
            raise ValueError(f"{path}, line {lineno}: expected {len(header)} columns, got {len(row)}: {row}")
        u, i = row[ui].strip(), row[ii].strip()
        if not u or not i:
            raise ValueError(f"{path}, line {lineno}: empty user_id or item_id; fill it in or delete the row")
        users.append(u)
        items.append(i)
        if len(users) == PY_CHUNK_ROWS:
            log.add(users, items)
            users, items = [], []
    log.add(users, items)
    return log


def read_interactions_csv(path: Path) -> InteractionLog:
    """Read ``user_id,item_id[,...]`` rows in file order into an ``InteractionLog``."""
    header, ui, ii, skip = _header(path)
    try:
        log = _read_fast(path, header, ui, ii, skip)
    except (pa.ArrowInvalid, pa.ArrowTypeError, _Fallback, OSError) as e:
        logger.info("%s: pyarrow could not read it as plain CSV (%s); reading it line by line", path, e)
        log = _read_python(path, header, ui, ii)
    if log.num_rows == 0:
        raise ValueError(f"{path}: no interaction rows after the header")
    return log


def read_items_jsonl(path: Path, keep: set[str] | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Read ``items.jsonl``: one object per item with an ``item_id`` and any text fields.

    Returns the rows of the items in ``keep`` (all when None) and how many other rows were skipped.
    Duplicate ids are an error wherever they are.
    """
    meta: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    skipped = 0
    for lineno, obj in iter_json_objects(path):
        if "item_id" not in obj or obj["item_id"] in (None, ""):
            raise ValueError(f"{path}, line {lineno}: missing column item_id; every line needs an \"item_id\"")
        iid = str(obj["item_id"]).strip()
        if iid in seen:
            raise ValueError(
                f"{path}, line {lineno}: duplicate item_id {iid!r} (first seen earlier in the file); "
                "keep one row per item"
            )
        seen.add(iid)
        if keep is None or iid in keep:
            meta[iid] = obj
        else:
            skipped += 1
    if not seen:
        raise ValueError(f"{path}: no item rows")
    return meta, skipped


def read_generic(folder: Path) -> RawDataset:
    """Read a folder holding ``interactions.csv`` and ``items.jsonl`` (optionally gzipped)."""
    inter = _find(folder, "interactions.csv")
    items = _find(folder, "items.jsonl")
    if inter is None or items is None:
        raise ValueError(
            f"{folder}: expected interactions.csv and items.jsonl (optionally .gz); "
            f"found {sorted(p.name for p in folder.iterdir())}"
        )
    log = read_interactions_csv(inter)
    vocab = log.item_vocab
    meta, skipped = read_items_jsonl(items, set(vocab))
    if len(meta) < len(vocab):
        has_meta = [iid in meta for iid in vocab]
        codes = log.file_order_items()
        first_row = next(n for n, c in enumerate(codes.tolist()) if not has_meta[c])
        raise ValueError(
            f"{inter}, line {first_row + 2}: item {vocab[codes[first_row]]!r} has no row in {items.name} "
            f"({len(vocab) - len(meta)} item id(s) without metadata in all); add a row for each to {items.name} "
            "(text fields may be null) or remove their interactions"
        )
    return log.finish(name=folder.name, item_meta=meta, source=str(folder), meta_without_interactions=skipped)
