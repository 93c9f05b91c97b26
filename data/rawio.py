"""Streaming reads of raw files: text lines and JSON lines, in bounded memory, with errors for people.

Every error names the file, the line and the fix. The ways in:

- ``iter_lines`` / ``iter_json_objects``: ``(line number, text or object)`` of a (possibly gzipped)
  file, streamed. Used by the line-by-line parsers (metadata, MovieLens) and the fast paths' fallbacks.
- ``json_columns_fast``: JSON lines parsed by ``pyarrow.json.open_json`` in blocks of ``BLOCK_BYTES``,
  only the requested fields, as pyarrow arrays; it raises ``NotClean`` for anything it cannot vouch
  for, and the caller reads the file again with ``json_columns_python`` (``json.loads`` per line),
  which either produces the same columns or raises the precise error (file, line, what is wrong).
  See DEVELOPERS.md ("Reading raw data") for the measurements behind the choice.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

#: Bytes of decompressed input parsed per block (bounded memory: a few times this while parsing).
BLOCK_BYTES = 16 << 20


def short(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (a broken quote can make a row hold the rest of the file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def open_binary(path: Path) -> IO[bytes]:
    """The decompressed byte stream of ``path`` (``.gz`` is gunzipped); ``ValueError`` if it is missing."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _gzip_error(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path}: not a valid gzip file ({e}); re-download or decompress it")


def empty_file_error(path: Path) -> ValueError:
    return ValueError(f"{path}: the file is empty; it needs a header and at least one row")


def decode_line(path: Path, lineno: int, raw: bytes, encoding: str) -> str:
    """``raw`` decoded; undecodable bytes raise an error naming the line."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}, line {lineno}: bytes that are not valid {encoding} ({raw[e.start:e.start + 8]!r}); "
            f"re-save the file as {encoding}"
        ) from e


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes without the newline)`` of a (possibly gzipped) file, streamed.

    A file with nothing but whitespace raises "the file is empty" before anything is yielded; a
    leading UTF-8 byte-order mark is dropped. Lines are split on ``\\n`` only.
    """
    pending: list[tuple[int, bytes]] = []  # leading blank lines, held until the file proves non-empty
    seen_text = False
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                raw = raw.rstrip(b"\n")
                if not seen_text:
                    pending.append((lineno, raw))
                    if not raw.strip():
                        continue
                    seen_text = True
                    yield from pending
                    pending = []
                    continue
                yield lineno, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise _gzip_error(path, e) from e
    if not seen_text:
        raise empty_file_error(path)


def iter_lines(path: Path, encoding: str = "utf-8", *, keepends: bool = False) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line of a (possibly gzipped) text file, streamed.

    A file with nothing but whitespace raises "the file is empty" before anything is yielded; a
    leading byte-order mark is dropped. Lines are split on ``\\n`` only (a JSON string may hold U+2028).
    Undecodable bytes raise an error naming the line.
    """
    for lineno, raw in _raw_lines(path):
        text = decode_line(path, lineno, raw, encoding)
        if lineno == 1:
            text = text.lstrip("\ufeff")
        yield lineno, (text + "\n" if keepends else text.rstrip("\r"))


def iter_json_objects(path: Path, *, batch_lines: int = 4096) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file; bad lines raise.

    Lines are parsed ``batch_lines`` at a time as one JSON array (about 30% faster than a ``json.loads``
    per line); a batch that does not parse into as many objects as lines is parsed line by line, which
    raises the precise error.
    """
    batch: list[tuple[int, bytes]] = []
    for lineno, raw in _raw_lines(path):
        if raw.strip():
            batch.append((lineno, raw))
            if len(batch) == batch_lines:
                yield from _parse_batch(path, batch)
                batch = []
    yield from _parse_batch(path, batch)


def _parse_batch(path: Path, batch: list[tuple[int, bytes]]) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        objs = json.loads(b"[" + b",".join(raw for _, raw in batch) + b"]")
        if len(objs) == len(batch) and all(type(o) is dict for o in objs):
            return zip((n for n, _ in batch), objs, strict=True)
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        pass
    return iter([(n, parse_json_line(path, n, decode_line(path, n, raw, "utf-8"))) for n, raw in batch])


def parse_json_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One JSON object; ``ValueError`` naming the line for invalid JSON or a non-object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {lineno}: not valid JSON ({e.msg}); one JSON object per line") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


class NotClean(Exception):
    """The fast path cannot vouch for this file (pyarrow rejected it, or a field is missing/empty)."""


def _check_columns(cols: dict[str, pa.Array], fields: dict[str, pa.DataType]) -> None:
    for name, col in cols.items():
        if col.null_count:
            raise NotClean(f"missing {name}")
        if pa.types.is_string(fields[name]) and pc.any(pc.equal(pc.utf8_length(col), 0)).as_py():
            raise NotClean(f"empty {name}")


def json_columns_fast(path: Path, fields: dict[str, pa.DataType]) -> Iterator[dict[str, pa.Array]]:
    """Batches of the named fields, parsed by ``pyarrow.json.open_json`` (C++, multi-threaded).

    Raises ``NotClean`` on anything it cannot vouch for; the caller then starts over with
    ``json_columns_python``, which gives the same columns or the precise error.
    """
    schema = pa.schema(list(fields.items()))
    try:
        source = pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)
        reader = pa_json.open_json(
            source, read_options=pa_json.ReadOptions(use_threads=True, block_size=BLOCK_BYTES),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
        for batch in reader:
            cols = {name: batch.column(name) for name in fields}
            _check_columns(cols, fields)
            yield cols
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise NotClean(str(e)) from e


def json_columns_python(path: Path, fields: dict[str, pa.DataType], *,
                        chunk_rows: int = 200_000) -> Iterator[dict[str, pa.Array]]:
    """The named fields line by line with ``json``: every problem raises an error naming the line."""
    need = ", ".join(fields)
    cols: dict[str, list[Any]] = {name: [] for name in fields}
    rows = 0
    for lineno, obj in iter_json_objects(path):
        for name, typ in fields.items():
            value = obj.get(name)
            if value is None or value == "":
                raise ValueError(f"{path}, line {lineno}: missing field {name!r} (each line needs {need}); "
                                 "fill it in or delete the line")
            if pa.types.is_integer(typ):
                try:
                    if isinstance(value, bool):
                        raise ValueError
                    value = int(value)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{path}, line {lineno}: field {name!r} must be an integer, got "
                                     f"{short(obj.get(name), 60)}; fix the line or delete it") from e
            else:
                value = str(value)
            cols[name].append(value)
        rows += 1
        if rows % chunk_rows == 0:
            yield {name: pa.array(v, type=fields[name]) for name, v in cols.items()}
            cols = {name: [] for name in fields}
    if cols[next(iter(fields))]:
        yield {name: pa.array(v, type=fields[name]) for name, v in cols.items()}
