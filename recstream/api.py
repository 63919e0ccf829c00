"""``recstream api``: the HTTP API (aiohttp), answered from the stream's own topics.

Routes (``schemas/json/openapi.json`` documents them, ``/openapi.json`` serves it):
``GET /v1/users/{user_id}/recommendations``, ``GET /v1/popular``,
``POST /v1/events``, plus ``/healthz``, ``/readyz`` and ``/metrics``.

Each replica reads ``recommendations``, ``events``, ``user-deletions`` and ``items`` from
their beginning (no consumer group, nothing committed) into an
:class:`~recstream.api_state.ApiState`; it is ready once it has read what the
topics held when it started. Bad input is a 400 that names the field; an event
is answered only once the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from recstream.api_requests import (
    BadRequest,
    check_item_id,
    check_query,
    check_user_id,
    parse_events_body,
    query_category,
    query_exclude,
    query_k,
    query_window,
)
from recstream.api_similar import SimilarItems
from recstream.api_state import ApiState
from recstream.inference.topic_replay import CatchUp, TopicMissing, replay_from_start
from recstream.schemas.api import MAX_BODY_BYTES, openapi_document
from recstream.schemas.messages import ModelUpdate, now_ms
from recstream.schemas.settings import KafkaSettings, env_number
from recstream.schemas.topics import (
    EVENTS,
    ITEMS,
    MODEL_UPDATES,
    RECOMMENDATIONS,
    USER_DELETIONS,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ApiSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    #: Half-life of the trending ranking, in event time.
    popular_half_life_s: float = 3600.0
    #: How long ``POST /v1/events`` waits for the broker's acknowledgement.
    produce_timeout_s: float = 10.0
    #: The model registry the scorers serve from (``/v1/items/{id}/similar``).
    model_registry: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        """From ``RECSTREAM_*``; a bad value is a ``ValueError`` naming its variable."""
        env = os.environ if env is None else env
        s = cls(
            kafka=KafkaSettings.from_env(env),
            host=env.get("RECSTREAM_API_HOST", "127.0.0.1"),
            port=env_number(env, "RECSTREAM_API_PORT", 8000),
            popular_half_life_s=env_number(env, "RECSTREAM_POPULAR_HALF_LIFE_S", 3600.0, float),
            produce_timeout_s=env_number(env, "RECSTREAM_API_PRODUCE_TIMEOUT_S", 10.0, float),
            model_registry=Path(registry) if (registry := env.get(
                "RECSTREAM_MODEL_REGISTRY", "").strip()) else None,
        )
        if not 0 <= s.port <= 65535:
            raise ValueError(f"RECSTREAM_API_PORT must be 0..65535, got {s.port}")
        if s.popular_half_life_s <= 0:
            raise ValueError("RECSTREAM_POPULAR_HALF_LIFE_S must be > 0")
        if s.produce_timeout_s <= 0:
            raise ValueError("RECSTREAM_API_PRODUCE_TIMEOUT_S must be > 0")
        return s


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, error: str, field_name: str | None, detail: str) -> web.Response:
    return _json({"error": error, "field": field_name, "detail": detail[:500]}, status)


@web.middleware
async def _answers_4xx(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as an :class:`ApiError` body: ours, aiohttp's own (404, 405,
    413) and a body cut short; a fault of ours stays a logged 500."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(exc.status, exc.error, exc.field, exc.detail)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "too_large", "body", f"body over {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status >= 500 or exc.status < 400:
            raise
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), None, exc.reason)


class ApiServer:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.state = ApiState(settings.popular_half_life_s)
        self.similar = SimilarItems(settings.model_registry)
        #: Announced versions by name (``uri``, ``sha256``), loaded by _follow_models.
        self._announced: dict[str, ModelUpdate] = {}
        self.ready = False
        self.failed = False
        self.port = settings.port
        self.registry = CollectorRegistry()
        self._requests = Counter("recstream_api_requests", "answers by route and status",
                                 ["route", "status"], registry=self.registry)
        self._records = Counter("recstream_api_records", "records read", ["topic"],
                                registry=self.registry)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_answers_4xx])
        app.add_routes([
            web.get("/v1/users/{user_id}/recommendations", self._user_recommendations),
            web.get("/v1/popular", self._popular),
            web.get("/v1/items/{item_id}/similar", self._similar),
            web.post("/v1/events", self._post_events),
            web.get("/openapi.json", self._openapi),
            web.get("/healthz", self._healthz),
            web.get("/readyz", self._readyz),
            web.get("/metrics", self._metrics),
        ])  # fmt: skip
        return app

    async def start(self) -> None:
        kafka = self.settings.kafka.aiokafka_kwargs()
        self._producer = AIOKafkaProducer(acks="all", linger_ms=2, **kafka)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=100,
                                          **kafka)  # fmt: skip
        await self._consumer.start()
        topics = (RECOMMENDATIONS, EVENTS, USER_DELETIONS, ITEMS, MODEL_UPDATES)
        try:
            catch_up = CatchUp(await replay_from_start(self._consumer, topics, timeout_s=5.0))
        except TopicMissing as exc:
            raise RuntimeError(f"topic {exc} not found on {self.settings.kafka.bootstrap}"
                               ) from None
        await asyncio.to_thread(self.similar.load_current)
        self._tasks = [asyncio.create_task(self._consume(catch_up), name="api-consume"),
                       asyncio.create_task(self._follow_models(), name="api-models")]
        self._runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    async def _consume(self, catch_up: CatchUp) -> None:
        assert self._consumer is not None
        feeds = {RECOMMENDATIONS: self.state.add_recommendation, EVENTS: self.state.add_event,
                 USER_DELETIONS: self.state.add_deletion, ITEMS: self.state.add_item,
                 MODEL_UPDATES: self._model_update}  # fmt: skip
        self.ready = catch_up.done
        try:
            while True:
                # Small helpings, each followed by a yield: requests wait at most one.
                batches = await self._consumer.getmany(timeout_ms=200, max_records=200)
                for tp, records in batches.items():
                    for r in records:
                        feeds[tp.topic](r.value)
                    self._records.labels(tp.topic).inc(len(records))
                    await asyncio.sleep(0)
                if not self.ready and await catch_up.check(self._consumer):
                    self.ready = True
                    log.info("api ready: read the topics' %d records held at start",
                             catch_up.records_at_start)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Answers would go stale: say so on /healthz, so a supervisor restarts us.
            log.exception("api: reading the topics failed")
            self.failed = True
            raise

    def _model_update(self, raw: bytes | None) -> None:
        try:
            update = ModelUpdate.model_validate_json(raw or b"")
        except ValueError:
            return  # the scorer's business to report; the API keeps its version
        self._announced[update.version] = update

    async def _follow_models(self) -> None:
        """Serve the newest announced version that loads (in a thread); one that is
        refused is not tried again, and the next newer-than-loaded one is."""
        if self.settings.model_registry is None:
            return
        tried: set[str] = set()
        loaded_ms = -1
        while True:
            newest_first = sorted(self._announced.values(), key=lambda u: -u.published_ms)
            for update in newest_first:
                if update.published_ms <= loaded_ms or update.version == self.similar.version:
                    break
                if update.version in tried:
                    continue
                tried.add(update.version)
                if await asyncio.to_thread(self.similar.load, Path(update.uri), update.sha256):
                    loaded_ms = update.published_ms
                    break
            await asyncio.sleep(0.5)

    def _count(self, route: str, response: web.StreamResponse) -> web.StreamResponse:
        self._requests.labels(route, str(response.status)).inc()
        return response

    async def _user_recommendations(self, request: web.Request) -> web.StreamResponse:
        check_query(request.query, {"k", "exclude", "category"})
        user = check_user_id(request.match_info["user_id"])
        k, exclude = query_k(request.query), query_exclude(request.query)
        body = self.state.user_list(user, k, exclude, now_ms(), query_category(request.query))
        return self._count("user", _json(body))

    async def _popular(self, request: web.Request) -> web.StreamResponse:
        check_query(request.query, {"k", "exclude", "category", "window"})
        body = self.state.popular(query_k(request.query), query_exclude(request.query), now_ms(),
                                  query_category(request.query), query_window(request.query))
        return self._count("popular", _json(body))

    async def _similar(self, request: web.Request) -> web.StreamResponse:
        check_query(request.query, {"k", "exclude"})
        item = check_item_id(request.match_info["item_id"])
        k = query_k(request.query)
        exclude = query_exclude(request.query) | self.state.catalogue.unavailable(now_ms())
        known = self.state.catalogue.items.get(item)
        text = known.text if known is not None else None
        found = await asyncio.to_thread(self.similar.similar, item, k, exclude, text)
        body = {"item_id": item, "model_version": self.similar.version,
                "source": "model" if found is not None else "none",
                "items": [{"item_id": i, "score": s} for i, s in found or []]}  # fmt: skip
        return self._count("similar", _json(body))

    async def _post_events(self, request: web.Request) -> web.StreamResponse:
        check_query(request.query, set())
        events = parse_events_body(await request.read())
        assert self._producer is not None
        try:
            sends = [await self._producer.send(EVENTS, e.model_dump_json().encode(),
                                               key=e.user_id.encode()) for e in events]
            await asyncio.wait_for(asyncio.gather(*sends), self.settings.produce_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the client is told to retry
            log.warning("events not acknowledged: %r", exc)
            return self._count("events", _error(503, "not_acknowledged", None,
                                                f"the broker did not acknowledge: {exc!r}"))
        body = {"accepted": len(events), "event_ids": [e.event_id for e in events]}
        return self._count("events", _json(body, 202))

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(openapi_document())

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        if self.failed:
            return web.Response(text="reading the topics failed", status=503)
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ready" if self.ready else "catching up",
                            status=200 if self.ready else 503)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def run_api(settings: ApiSettings, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = ApiServer(settings)
        await server.start()
        try:
            announce(f"api: http://{settings.host}:{server.port}/ (OpenAPI at /openapi.json)")
            await stop.wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
