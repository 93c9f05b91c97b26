"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """Requests and latency per endpoint and status, batch sizes, queue depth and the catalog's state."""

    def __init__(self, *, queue_depth: Callable[[], float], catalog_items: Callable[[], float],
                 catalog_version: Callable[[], float], writes_since_snapshot: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sidrec_requests", "HTTP requests answered", ["endpoint", "method", "status"],
                                registry=r)
        self.latency = Histogram("sidrec_request_seconds", "time from request to answer",
                                 ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("sidrec_batch_size", "histories per batched recommender call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.writes = Counter("sidrec_catalog_writes", "catalog writes acknowledged", ["op"], registry=r)
        for name, doc, fn in (
            ("sidrec_queue_depth", "requests waiting for the worker", queue_depth),
            ("sidrec_catalog_items", "items that can be recommended now", catalog_items),
            ("sidrec_catalog_version", "catalog writes since the trained run", catalog_version),
            ("sidrec_writes_since_snapshot", "writes only in the change log (replayed on restart)",
             writes_since_snapshot),
        ):
            Gauge(name, doc, registry=r).set_function(fn)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, method, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
