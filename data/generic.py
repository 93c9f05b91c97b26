"""The generic format: ``interactions.csv`` (``user_id,item_id[,...]``) + ``items.jsonl`` (either gzipped).

Row order of ``interactions.csv`` is the sequence order within a user. The CSV is streamed through
``pyarrow.csv`` in blocks (only the two id columns are decoded); a file pyarrow rejects, one with an
empty id, or one pyarrow would read differently from the strict ``csv`` module (a double quote anywhere,
a bare carriage return, a line longer than ``csv.field_size_limit()``: see ``_CheckedStream``) is read
again with ``csv`` (``strict=True``), which either gives the same rows (e.g. ragged extra columns, which
pyarrow refuses, or well-formed quoted fields) or raises the precise error: file, the line where the row
starts, what is wrong (an unclosed quote, text after a closing quote, a field over the size limit).
``items.jsonl`` is read line by line; only the items that have interactions are kept (the others are
counted).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from sidrec.data.raw import InteractionLog, RawDataset
from sidrec.data.rawio import BLOCK_BYTES, empty_file_error, iter_json_objects, iter_lines, short

logger = logging.getLogger(__name__)

#: Rows handed to the log per chunk by the line-by-line (fallback) path.
PY_CHUNK_ROWS = 200_000


def _find(folder: Path, *names: str) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


def _csv_error(path: Path, start: int, e: csv.Error) -> ValueError:
    """A ``csv`` syntax error as a message naming the file, the line where the row starts and the fix."""
    hint = ("a quoted field is never closed (a stray '\"')" if "end of data" in str(e) or "EOF" in str(e)
            else "quote fields that hold commas or quotes (\"...\", with \"\" for a quote)")
    if "field larger than field limit" in str(e):
        hint = (f"a field is longer than {csv.field_size_limit():,} characters, usually a quote that is "
                "never closed")
    return ValueError(f"{path}, line {start}: not valid CSV ({e}); {hint}")


class _CsvRows:
    """``(line number, row)`` of a CSV file (header first), streamed, read by ``csv`` with strict quoting.

    The line number is the line where the row starts (a quoted field may span lines); a CSV syntax error
    names the file and that line. Decode, gzip and empty-file errors name the file (``iter_lines``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = csv.reader((text for _, text in iter_lines(path, keepends=True)), strict=True)

    @property
    def line_num(self) -> int:
        """Physical lines read so far."""
        return self._reader.line_num

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        start = self._reader.line_num + 1
        try:
            row = next(self._reader)
        except csv.Error as e:
            raise _csv_error(self.path, start, e) from None
        return start, row


def _header(path: Path) -> tuple[list[str], int, int, int]:
    """Stripped header, index of user_id and item_id, and the physical lines the header spans.

    An optional ``timestamp`` column is read too (``_timestamp_column``): it never changes the order (row
    order is the sequence order) but tells a cold-start split which items are newest.
    """
    rows = _CsvRows(path)
    first = next(rows, None)
    if first is None:
        raise empty_file_error(path)
    header = [h.strip() for h in first[1]]
    missing = [c for c in ("user_id", "item_id") if c not in header]
    if missing:
        raise ValueError(
            f"{path}, line 1: missing column(s) {', '.join(missing)} in header {short(header)}; "
            "the first line must name at least user_id,item_id"
        )
    return header, header.index("user_id"), header.index("item_id"), rows.line_num


def _timestamp_column(header: list[str]) -> int | None:
    return header.index("timestamp") if "timestamp" in header else None


def _as_times(values: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray | None:
    """int64 timestamps of a column of strings (integers or numbers like ``1.3e9``), or None when any
    value is not a number (such a column is ignored as a whole, never an error)."""
    try:
        numbers = pc.cast(values if not isinstance(values, list) else pa.array(values, pa.string()), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    array = numbers.to_numpy(zero_copy_only=False) if not isinstance(numbers, pa.ChunkedArray) else np.concatenate(
        [c.to_numpy(zero_copy_only=False) for c in numbers.chunks])
    if not np.isfinite(array).all():
        return None
    return array.astype(np.int64)


def _is_number(value: Any) -> bool:
    try:
        return np.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _add(log: InteractionLog, users, items, times, path: Path) -> None:
    """Append a chunk, with its timestamps while the file's are all numbers."""
    if log.with_time:
        parsed = _as_times(times)
        if parsed is None:
            values = times if isinstance(times, list) else times.to_pylist()
            bad = [v for v in values if not _is_number(v)]
            log.drop_times(f"{path}: the timestamp column holds values that are not numbers ({len(bad)} in "
                           f"this block of {len(values)} rows, e.g. {bad[0] if bad else None!r})")
        else:
            log.add(users, items, parsed)
            return
    log.add(users, items)


class _Fallback(Exception):
    """The fast path cannot vouch for this file; read it line by line."""


class _CheckedStream:
    """The decompressed bytes pyarrow parses, checked block by block for what pyarrow reads differently.

    pyarrow accepts what the strict ``csv`` module refuses: a quote that is never closed (the rest of the
    file becomes one value), text after a closing quote (``"a"b`` reads as ``ab``) and fields longer than
    ``csv.field_size_limit()``; and it splits a row at a bare carriage return where ``csv`` raises. So a
    block with a double quote, a carriage return not followed by a newline, or a line longer than the
    field limit (in bytes: a longer field needs a longer line) raises ``_Fallback``, and the file is read
    by ``csv`` instead: the same rows, or the error naming the line. Each check is a C-speed scan
    (``bytes.find``/``count``); files of plain unquoted ids never trip them.
    """

    def __init__(self, source: pa.NativeFile, limit: int) -> None:
        self._source = source
        self._limit = limit
        self._line = 0  # bytes of the line still open at the end of the previous block
        self._cr = False  # the previous block ended with "\r"
        self.reason: str | None = None

    @property
    def closed(self) -> bool:
        return self._source.closed

    def close(self) -> None:
        self._source.close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, nbytes: int = -1) -> bytes:
        block = self._source.read() if nbytes is None or nbytes < 0 else self._source.read(nbytes)
        self.reason = self.reason or self._problem(block)
        if self.reason:
            raise _Fallback(self.reason)
        return block

    def _problem(self, block: bytes) -> str | None:
        if not block:
            return None
        if b'"' in block:
            return "a double quote (quoted fields are read by the csv module)"
        # `in` is a memchr (2 ms per 16 MB); the counts (40 ms) run only for files that hold a "\r" (CRLF)
        bare_cr = b"\r" in block and block.count(b"\r") - block.count(b"\r\n") - block.endswith(b"\r")
        if bare_cr or (self._cr and not block.startswith(b"\n")):
            return "a carriage return not followed by a newline"
        self._cr = block.endswith(b"\r")
        first, last = block.find(b"\n"), block.rfind(b"\n")
        if first < 0:  # the open line goes on
            self._line += len(block)
            return self._too_long(self._line)
        longest = self._line + first  # the line that was open, closed by this block's first newline
        if last - first > self._limit:
            longest = max(longest, self._longest_inside(block, first, last))
        self._line = len(block) - last - 1
        return self._too_long(max(longest, self._line))

    def _too_long(self, length: int) -> str | None:
        return f"a line of more than {self._limit:,} bytes" if length > self._limit else None

    def _longest_inside(self, block: bytes, first: int, last: int) -> int:
        """Length of the longest line between the newlines at ``first`` and ``last`` (0 if surely short).

        A line longer than the limit holds a whole window of ``limit // 2`` bytes without a newline, so
        the exact (numpy) pass runs only when such a window exists.
        """
        step = max(self._limit // 2, 1)
        if all(block.find(b"\n", p, p + step) >= 0 for p in range(first + 1, last - step + 1, step)):
            return 0
        newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8, count=last + 1)[first:] == ord("\n"))
        return int(np.diff(newlines).max()) - 1


def _read_fast(path: Path, header: list[str], ui: int, ii: int, skip: int) -> InteractionLog:
    names = [f"c{i}" for i in range(len(header))]
    ti = _timestamp_column(header)
    log = InteractionLog(with_time=ti is not None)
    native = pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)
    stream = _CheckedStream(native, csv.field_size_limit())
    source = pa.PythonFile(stream, mode="r")
    try:
        return _parse_fast(source, stream, log, names, (ui, ii, ti), skip, path)
    except (pa.ArrowException, OSError) as e:
        if stream.reason:  # a Python exception raised under pyarrow may come back wrapped
            raise _Fallback(stream.reason) from e
        raise
    finally:
        source.close()


def _parse_fast(source: pa.PythonFile, stream: _CheckedStream, log: InteractionLog, names: list[str],
                index: tuple[int, int, int | None], skip: int, path: Path) -> InteractionLog:
    ui, ii, ti = index  # user_id, item_id and (optional) timestamp columns
    columns = [names[ui], names[ii]] + ([names[ti]] if ti is not None else [])
    reader = pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(skip_rows=skip, column_names=names, block_size=BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
        convert_options=pa_csv.ConvertOptions(
            include_columns=columns, column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    for batch in reader:
        users = pc.utf8_trim_whitespace(batch.column(names[ui]))
        items = pc.utf8_trim_whitespace(batch.column(names[ii]))
        if pc.any(pc.equal(pc.utf8_length(users), 0)).as_py() or pc.any(pc.equal(pc.utf8_length(items), 0)).as_py():
            raise _Fallback("empty id")
        _add(log, users, items, batch.column(names[ti]) if ti is not None else None, path)
    if stream.reason:
        raise _Fallback(stream.reason)
    return log


def _read_python(path: Path, header: list[str], ui: int, ii: int) -> InteractionLog:
    """The line-by-line reader (exact ``csv`` semantics and errors)."""
    rows = _CsvRows(path)
    next(rows)
    need = max(ui, ii) + 1
    ti = _timestamp_column(header)
    log = InteractionLog(with_time=ti is not None)
    users: list[str] = []
    items: list[str] = []
    times: list[str] = []
    for lineno, row in rows:
        if not row:
            continue
        if len(row) < need:
            raise ValueError(f"{path}, line {lineno}: expected {len(header)} columns, got {len(row)}: {short(row)}")
        u, i = row[ui].strip(), row[ii].strip()
        if not u or not i:
            raise ValueError(f"{path}, line {lineno}: empty user_id or item_id; fill it in or delete the row")
        users.append(u)
        items.append(i)
        if ti is not None:
            times.append(row[ti].strip() if len(row) > ti else "")
        if len(users) == PY_CHUNK_ROWS:
            _add(log, users, items, times, path)
            users, items, times = [], [], []
    _add(log, users, items, times, path)
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
            f"{inter}, line {first_row + 2}: item {short(vocab[codes[first_row]], 100)} has no row in {items.name} "
            f"({len(vocab) - len(meta)} item id(s) without metadata in all); add a row for each to {items.name} "
            "(text fields may be null) or remove their interactions"
        )
    return log.finish(name=folder.name, item_meta=meta, source=str(folder), meta_without_interactions=skipped)
