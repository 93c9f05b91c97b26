"""The live catalog of a server and the files that make it survive a crash.

A state folder (never the trained run folder, which is only read) holds::

    STATE/serve.json                 which run it serves (path, dataset fingerprint), written once
    STATE/snapshots/v000000042/      a release (``Recommender.save_pretrained``) at catalog version 42
    STATE/snapshots/v000000042.json  that snapshot's version and item history (added / removed, when)
    STATE/logs/v000000042.jsonl      the change log since that snapshot (``changelog.py``)
    STATE/CURRENT                    the name of the live snapshot ("v000000042")

The catalog version counts the writes since the trained run. A writer appends each write to the log (fsynced)
before it changes the catalog or answers; every ``snapshot_every`` writes and on shutdown it writes a new
snapshot, then moves ``CURRENT`` (a durable atomic rename) and starts a new log. On start it loads ``CURRENT``
and replays its log. Read replicas (``read_only``) load the same way and follow: new log lines are applied
as they appear, and a new ``CURRENT`` is loaded in the background and swapped in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.api import NewItems, Recommender
from sidrec.serve.changelog import ChangeLog, decode_embedding, encode_embedding, read_log
from sidrec.utils.io import atomic_write_bytes, fsync_path, read_json

logger = logging.getLogger(__name__)

__all__ = ["CatalogState", "Conflict", "default_state_dir", "load_state"]

FORMAT_VERSION = 1
KEEP_SNAPSHOTS = 2  # the live one and the one before it (a replica may still be loading it)


class Conflict(ValueError):
    """A write that contradicts the catalog (an id that already exists): HTTP 409."""


def default_state_dir(run: str | os.PathLike) -> Path:
    """``runs/x`` -> ``runs/x.serving``: beside the run, never inside it."""
    run = Path(run).resolve()
    return run.with_name(run.name + ".serving")


def version_name(version: int) -> str:
    return f"v{version:09d}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class CatalogState:
    """A recommender at a catalog version, with its item history; a writer also holds the log and the lock."""

    root: Path
    recommender: Recommender
    version: int
    snapshot_name: str  # the snapshot the log continues (CURRENT when loaded)
    events: dict[str, dict[str, str | None]] = field(default_factory=dict)  # item -> added_at / removed_at
    log_offset: int = 0  # bytes of the snapshot's log applied so far
    writes_since_snapshot: int = 0
    log: ChangeLog | None = None  # None: read-only
    lock_fd: int | None = None
    broken: str | None = None  # a logged write could not be applied: no more writes until a restart replays it

    # -- opening ------------------------------------------------------------------------------------
    @classmethod
    def open_writer(cls, state_dir: str | os.PathLike, *, run: str | os.PathLike | None = None) -> CatalogState:
        """The one writer of ``state_dir``: created from ``run`` the first time, else CURRENT + its log."""
        root = Path(state_dir)
        root.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock_writer(root)
        try:
            if not (root / "CURRENT").is_file():
                state = cls._create(root, run)
            else:
                _check_same_run(root, run)
                state = cls.load(root)
            state.lock_fd = lock_fd
            state.log = ChangeLog(state.log_path)  # cuts a torn last line (already skipped by the replay)
            return state
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _create(cls, root: Path, run: str | os.PathLike | None) -> CatalogState:
        if run is None:
            raise ValueError(f"{root} has no snapshot yet (no CURRENT); give the trained run folder to serve "
                             "(sidrec serve RUN --state ...)")
        from sidrec.utils.run_folder import RunFolder

        logger.info("new state folder %s: loading %s", root, run)
        rec = Recommender.from_pretrained(run)
        meta = {"format_version": FORMAT_VERSION, "run": str(Path(run).resolve()), "created": _now(),
                "dataset_fingerprint": RunFolder(run).dataset_fingerprint()}
        atomic_write_bytes(root / "serve.json", _json(meta), durable=True)
        state = cls(root=root, recommender=rec, version=0, snapshot_name="")
        state._write_snapshot()
        return state

    @classmethod
    def load(cls, state_dir: str | os.PathLike, *, attempts: int = 3) -> CatalogState:
        """CURRENT's snapshot + its log replayed (a torn last line skipped); no lock, nothing written."""
        root = Path(state_dir)
        for attempt in range(attempts):
            name = read_current(root)
            try:
                meta = read_json(root / "snapshots" / f"{name}.json", fix="restore the state folder from a backup")
                rec = Recommender.from_pretrained(root / "snapshots" / name)
            except (FileNotFoundError, ValueError):
                if attempt + 1 < attempts and read_current(root) != name:  # a writer moved on meanwhile: again
                    continue
                raise
            state = cls(root=root, recommender=rec, version=int(meta["version"]), snapshot_name=name,
                        events=dict(meta.get("events", {})))
            state.catch_up()
            return state
        raise AssertionError("unreachable")

    # -- paths --------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.root / "logs" / f"{self.snapshot_name}.jsonl"

    @property
    def writable(self) -> bool:
        return self.log is not None

    # -- following the log ----------------------------------------------------------------------------
    def catch_up(self) -> int:
        """Apply the log's complete lines not applied yet; returns how many (a torn last line is skipped)."""
        read = read_log(self.log_path, start=self.log_offset)
        if read.torn and self.log is None and self.log_offset == 0:
            logger.warning("%s: a torn last line (%d bytes, a write cut short by a crash) was skipped",
                           self.log_path, read.torn)
        for record in read.records:
            self._apply(record)
        self.log_offset = read.end
        return len(read.records)

    def _apply(self, record: dict[str, Any]) -> None:
        seq = int(record["seq"])
        if seq <= self.version:
            return  # already in the snapshot
        if seq != self.version + 1:
            raise ValueError(f"{self.log_path}: write {seq} follows version {self.version}; the log has a gap "
                             "(restore the state folder from a backup)")
        rec = self.recommender
        if record["op"] == "add":
            items = record["items"]
            text = [it.get("text_embedding") for it in items]
            rec.apply_items(NewItems(
                ids=[it["item_id"] for it in items],
                codes=np.asarray([it["semantic_id"] for it in items], dtype=np.int64),
                text=np.stack([decode_embedding(t) for t in text]) if all(text) else None,
                titles=[it.get("title") for it in items]))
            for it in items:
                self.events[it["item_id"]] = {"added_at": record["at"], "removed_at": None}
        elif record["op"] == "remove":
            rec.remove_items(record["item_ids"])
            for item in record["item_ids"]:
                self.events.setdefault(item, {"added_at": None})["removed_at"] = record["at"]
        else:
            raise ValueError(f"{self.log_path}: unknown operation {record['op']!r} in write {seq}")
        self.version = seq
        self.writes_since_snapshot += 1

    # -- writes (the writer only; the caller runs them one at a time, never during a recommendation) ------
    def add(self, items: list[dict[str, Any]]) -> list[str]:
        """Plan the items' semantic IDs, log them durably, then add them; ``Conflict`` for a taken id."""
        rec = self.recommender
        taken = [str(it.get("item_id")) for it in items if rec.item_index(it.get("item_id")) is not None]
        if taken:
            raise Conflict(f"{len(taken)} item id(s) already in the catalog: {taken[:20]}; an id (even a removed "
                           "one) cannot be added twice")
        new = rec.prepare_items(items)
        record = {"seq": self.version + 1, "op": "add", "at": _now(), "items": [
            {"item_id": i, "title": t, "semantic_id": [int(c) for c in codes],
             "text_embedding": None if new.text is None else encode_embedding(new.text[n])}
            for n, (i, t, codes) in enumerate(zip(new.ids, new.titles, new.codes, strict=True))]}
        self._commit(record)
        return list(new.ids)

    def remove(self, item_ids: list[str]) -> int:
        """Stop recommending these items (logged durably first); returns how many were active."""
        rec = self.recommender
        unknown = [i for i in item_ids if rec.item_index(i) is None]
        if unknown:
            raise ValueError(f"{len(unknown)} unknown item id(s): {unknown[:20]}; nothing was removed")
        active = sum(bool(rec.ranker.active[rec.item_index(i)]) for i in set(item_ids))
        self._commit({"seq": self.version + 1, "op": "remove", "at": _now(), "item_ids": list(item_ids)})
        return active

    def _commit(self, record: dict[str, Any]) -> None:
        if self.log is None:
            raise PermissionError("this server is a read replica; send writes to the writer")
        if self.broken:
            raise RuntimeError(self.broken)
        self.log.append(record)  # durable before anything changes or is answered
        try:
            self._apply(record)
        except Exception as e:  # planned against this catalog, so not expected; never diverge from the log
            self.broken = (f"write {record['seq']} is in the change log but could not be applied ({e}); restart the "
                           "server: it replays the log")
            raise RuntimeError(self.broken) from e
        self.log_offset = os.path.getsize(self.log_path)

    # -- snapshots ------------------------------------------------------------------------------------
    def snapshot(self) -> str | None:
        """Write a snapshot of the current catalog and move CURRENT to it; None when nothing changed."""
        if self.writes_since_snapshot == 0 or self.log is None:
            return None
        self._write_snapshot()
        return self.snapshot_name

    def _write_snapshot(self) -> None:
        name = version_name(self.version)
        started = time.perf_counter()
        snaps, logs = self.root / "snapshots", self.root / "logs"
        self.recommender.save_pretrained(snaps / name)
        _fsync_tree(snaps / name)
        atomic_write_bytes(snaps / f"{name}.json", _json({"version": self.version, "created": _now(),
                                                          "events": self.events}), durable=True)
        logs.mkdir(exist_ok=True)
        atomic_write_bytes(logs / f"{name}.jsonl", b"", durable=True)
        atomic_write_bytes(self.root / "CURRENT", (name + "\n").encode(), durable=True)  # the switch
        if self.log is not None:
            self.log.close()
            self.log = ChangeLog(logs / f"{name}.jsonl")
        self.snapshot_name, self.log_offset, self.writes_since_snapshot = name, 0, 0
        _prune(self.root, keep=KEEP_SNAPSHOTS)
        logger.info("snapshot %s written (catalog version %d, %d items) in %.2f s", name, self.version,
                    self.recommender.num_items, time.perf_counter() - started)

    def close(self, *, snapshot: bool = True) -> None:
        """Release the writer: a last snapshot (when anything changed), the log and the lock."""
        if self.log is not None:
            if snapshot:
                self.snapshot()
            self.log.close()
            self.log = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def load_state(state_dir: str | os.PathLike) -> Recommender:
    """What a server restarted on ``state_dir`` serves: the CURRENT snapshot plus its replayed change log."""
    return CatalogState.load(state_dir).recommender


def read_current(root: Path) -> str:
    try:
        name = (root / "CURRENT").read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"{root} holds no snapshot (no CURRENT): start the writer (sidrec serve RUN --state "
                         f"{root}) first") from None
    if not (name.startswith("v") and name[1:].isdigit()):
        raise ValueError(f"{root}/CURRENT holds {name!r}, not a snapshot name; restore it (e.g. the newest "
                         "snapshots/v*.json that has its folder)")
    return name


def _check_same_run(root: Path, run: str | os.PathLike | None) -> None:
    if run is None:
        return
    from sidrec.utils.run_folder import RunFolder

    meta = read_json(root / "serve.json", fix="restore it, or serve from a new --state folder")
    fingerprint = RunFolder(run).dataset_fingerprint()
    if meta.get("dataset_fingerprint") != fingerprint:
        raise ValueError(f"{root} serves {meta.get('run')} (dataset {meta.get('dataset_fingerprint')}), not {run} "
                         f"(dataset {fingerprint}); give another --state folder for this run")
    if Path(meta.get("run", "")) != Path(run).resolve():
        logger.warning("%s was created from %s; continuing it for %s (same dataset)", root, meta.get("run"), run)


def _lock_writer(root: Path) -> int:
    import fcntl

    fd = os.open(root / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"another server writes {root}; a state folder has one writer (start this one with "
                         "--read-only to follow it, or give another --state)") from None
    return fd


def _json(obj: Any) -> bytes:
    import json

    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _fsync_tree(path: Path) -> None:
    for sub in sorted(path.rglob("*")):
        if sub.is_file():
            fsync_path(sub)
    for sub in sorted({p.parent for p in path.rglob("*")} | {path, path.parent}):
        fsync_path(sub)


def _prune(root: Path, *, keep: int) -> None:
    """Delete all but the newest ``keep`` snapshots and their logs."""
    names = sorted(p.name for p in (root / "snapshots").glob("v*") if p.is_dir())
    for name in names[:-keep]:
        shutil.rmtree(root / "snapshots" / name, ignore_errors=True)
        for extra in (root / "snapshots" / f"{name}.json", root / "logs" / f"{name}.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                extra.unlink()
