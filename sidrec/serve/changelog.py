"""The change log: every acknowledged catalog write, one JSON line each, fsynced before the write is answered.

A record holds what a replay needs to rebuild the catalog exactly, without the embedding model: for an add,
each item's id, title, the semantic ID it was given and (only when the generator reads item text) its text
embedding; for a removal, the ids. ``seq`` is the catalog version after the write. A crash can leave a torn
last line (a prefix without its newline); readers skip it with a warning, and the writer cuts it off before
appending again. A damaged line before the last is not a crash artefact: reading refuses it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.utils.io import fsync_path

logger = logging.getLogger(__name__)

__all__ = ["ChangeLog", "LogRead", "decode_embedding", "encode_embedding", "read_log"]


def encode_embedding(vector: np.ndarray) -> str:
    """A float32 vector as base64 (exact, about 1.3x its bytes)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_embedding(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()


@dataclass
class LogRead:
    """Records read from a log: the complete lines from ``start``; ``end`` = the byte offset after the last one;
    ``torn`` = bytes after it that do not end a line (a write cut short)."""

    records: list[dict[str, Any]]
    end: int
    torn: int


def read_log(path: str | os.PathLike, *, start: int = 0) -> LogRead:
    """Complete records of ``path`` from byte ``start`` (a missing file reads as empty)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return LogRead([], start, 0)
    complete = data.rfind(b"\n") + 1  # only whole lines: the writer may be in the middle of the next one
    records = []
    for n, line in enumerate(data[:complete].splitlines()):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            raise ValueError(f"{path}: line {n + 1} after byte {start} is not valid JSON ({e}); the change log is "
                             "damaged (not by a crash, which can only cut the last line). Restore it from a "
                             "backup, or start from the last snapshot by moving the log aside") from e
    return LogRead(records, start + complete, len(data) - complete)


class ChangeLog:
    """Append-only writer of one log file; ``append`` returns once the record is on disk (``fsync``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        existing = read_log(self.path)
        if existing.torn:  # a crash in the middle of a write: that write was never acknowledged
            logger.warning("%s: the last line was cut short by a crash (%d bytes, a write never acknowledged); "
                           "removed it", self.path, existing.torn)
            with open(self.path, "r+b") as f:
                f.truncate(existing.end)
                os.fsync(f.fileno())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fsync_path(self.path.parent)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk mid-line: cut the partial line so the log stays whole
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
            raise OSError(f"{self.path}: only {written} of {len(line)} bytes written (disk full?)")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
