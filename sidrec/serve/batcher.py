"""Micro-batching: one worker thread owns the recommender; requests wait in a bounded queue.

The worker takes the first waiting request, then up to ``max_batch`` recommendation requests that are already
queued or arrive within ``max_wait`` of it, and answers them with one batched call per distinct setting
(``k``, ``exclude_seen``, ``cold_share``). Catalog writes and other jobs run on the same thread between
batches, so a recommendation never sees a half-applied write; they go before waiting recommendations (a
write waits for the batch being answered, not for the queue), so an add stays fast under read load.
``max_batch = 1`` turns batching off (the benchmark's reference). A full queue refuses at once
(``QueueFull``: HTTP 503 with ``Retry-After``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["MicroBatcher", "QueueFull", "ReadJob"]


class QueueFull(RuntimeError):
    """The request queue is full: the server is past its capacity."""


@dataclass
class ReadJob:
    """One recommendation request: known item ids, oldest first, and how to rank."""

    histories: list[list[str]]
    k: int
    exclude_seen: bool
    cold_share: float
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[int, bool, float]:
        return self.k, self.exclude_seen, self.cold_share


@dataclass
class _CallJob:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


_STOP = object()
_CALL, _READ, _LAST = 0, 1, 2  # queue priorities: writes first, then reads, stop after everything queued


class MicroBatcher:
    """Runs ``recommend(histories, k=, exclude_seen=, cold_share=) -> (results, tag)`` for batches of
    ``ReadJob``s and any callable (writes) in between, all on one thread. Each job's future receives
    ``(its results, tag)`` (the server's tag: the catalog version answered). ``on_batch(size)`` observes batch
    sizes (metrics)."""

    def __init__(self, *, recommend: Callable[..., list[Any]], max_batch: int = 64, max_wait_ms: float = 5.0,
                 queue_size: int = 1024, on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or max_wait_ms < 0 or queue_size < 1:
            raise ValueError(f"max_batch >= 1, max_wait_ms >= 0 and queue_size >= 1 needed; got {max_batch}, "
                             f"{max_wait_ms}, {queue_size}")
        self.recommend = recommend
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=queue_size)  # (priority, seq, job)
        self._seq = itertools.count()  # FIFO within a priority
        self._thread = threading.Thread(target=self._run, name="sidrec-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, job: ReadJob | _CallJob) -> Future:
        try:
            self._queue.put_nowait((_READ if isinstance(job, ReadJob) else _CALL, next(self._seq), job))
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are waiting") from None
        return job.future

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the worker between batches (a write, a snapshot, a swap); its result in the future."""
        return self.submit(_CallJob(fn))

    def stop(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then end the worker."""
        self._queue.put((_LAST, next(self._seq), _STOP))
        self._thread.join(timeout)

    # -- the worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        pending: Any = None
        while True:
            job = pending if pending is not None else self._queue.get()[2]
            pending = None
            if job is _STOP:
                return
            if isinstance(job, _CallJob):
                _settle(job.future, job.fn)
                continue
            batch = [job]
            pending = self._gather(batch)
            self._answer(batch)

    def _gather(self, batch: list[ReadJob]) -> Any:
        """Fill ``batch`` up to ``max_batch`` within ``max_wait``; returns a non-read job met on the way."""
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                wait = deadline - time.perf_counter()
                nxt = (self._queue.get_nowait() if wait <= 0 else self._queue.get(timeout=wait))[2]
            except queue.Empty:
                return None
            if not isinstance(nxt, ReadJob):
                return nxt  # a write or stop: answer the batch first, then run it
            batch.append(nxt)
        return None

    def _answer(self, batch: list[ReadJob]) -> None:
        if self.on_batch is not None:
            self.on_batch(sum(len(j.histories) for j in batch))
        groups: dict[tuple, list[ReadJob]] = {}
        for job in batch:
            groups.setdefault(job.key, []).append(job)
        for (k, exclude_seen, cold_share), jobs in groups.items():
            histories = [h for j in jobs for h in j.histories]
            try:
                results, tag = self.recommend(histories, k=k, exclude_seen=exclude_seen, cold_share=cold_share)
            except BaseException as e:  # noqa: BLE001 - each waiting request gets the error
                logger.exception("a batch of %d histories failed", len(histories))
                for j in jobs:
                    j.future.set_exception(e)
                continue
            start = 0
            for j in jobs:
                j.future.set_result((results[start : start + len(j.histories)], tag))
                start += len(j.histories)


def _settle(future: Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as e:  # noqa: BLE001 - the caller receives it
        future.set_exception(e)
