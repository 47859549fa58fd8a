"""``/metrics`` (Prometheus text) and ``/healthz`` over HTTP, for the worker and the node.

A tiny threaded server of the standard library: prometheus-client's own ``start_http_server``
serves only the global registry and has no health endpoint, and each worker or node keeps a
registry of its own (several run in one process in the tests and the demo).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["MetricsServer"]


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200 when ``healthy()``, else 503)."""

    def __init__(
        self, render: Callable[[], bytes], healthy: Callable[[], bool], host: str, port: int
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status, ctype = render(), 200, CONTENT_TYPE_LATEST
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
