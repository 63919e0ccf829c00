"""One small HTTP server per process: ``/metrics``, ``/healthz`` and ``/readyz``.

It lives here because ``schemas`` is the one package every process (worker,
scorer, trainer, the CLI) already imports and which imports nothing of ours, so
the worker and the scorer share it without breaking the import contracts.

* ``/metrics``: the process's Prometheus registry (text format).
* ``/healthz``: liveness. 200 while ``live()`` holds (e.g. the event loop
  answers), else 503: restart me.
* ``/readyz``: readiness. 200 while ``ready()`` holds (partitions assigned,
  tables recovered, model loaded), else 503: send me no traffic yet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], bool]


def _always() -> bool:
    return True


def loop_responds(loop: asyncio.AbstractEventLoop, timeout_s: float = 5.0) -> Check:
    """A liveness check: the process's event loop runs a no-op within ``timeout_s``.

    A loop that is not running yet (start-up, table recovery before it) counts
    as alive; a blocked or dead one does not.
    """

    def check() -> bool:
        if loop.is_closed():
            return False
        if not loop.is_running():
            return True
        # A callback, not a coroutine: one the loop never gets to run leaves nothing
        # behind (a coroutine would be logged as "never awaited" / a pending task
        # destroyed, at every probe of a blocked loop).
        ran = threading.Event()
        try:
            loop.call_soon_threadsafe(ran.set)
        except RuntimeError:  # closed meanwhile
            return False
        return ran.wait(timeout_s)

    return check


class ProbePortError(OSError):
    """The probe server cannot listen on its port (taken, or not allowed)."""


class ProbeServer:
    """Serves the three endpoints from a daemon thread; ``port=0`` picks a free port."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        addr: str = "0.0.0.0",
        *,
        live: Check = _always,
        ready: Check = _always,
    ) -> None:
        handler = _handler(registry, live, ready)
        try:
            self._server = ThreadingHTTPServer((addr, port), handler)
        except (OSError, OverflowError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProbePortError(
                f"cannot serve /metrics, /healthz and /readyz on {addr}:{port}: {why} "
                "(RECSTREAM_METRICS_PORT)"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(
    registry: CollectorRegistry, live: Check, ready: Check
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._check(live, b"ok\n", b"unhealthy\n")
            elif path == "/readyz":
                self._check(ready, b"ready\n", b"not ready\n")
            else:
                self._send(404, b"try /metrics, /healthz or /readyz\n")

        def _check(self, check: Check, yes: bytes, no: bytes) -> None:
            try:
                ok = check()
            except Exception:  # noqa: BLE001 - a failing check is a "no", not a crash
                log.exception("probe check failed")
                ok = False
            self._send(200 if ok else 503, yes if ok else no)

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # a scrape every few seconds is not news

    return Handler
