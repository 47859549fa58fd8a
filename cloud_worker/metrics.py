"""The worker's Prometheus metrics and its ``/metrics`` + ``/healthz`` HTTP endpoint.

Each worker has a registry of its own (not prometheus-client's global one), so several workers
in one process (the tests, the demo) never clash over metric names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["MetricsServer", "WorkerMetrics"]

_MS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


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

    def error(self, kind: str) -> None:
        self._errors.labels(worker=self._worker, kind=kind).inc()
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200 when ``healthy()``, else 503)."""

    def __init__(
        self, metrics: WorkerMetrics, healthy: Callable[[], bool], host: str, port: int
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status, ctype = metrics.render(), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/healthz":
                    ok = healthy()
                    body = b"ok\n" if ok else b"broker not connected\n"
                    status, ctype = (200 if ok else 503), "text/plain"
                else:
                    body, status, ctype = b"see /metrics and /healthz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # scrapes are not news
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
