"""One HTTP endpoint per container: ``/healthz``, ``/readyz`` (JSON) and ``/metrics`` (Prometheus).

Served from a daemon thread of ``worker daemon``; every request reads the
shard processes' metric files afresh (:class:`worker.metrics.Collector`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from worker import metrics

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Endpoint:
    """Binds at construction (a taken port fails at start-up); :meth:`start` serves in a thread."""

    def __init__(
        self,
        host: str,
        port: int,
        collector: metrics.Collector,
        *,
        launcher_up: Callable[[], bool],
        stall_seconds: float,
    ) -> None:
        self.collector = collector
        self.launcher_up = launcher_up
        self.stall_seconds = stall_seconds
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = endpoint.respond(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds: not worth a log line each

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def respond(self, path: str) -> tuple[int, str, bytes]:
        snap = self.collector.collect()
        up = self.launcher_up()
        if path == "/metrics":
            return 200, PROMETHEUS_TYPE, metrics.render(snap, launcher_up=up)
        if path in ("/healthz", "/readyz"):
            healthy, ready, body = metrics.status(snap, launcher_up=up, stall_seconds=self.stall_seconds)
            ok = healthy if path == "/healthz" else ready
            body["status"] = "ok" if ok else "fail"
            return (200 if ok else 503), "application/json", orjson.dumps(body) + b"\n"
        return 404, "text/plain; charset=utf-8", b"not found: try /healthz, /readyz or /metrics\n"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="worker-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()
