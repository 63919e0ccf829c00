"""The live dashboard: one page, fed by server-sent events, served by aiohttp.

It reads ``events``, ``recommendations`` and ``events-dlq`` itself (no consumer
group: it sees every partition, commits nothing, starts at the end) for
throughput, event -> recommendation latency and per-user timelines, and
scrapes the worker's and scorer's ``/metrics`` for lag, table sizes, online
HR@10 / NDCG@10 per model version, scorer batches and the model's age.

Routes: ``/`` (the page), ``/stream?user=ID`` (SSE: the history once, then a
point a second), ``/api/snapshot?user=ID`` (the same figures as JSON, for
``recstream top``), ``POST /api/items`` (add or retire an item: see
:mod:`recstream.dashboard_catalogue`), ``/metrics``, ``/healthz``, ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from recstream.dashboard_catalogue import BadItemRequest, CatalogueWatches, parse_item_request
from recstream.live_state import LiveState
from recstream.metrics_scrape import MetricsView
from recstream.schemas.messages import now_ms
from recstream.schemas.settings import KafkaSettings
from recstream.schemas.topics import EVENTS, EVENTS_DLQ, ITEMS, RECOMMENDATIONS

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "dashboard_static"
#: Points kept for the charts (one a tick).
HISTORY = 600


@dataclass(frozen=True)
class DashboardSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 8050
    worker_metrics: tuple[str, ...] = ()
    scorer_metrics: tuple[str, ...] = ()
    interval_s: float = 1.0


class Dashboard:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.live = LiveState()
        self.catalogue = CatalogueWatches()
        self.view = MetricsView(settings.worker_metrics, settings.scorer_metrics)
        self.figures: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.ready = False
        self.registry = CollectorRegistry()
        self._read = Counter(
            "recstream_dashboard_records", "records read", ["topic"], registry=self.registry
        )
        self._clients = Gauge(
            "recstream_dashboard_clients", "open live pages", registry=self.registry
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self._index),
                web.static("/static", STATIC),
                web.get("/stream", self._stream),
                web.get("/api/snapshot", self._snapshot),
                web.post("/api/items", self._post_item),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._consumer = AIOKafkaConsumer(
            EVENTS,
            RECOMMENDATIONS,
            EVENTS_DLQ,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            # The embedded broker holds fetches long (see inference.service).
            fetch_max_wait_ms=100,
            **self.settings.kafka.aiokafka_kwargs(),
        )
        await self._consumer.start()
        self._producer = AIOKafkaProducer(acks="all", **self.settings.kafka.aiokafka_kwargs())
        await self._producer.start()
        self.ready = True
        self._tasks = [
            asyncio.create_task(self._consume(), name="dashboard-consume"),
            asyncio.create_task(self._tick(), name="dashboard-tick"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- feeding ----------------------------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None
        feeds: dict[str, Callable[[bytes | None], None]] = {
            EVENTS: self.live.add_event,
            RECOMMENDATIONS: self._add_recommendation,
            EVENTS_DLQ: self.live.add_dead_letter,
        }
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                feed = feeds[tp.topic]
                for record in records:
                    feed(record.value)
                self._read.labels(tp.topic).inc(len(records))

    def _add_recommendation(self, raw: bytes | None) -> None:
        read = self.live.add_recommendation(raw)
        if read is not None:
            self.catalogue.observe(*read)

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            if self.view.configured:
                try:
                    self.figures = await asyncio.to_thread(self.view.poll)
                except Exception:  # noqa: BLE001 - a bad scrape must not stop the page
                    log.exception("scraping metrics failed")
            snap = self.live.snapshot()
            online = self.figures.get("online", {})
            self.history.append(
                {
                    "t": snap["t"],
                    "events_per_s": snap["events_per_s"],
                    "recs_per_s": snap["recs_per_s"],
                    **{f"latency_{k}": v for k, v in snap["latency_ms"].items()},
                    "lag_total": self.figures.get("lag_total"),
                    # The served version: the page marks each change (a swap) on its charts.
                    "model_version": self.figures.get("model_version") or self.live.latest_version,
                    "hr": {
                        v: o["rolling_hr_at_10"]
                        for v, o in online.items()
                        if o["rolling_hr_at_10"] is not None
                    },
                }
            )
            await asyncio.sleep(max(0.05, self.settings.interval_s - (time.monotonic() - started)))

    # -- serving ----------------------------------------------------------------

    def payload(self, user: str | None) -> dict[str, Any]:
        return {
            "live": self.live.snapshot(),
            "metrics": self.figures,
            "metrics_configured": self.view.configured,
            "user": self.live.user_view(user),
            "catalogue": self.catalogue.view(),
        }

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _snapshot(self, request: web.Request) -> web.Response:
        body = orjson.dumps(self.payload(request.query.get("user") or None))
        return web.Response(body=body, content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        user = request.query.get("user") or None
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        self._clients.inc()
        try:
            await _sse(response, {"history": list(self.history)})
            while True:
                point = self.history[-1] if self.history else None
                await _sse(response, {**self.payload(user), "point": point})
                await asyncio.sleep(self.settings.interval_s)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away, or the server is stopping
        finally:
            self._clients.dec()
        return response

    async def _post_item(self, request: web.Request) -> web.Response:
        """Produce an add or a retirement to ``items``; 202 once the broker acknowledged."""
        try:
            update = parse_item_request(await request.read(), now_ms())
        except BadItemRequest as exc:
            return web.json_response({"field": exc.field, "detail": str(exc)}, status=400)
        assert self._producer is not None
        try:
            sent = await self._producer.send(ITEMS, update.model_dump_json().encode(),
                                             key=update.item_id.encode())  # fmt: skip
            await asyncio.wait_for(sent, 10.0)
        except Exception as exc:  # noqa: BLE001 - any failure: the record may not be stored
            return web.json_response({"field": None, "detail": f"not stored: {exc!r}"}, status=503)
        self.catalogue.start(update, now_ms())
        action = "add" if update.available else "retire"
        return web.json_response({"item_id": update.item_id, "action": action}, status=202)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.Response(
            text="ready\n" if self.ready else "not ready\n", status=200 if self.ready else 503
        )


async def _sse(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(b"data: " + orjson.dumps(data) + b"\n\n")


async def serve(
    settings: DashboardSettings,
    stop: asyncio.Event,
    on_ready: Callable[[Dashboard], Awaitable[None] | None] | None = None,
) -> None:
    """Serve until ``stop`` is set."""
    dashboard = Dashboard(settings)
    await dashboard.start()
    try:
        if on_ready is not None:
            result = on_ready(dashboard)
            if result is not None:
                await result
        await stop.wait()
    finally:
        await dashboard.stop()


def run_dashboard(settings: DashboardSettings, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(d: Dashboard) -> None:
            announce(f"dashboard: {d.url}")

        await serve(settings, stop, ready)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
