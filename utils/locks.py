"""One writer per stage of a run folder: an advisory file lock (``fcntl.flock``) held while the stage runs.

``with stage_lock(run, "generator"): ...`` takes ``RUN/.locks/generator.lock``. A second ``sidrec train`` (or
``--resume``) of the same run refuses at once, naming the holder's process id, host and start time, instead of
training beside it and silently replacing its model. The kernel releases a lock when its process ends, however
it ends, so a lock is never stuck; the holder's record stays in the file, and a process that takes over the
lock of one that died without releasing it (killed, out of memory) says so with a warning. Readers
(``recommend``, ``from_pretrained``, ``evaluate`` reading a model) never lock. Under ``accelerate launch`` only
the main process (``RANK`` 0) takes it. Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["stage_lock"]

LOCK_DIR = ".locks"


@contextlib.contextmanager
def stage_lock(run: str | os.PathLike, stage: str) -> Iterator[None]:
    """Hold ``RUN/.locks/<stage>.lock`` while the block runs; ``ValueError`` if another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, no guard
        yield
        return
    if int(os.environ.get("RANK", "0")) != 0:  # one lock per launch: the main process holds it
        yield
        return
    path = Path(run) / LOCK_DIR / f"{stage}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            raise ValueError(f"{run} is being written by another `{stage}` stage ({holder}); wait for it to "
                             f"finish, or use another run folder. The lock is {path}") from None
        previous = _read(fd)
        if previous:  # its holder ended without releasing it: killed, or out of memory
            logger.warning("took over the %s lock of %s, which ended without finishing; what it was writing was "
                           "never published (stages write through temporary names)", stage, _describe(previous))
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "stage": stage})
        try:
            yield
        finally:
            _write(fd, None)  # released cleanly: nothing for the next holder to report
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?"}


def _write(fd: int, record: dict | None) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    if record is not None:
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)


def _describe(record: dict | None) -> str:
    if not record:
        return "a process that has not written its record yet"
    return f"process {record.get('pid')} on {record.get('host')}, started {record.get('started')}"
