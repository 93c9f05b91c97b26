"""The serving core, independent of HTTP: settings, the live state, the batcher, validation and followers."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidrec.serve.batcher import MicroBatcher, ReadJob
from sidrec.serve.metrics import ServeMetrics
from sidrec.serve.state import CatalogState, read_current

logger = logging.getLogger(__name__)

__all__ = ["ServeSettings", "Server", "UnknownItems"]


@dataclass(frozen=True)
class ServeSettings:
    """How a server runs. Keys come from the environment (``SIDREC_API_KEY``, ``SIDREC_READ_KEY``), not flags,
    so they never show in a process list."""

    state_dir: Path  # snapshots + change log (never the run folder)
    run: Path | None = None  # the trained run; needed only to create the state folder
    read_only: bool = False  # a replica: follows the writer's state folder, refuses writes
    max_batch: int = 64  # histories per batched call; 1 = batching off
    max_wait_ms: float = 5.0  # how long the worker waits to fill a batch
    queue_size: int = 1024  # waiting requests before 503
    snapshot_every: int = 1000  # writes between snapshots (and one on shutdown)
    max_body_bytes: int = 1 << 20  # larger bodies: 413
    follow_interval_s: float = 0.5  # how often a replica looks for new writes
    loopback_only: bool = True  # listening on 127.0.0.1/::1 only: writes allowed without a key
    api_key: str | None = None  # write/admin key (SIDREC_API_KEY)
    read_key: str | None = None  # read key (SIDREC_READ_KEY); None = reads are open
    exit_on_load_error: bool = False  # `sidrec serve`: a state that cannot load ends the process (exit 1);
    # an embedding app keeps running with /readyz answering 503 and the reason

    @classmethod
    def from_env(cls, **kwargs: Any) -> ServeSettings:
        return cls(api_key=os.environ.get("SIDREC_API_KEY") or None,
                   read_key=os.environ.get("SIDREC_READ_KEY") or None, **kwargs)

    def replace(self, **kwargs: Any) -> ServeSettings:
        return dataclasses.replace(self, **kwargs)

    @property
    def writes_allowed(self) -> bool:
        return not self.read_only and (self.api_key is not None or self.loopback_only)


class UnknownItems(ValueError):
    """History ids that are not in the catalog (HTTP 422 listing them)."""

    def __init__(self, unknown: list[tuple[int, str]]) -> None:
        self.unknown = unknown
        shown = ", ".join(f"{i!r} (history {h})" for h, i in unknown[:20])
        super().__init__(f"{len(unknown)} unknown item id(s): {shown}; add them first (POST /v1/items) or pass "
                         "on_unknown='skip'")


class Server:
    """Loads the state in the background (``/readyz`` answers 503 until then), then answers through one
    ``MicroBatcher``; a replica also runs a follower thread."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.state: CatalogState | None = None
        self.batcher: MicroBatcher | None = None
        self.error: str | None = None  # why loading failed
        self._stopping = threading.Event()
        self.metrics = ServeMetrics(
            queue_depth=lambda: self.batcher.depth if self.batcher else 0,
            catalog_items=lambda: self.state.recommender.num_items if self.state else 0,
            catalog_version=lambda: self.state.version if self.state else 0,
            writes_since_snapshot=lambda: self.state.writes_since_snapshot if self.state else 0,
        )

    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.state is not None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, *, background: bool = True) -> None:
        if background:
            threading.Thread(target=self._load, name="sidrec-loader", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        s = self.settings
        try:
            started = time.perf_counter()
            if s.read_only:
                self.state = self._wait_for_writer()
                if self.state is None:
                    return
            else:
                self.state = CatalogState.open_writer(s.state_dir, run=s.run)
            self._warm_up()
            self.batcher = MicroBatcher(recommend=self._recommend, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms,
                                        queue_size=s.queue_size, on_batch=self.metrics.batch_size.observe)
            logger.info("ready in %.1f s: %d items, catalog version %d (snapshot %s + %d logged writes)%s",
                        time.perf_counter() - started, self.state.recommender.num_items, self.state.version,
                        self.state.snapshot_name, self.state.writes_since_snapshot, ", read-only" if s.read_only else "")
            if s.read_only:
                threading.Thread(target=self._follow, name="sidrec-follower", daemon=True).start()
        except Exception as e:  # noqa: BLE001 - reported by /readyz and the log
            self.error = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
            logger.error("could not load the state: %s", self.error)
            if s.exit_on_load_error:
                os._exit(1)  # nothing was loaded, so nothing to clean up; a supervisor sees the failure

    def _warm_up(self) -> None:
        """Pay the one-time costs before answering: the first ranking call and (a writer) loading the embedding
        model, so the first add is as fast as the others."""
        rec = self.state.recommender
        active = [i for i, on in zip(rec.tokenizer.item_ids, rec.ranker.active, strict=True) if on][:1]
        if active:
            rec.recommend([active], k=1)
        if not self.settings.read_only:
            rec.tokenizer.embed_new_items([("sidrec-warm-up", "warm up")])  # embeds only; nothing is added
        gc.collect()
        gc.freeze()  # the loaded model's objects leave the collector's view: no long full collections later

    def _wait_for_writer(self) -> CatalogState | None:
        while not self._stopping.is_set():
            try:
                return CatalogState.load(self.settings.state_dir)
            except ValueError as e:
                if "no CURRENT" not in str(e):
                    raise
                logger.info("waiting for the writer's first snapshot in %s", self.settings.state_dir)
                self._stopping.wait(max(self.settings.follow_interval_s, 1.0))
        return None

    def stop(self) -> None:
        """Answer what is queued, then (a writer) snapshot what only the log holds and release the lock."""
        self._stopping.set()
        if self.batcher is not None:
            self.batcher.stop()
        if self.state is not None and self.state.writable:
            self.state.close(snapshot=True)

    # -- reads ------------------------------------------------------------------------------------
    def _recommend(self, histories: list[list[str]], *, k: int, exclude_seen: bool,
                   cold_share: float) -> tuple[list, int]:
        state = self.state
        return state.recommender.recommend(histories, k=k, exclude_seen=exclude_seen, cold_share=cold_share), \
            state.version

    def known_history(self, history: list[Any], *, index: int, on_unknown: str) -> tuple[list[str], int]:
        """``(ids, skipped)``: the history as catalog ids; ``UnknownItems`` (or skipped, counted) for others."""
        from sidrec.api import item_id_string

        rec = self.state.recommender
        ids = [item_id_string(i) for i in history]
        rows = [rec.item_index(i) for i in ids]  # looked up once
        unknown = [(index, i) for i, row in zip(ids, rows, strict=True) if row is None]
        if unknown and on_unknown == "error":
            raise UnknownItems(unknown)
        if unknown:
            ids = [i for i, row in zip(ids, rows, strict=True) if row is not None]
        if not ids:
            raise ValueError(f"history {index} is empty{' after skipping unknown ids' if unknown else ''}; "
                             "a recommendation needs at least one known item")
        return ids, len(unknown)

    def window(self) -> int:
        return int(getattr(self.state.recommender.model, "max_items", 0)) or 10**9

    def submit_read(self, histories: list[list[str]], *, k: int, exclude_seen: bool, cold_share: float):
        return self.batcher.submit(ReadJob(histories, k, exclude_seen, cold_share))

    # -- writes -----------------------------------------------------------------------------------
    def write(self, op: Callable[[CatalogState], Any]):
        """Run ``op(state)`` (a write) on the worker; then a snapshot when ``snapshot_every`` is reached. The
        future holds ``(op's result, catalog version after it)``."""
        def run() -> tuple[Any, int]:
            result = op(self.state)
            if self.state.writes_since_snapshot >= self.settings.snapshot_every:
                self.state.snapshot()
            return result, self.state.version

        return self.batcher.call(run)

    def snapshot(self):
        return self.batcher.call(lambda: (self.state.snapshot(), self.state.version))

    # -- replicas ---------------------------------------------------------------------------------
    def _follow(self) -> None:
        """Apply the writer's new log lines; load a new snapshot (off the worker) when CURRENT moves."""
        while not self._stopping.wait(self.settings.follow_interval_s):
            try:
                if read_current(self.settings.state_dir) != self.state.snapshot_name:
                    fresh = CatalogState.load(self.settings.state_dir)
                    self.batcher.call(lambda fresh=fresh: self._swap(fresh)).result()
                else:
                    self.batcher.call(self.state.catch_up).result()
            except Exception as e:  # noqa: BLE001 - a replica keeps serving its last good state
                logger.warning("following %s: %s (still serving catalog version %d)", self.settings.state_dir, e,
                               self.state.version)

    def _swap(self, fresh: CatalogState) -> None:
        fresh.catch_up()
        if fresh.version >= self.state.version:
            self.state = fresh
            logger.info("now serving snapshot %s (catalog version %d)", fresh.snapshot_name, fresh.version)
