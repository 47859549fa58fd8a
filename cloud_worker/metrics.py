"""The worker's Prometheus metrics (served by :class:`shared.metrics_http.MetricsServer`).

Each worker has a registry of its own (not prometheus-client's global one), so several workers
in one process (the tests, the demo) never clash over metric names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

__all__ = ["WorkerMetrics"]

_MS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class _Refusals:
    """Publishes the broker refused, read from the MQTT link's own counts at scrape time."""

    def __init__(self, worker_id: str, counts: Callable[[], Mapping[str, int]]) -> None:
        self._worker = worker_id
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        m = CounterMetricFamily(
            "isplitee_worker_publish_refused",
            "Publishes the broker refused (its ACL), by topic kind",
            labels=["worker", "kind"],
        )
        for kind, n in self._counts().items():
            m.add_metric([self._worker, kind], n)
        yield m


class WorkerMetrics:
    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"worker": worker_id}
        r = self.registry
        self.messages = Counter(
            "isplitee_worker_messages", "Activation messages received", ["worker"], registry=r
        ).labels(**labels)
        self.replies = Counter(
            "isplitee_worker_replies", "Replies published", ["worker"], registry=r
        ).labels(**labels)
        self._errors = Counter(
            "isplitee_worker_errors", "Messages refused, by kind", ["worker", "kind"], registry=r
        )
        self._worker = worker_id
        self.batch_size = Histogram(
            "isplitee_worker_batch_size",
            "Activations per cloud batch",
            ["worker"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        ).labels(**labels)
        self.compute_ms = Histogram(
            "isplitee_worker_compute_ms",
            "Cloud-half compute per batch, milliseconds",
            ["worker"],
            buckets=_MS_BUCKETS,
            registry=r,
        ).labels(**labels)
        self.queue_ms = Histogram(
            "isplitee_worker_queue_ms",
            "Time from receipt to the start of its batch, milliseconds",
            ["worker"],
            buckets=_MS_BUCKETS,
            registry=r,
        ).labels(**labels)
        self.inbox = Gauge(
            "isplitee_worker_inbox", "Messages waiting in the inbox", ["worker"], registry=r
        ).labels(**labels)
        self.error_counts: dict[str, int] = {}
        self._lock = threading.Lock()  # overloads are counted on paho's thread

    def count_refusals(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export the broker's refusals of this worker's publishes (replies, status)."""
        self.registry.register(_Refusals(self._worker, counts))

    def error(self, kind: str) -> None:
        self._errors.labels(worker=self._worker, kind=kind).inc()
        with self._lock:
            self.error_counts[kind] = self.error_counts.get(kind, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
