"""The scorer process: score-requests in, recommendations out.

One consumer group member per process; partitions are the unit of
parallelism. Each loop turn fetches, micro-batches (coalescing a user's
requests), lets the model learn from the batch and score it (in a worker
thread, so the event loop keeps fetching and delivering meanwhile), and sends
the recommendations. Pipelined: a batch's recommendations are delivered while
the next batch is scored; its offsets are committed only once the broker has
acknowledged all of them, and the next batch's sends start only then, so a
partition's recommendations keep their order: at-least-once. Exactly-once is
not attempted because the embedded broker has no working idempotent producer
(docs/embedded-broker.md, defect 3); consumers of ``recommendations`` treat the newest list
per user as the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from recstream.inference.batcher import Batch, MicroBatcher
from recstream.inference.catalogue_reader import CatalogueReader
from recstream.inference.catalogue_texts import TextFollower
from recstream.inference.hotswap import ModelSwapper, SwapMetrics, published_ms_of
from recstream.inference.recommender import BACKENDS, Recommender, load_recommender
from recstream.schemas.messages import (
    Explanation,
    RankedItem,
    Recommendation,
    ScoreRequest,
    now_ms,
    parse_score_request,
)
from recstream.schemas.probes import ProbeServer, loop_responds
from recstream.schemas.settings import KafkaSettings, env_number
from recstream.schemas.topics import RECOMMENDATIONS, SCORE_REQUESTS

log = logging.getLogger(__name__)

GROUP_ID = "recstream-scorer"
#: Longest a fetch waits when nothing is pending, so a stop request is seen quickly.
IDLE_POLL_MS = 500
#: Seconds between one-line progress reports in the log.
REPORT_EVERY_S = 30.0
#: Invalid requests logged one by one before the log switches to one line per 1000.
LOUD_INVALID = 20


@dataclass
class _InFlight:
    """A scored batch whose recommendations are being delivered."""

    delivery: asyncio.Future[None]
    #: Safe to commit once ``delivery`` is done (and every batch before it).
    offsets: dict[TopicPartition, int]


@dataclass(frozen=True)
class ScorerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    top_k: int = 10
    batch_size: int = 256
    #: How long a batch may keep filling while more requests wait at the broker.
    #: When the scorer is caught up, what it has is scored at once.
    batch_ms: int = 10
    #: A trained model version directory; None serves the online co-occurrence model.
    model_dir: Path | None = None
    #: The model registry folder: when set, the scorer follows ``model-updates`` and
    #: hot-swaps the versions announced there (inference.hotswap).
    model_registry: Path | None = None
    #: Follow only this model name's updates (None: every update in the topic).
    model_name: str | None = None
    #: Scoring backend of a trained model: auto, tensorrt, onnxruntime, torch, ...
    backend: str = "auto"
    #: torch / ONNX Runtime intra-op threads (None: the library's default).
    threads: int | None = None
    metrics_port: int | None = None
    group_id: str = GROUP_ID
    #: Fast group joins on the embedded broker (docs/embedded-broker.md, defect 2).
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    #: How long the broker may hold a fetch with no data. Kafka answers as soon as
    #: data arrives, but the embedded broker (Tansu) waits out most of this window
    #: (measured: p50 140 ms hop latency at aiokafka's default 500 ms, 6 ms at 20 ms),
    #: so keep it short; an idle fetch every 20 ms costs next to nothing.
    fetch_max_wait_ms: int = 20
    #: Past events each recommendation drew on most (attention rollout), in the
    #: message's ``explanation``. Torch backends only; costs a second forward pass.
    explain_top: int = 0
    #: Follow the ``items`` topic: retired and expired items are never recommended.
    catalogue: bool = True

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"RECSTREAM_TOP_K must be >= 1, got {self.top_k}")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"RECSTREAM_SCORER_BACKEND must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.metrics_port is not None and not 0 < self.metrics_port <= 65535:
            raise ValueError(f"RECSTREAM_METRICS_PORT must be 0..65535, got {self.metrics_port}")
        if self.batch_size < 1 or self.batch_ms < 0:
            raise ValueError(
                "RECSTREAM_SCORER_BATCH must be >= 1 and RECSTREAM_SCORER_BATCH_MS >= 0"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ScorerSettings:
        env = os.environ if env is None else env
        model_dir = env.get("RECSTREAM_MODEL_DIR", "").strip()
        registry = env.get("RECSTREAM_MODEL_REGISTRY", "").strip()
        return cls(
            kafka=KafkaSettings.from_env(env),
            top_k=env_number(env, "RECSTREAM_TOP_K", cls.top_k),
            batch_size=env_number(env, "RECSTREAM_SCORER_BATCH", cls.batch_size),
            batch_ms=env_number(env, "RECSTREAM_SCORER_BATCH_MS", cls.batch_ms),
            model_dir=Path(model_dir) if model_dir else None,
            model_registry=Path(registry) if registry else None,
            model_name=env.get("RECSTREAM_MODEL_NAME", "").strip() or None,
            backend=env.get("RECSTREAM_SCORER_BACKEND", "auto").strip() or "auto",
            threads=env_number(env, "RECSTREAM_TORCH_THREADS", 0) or None,
            # 0, like unset, serves nothing (as in the worker and the trainer).
            metrics_port=env_number(env, "RECSTREAM_METRICS_PORT", 0) or None,
            group_id=env.get("RECSTREAM_SCORER_GROUP", GROUP_ID),
            fetch_max_wait_ms=env_number(env, "RECSTREAM_SCORER_FETCH_WAIT_MS", cls.fetch_max_wait_ms),
            explain_top=env_number(env, "RECSTREAM_SCORER_EXPLAIN", cls.explain_top),
            catalogue=env.get("RECSTREAM_SCORER_CATALOGUE", "1").strip() != "0",
        )


class ScorerMetrics:
    """Prometheus metrics in a registry of their own (exported only when a port is set)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recstream_scorer_requests", "valid score requests read", registry=r
        )
        self.invalid = Counter(
            "recstream_scorer_invalid_requests",
            "unparseable score requests",
            ["reason"],
            registry=r,
        )
        self.coalesced = Counter(
            "recstream_scorer_coalesced_requests", "requests superseded by a newer one", registry=r
        )
        self.recommendations = Counter(
            "recstream_scorer_recommendations", "recommendations sent and acknowledged", registry=r
        )
        self.batch_size = Histogram(
            "recstream_scorer_batch_size",
            "users per scored batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "recstream_scorer_batch_seconds",
            "observe + recommend + send + ack per batch",
            registry=r,
        )
        self.latency = Histogram(
            "recstream_scorer_ingest_to_emit_seconds",
            "worker read of the trigger event to the recommendation being sent",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

        self.items_applied = Gauge(
            "recstream_scorer_catalogue_records",
            "items records applied; once it counts a retirement, no list emitted later has it",
            registry=r,
        )
        self.items_unavailable = Gauge(
            "recstream_scorer_catalogue_unavailable", "items retired or expired", registry=r
        )
        self.text_only_items = Gauge(
            "recstream_scorer_text_only_items",
            "catalogue items the served version has no row for, ranked by their text",
            registry=r,
        )
        self.ready = Gauge(
            "recstream_scorer_ready", "1 while the consumer runs with a model loaded", registry=r
        )
        self.model_info = Gauge(
            "recstream_scorer_model_info",
            "1 for the model version served",
            ["model_version"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "recstream_scorer_model_loaded_timestamp_seconds",
            "when the served model was loaded (model age = now - this)",
            registry=r,
        )

    def set_model(self, version: str) -> None:
        """Record the model now served (at start and after each swap)."""
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self.model_loaded.set_to_current_time()

    def serve(self, port: int) -> ProbeServer:
        """/metrics, /healthz (the event loop answers; call from it) and /readyz."""
        server = ProbeServer(
            self.registry,
            port,
            live=loop_responds(asyncio.get_running_loop()),
            ready=lambda: self.ready._value.get() == 1.0,  # no public getter
        )
        log.info("metrics on :%d (/metrics, /healthz, /readyz)", port)
        return server


class _DropRevoked(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, batcher: MicroBatcher[TopicPartition, ScoreRequest]) -> None:
        self.batcher = batcher

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        dropped = self.batcher.drop_partitions(revoked)
        if dropped:
            log.info("partitions revoked: %d pending users left to their next owner", dropped)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


async def _started(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """``client.start()``; on failure (no broker, say) stop it before raising, or
    aiokafka warns of an unclosed client at exit on top of the real error."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


class Scorer:
    def __init__(
        self, settings: ScorerSettings, model: Recommender, metrics: ScorerMetrics,
        swapper: ModelSwapper | None = None, catalogue: CatalogueReader | None = None,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue
        #: New catalogue items, ranked by text until a version learns them.
        self.texts = TextFollower() if catalogue is not None else None
        self.model = model
        self.metrics = metrics
        self.swapper = swapper
        #: The latest batch's requests: a new version is warmed up on them.
        self.recent: list[ScoreRequest] = []
        self.batcher: MicroBatcher[TopicPartition, ScoreRequest] = MicroBatcher(
            settings.batch_size, settings.batch_ms, max_pending=4 * settings.batch_size
        )
        self.n_invalid = 0
        self.n_requests = 0
        self.n_sent = 0
        self._reported = (time.monotonic(), 0, 0)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        kafka = s.kafka.aiokafka_kwargs()
        consumer = AIOKafkaConsumer(
            group_id=s.group_id,
            enable_auto_commit=False,
            # Requests written before the first scorer joins must still be served.
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            group_instance_id=s.kafka.group_instance_id,
            **kafka,
        )
        consumer.subscribe([SCORE_REQUESTS], listener=_DropRevoked(self.batcher))
        producer = AIOKafkaProducer(acks="all", enable_idempotence=False, linger_ms=2, **kafka)
        try:
            await _started(producer)
        except BaseException:
            await consumer.stop()  # built, never started: else reported unclosed at exit
            raise
        try:
            await _started(consumer)
            try:
                if self.catalogue is not None:
                    await self.catalogue.start()  # before the first list: nothing retired shown
                    self._catalogue_metrics()
                log.info("scorer started: model %s, group %s, fetch wait %d ms",
                         self.model.version, s.group_id, s.fetch_max_wait_ms)
                # What start-up built (torch, the model, its session) lives to the
                # end. Frozen, a full collection no longer walks it: in `bench
                # stream` one took 93 ms, a stall between two batches.
                gc.collect()
                gc.freeze()
                self.metrics.ready.set(1)
                await self._loop(consumer, producer, stop)
            finally:
                self.metrics.ready.set(0)
                await consumer.stop()  # leaves the group: partitions move at once
                if self.catalogue is not None:
                    await self.catalogue.stop()
        finally:
            await producer.stop()
        log.info("scorer stopped")

    async def _loop(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        batcher = self.batcher
        in_flight: _InFlight | None = None
        while not stop.is_set():
            wait = batcher.wait_ms(time.monotonic() * 1000) if len(batcher) else IDLE_POLL_MS
            room = batcher.room
            if room > 0:
                fetched = await consumer.getmany(timeout_ms=int(wait), max_records=room)
                self._add(fetched)
            self._maybe_swap()  # here, between two batches: never in the middle of one
            if self.catalogue is not None and await self.catalogue.poll():
                self._catalogue_metrics()  # applied: every later batch excludes what it retired
            self._follow_item_texts()
            if len(batcher) and (
                batcher.due(time.monotonic() * 1000) or self._caught_up(consumer)
            ):
                in_flight = await self._score(batcher.take(), producer, consumer, in_flight)
            elif in_flight is not None and in_flight.delivery.done():
                await self._settle(consumer, in_flight)
                in_flight = None
            if in_flight is None:  # else committable() would count the batch in flight
                offsets = batcher.committable()
                if offsets:
                    await self._commit(consumer, offsets)
            self._maybe_report()
        # Stopping: serve what was already read, so the next owner repeats less.
        while len(batcher):
            in_flight = await self._score(batcher.take(), producer, consumer, in_flight)
        if in_flight is not None:
            await self._settle(consumer, in_flight)
        offsets = batcher.committable()
        if offsets:
            await self._commit(consumer, offsets)

    async def _settle(self, consumer: AIOKafkaConsumer, batch: _InFlight) -> None:
        """Wait for a batch's deliveries (a failure raises: nothing more is committed),
        then commit its offsets."""
        await batch.delivery
        if batch.offsets:
            await self._commit(consumer, batch.offsets)

    def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        """Nothing more waits at the broker (as of the last fetches): waiting for
        the batch to fill would only add latency. Under load it is not, and
        batches fill up to ``batch_size`` within ``batch_ms``."""
        for tp, next_offset in self.batcher.next_offsets().items():
            try:
                end = consumer.highwater(tp)
            except AssertionError:  # revoked; the batcher forgets it in the listener
                continue
            if end is not None and next_offset < end:
                return False
        return True

    def _maybe_swap(self) -> None:
        loaded = self.swapper.take_ready() if self.swapper is not None else None
        if loaded is None or self.swapper is None:
            return
        old = self.model.version
        self.model = loaded.model
        self.metrics.set_model(loaded.model.version)
        self.swapper.swapped(loaded, old)

    def _maybe_report(self) -> None:
        now = time.monotonic()
        since, requests, sent = self._reported
        if now - since < REPORT_EVERY_S:
            return
        self._reported = (now, self.n_requests, self.n_sent)
        log.info(
            "last %.0fs: %d requests scored (%.0f/s), %d recommendations sent; %d invalid in total",
            now - since,
            self.n_requests - requests,
            (self.n_requests - requests) / (now - since),
            self.n_sent - sent,
            self.n_invalid,
        )

    def _add(self, fetched: Mapping[TopicPartition, Sequence[object]]) -> None:
        now = time.monotonic() * 1000
        for tp, records in fetched.items():
            for rec in records:
                offset: int = rec.offset  # type: ignore[attr-defined]
                try:
                    req = parse_score_request(rec.value)  # type: ignore[attr-defined]
                except ValueError as exc:
                    self._invalid(tp, offset, str(exc))
                    self.batcher.skip(tp, offset)
                    continue
                self.metrics.requests.inc()
                self.batcher.add(tp, offset, req.user_id, req.trigger_ts, req, now)

    def _invalid(self, tp: TopicPartition, offset: int, reason: str) -> None:
        self.n_invalid += 1
        self.metrics.invalid.labels(reason.split(":", 1)[0]).inc()
        if self.n_invalid <= LOUD_INVALID or self.n_invalid % 1000 == 0:
            log.warning(
                "invalid score request %s[%d]@%d skipped (%d so far): %s",
                tp.topic,
                tp.partition,
                offset,
                self.n_invalid,
                reason[:300],
            )

    async def _score(
        self, batch: Batch[ScoreRequest], producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer, previous: _InFlight | None,
    ) -> _InFlight:
        """Score ``batch`` while ``previous`` is delivered, settle ``previous``, then
        start this batch's delivery; returns it."""
        started = time.perf_counter()
        requests = batch.items
        # One model for the whole batch, and its version on every recommendation.
        model = self.model
        # In a worker thread: the backends release the GIL while they compute,
        # so the previous batch's deliveries and the next fetches go on.
        # Read here, between batches, where the loop applies the catalogue's records.
        gone = self.catalogue.catalogue.unavailable(now_ms()) if self.catalogue else frozenset()
        ranked, why = await asyncio.to_thread(self._recommend, model, requests, gone)
        emitted = now_ms()
        version = model.version
        self.recent = requests[:64]
        records = []
        for req, items, because in zip(requests, ranked, why, strict=True):
            rec = Recommendation(
                user_id=req.user_id,
                items=items,
                model_version=version,
                trigger_event_id=req.trigger_event_id,
                trigger_ts=req.trigger_ts,
                ingest_ms=req.ingest_ms,
                emitted_ms=emitted,
                explanation=because or None,
            )
            records.append((req.user_id.encode(), rec.model_dump_json(exclude_none=True).encode()))
        # This batch's users have left the batcher: its offsets are safe once
        # this batch and every one before it are delivered.
        offsets = self.batcher.committable()
        if previous is not None:
            await self._settle(consumer, previous)  # its sends all precede this batch's
        delivery = asyncio.ensure_future(
            self._deliver(producer, records, batch, emitted, started))
        return _InFlight(delivery, offsets)

    def _follow_item_texts(self) -> None:
        if self.texts is not None and self.catalogue is not None:
            ranked = self.texts.step(self.model, self.catalogue.catalogue)
            if ranked is not None:
                self.metrics.text_only_items.set(ranked)

    def _catalogue_metrics(self) -> None:
        assert self.catalogue is not None
        cat = self.catalogue.catalogue
        self.metrics.items_unavailable.set(len(cat.unavailable(now_ms())))
        self.metrics.items_applied.set(cat.applied)

    def _recommend(
        self, model: Recommender, requests: list[ScoreRequest], gone: frozenset[str]
    ) -> tuple[list[list[RankedItem]], list[list[Explanation]]]:
        model.observe(requests)
        ranked = model.recommend(requests, self.settings.top_k, unavailable=gone)
        return ranked, _explanations(model, requests, self.settings.explain_top)

    async def _deliver(
        self, producer: AIOKafkaProducer, records: list[tuple[bytes, bytes]],
        batch: Batch[ScoreRequest], emitted: int, started: float,
    ) -> None:
        await send_all(producer, RECOMMENDATIONS, records)  # raises: then nothing is committed
        m = self.metrics
        requests = batch.items
        self.n_requests += batch.records
        self.n_sent += len(requests)
        m.recommendations.inc(len(requests))
        m.coalesced.inc(batch.coalesced)
        m.batch_size.observe(len(requests))
        m.batch_seconds.observe(time.perf_counter() - started)
        for req in requests:
            m.latency.observe(max(0, emitted - req.ingest_ms) / 1000)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # A rebalance took the partitions: their next owner re-reads from the
            # last commit, so these requests are scored twice, never lost.
            log.warning("offset commit skipped during rebalance: %s", exc)
            return
        except KafkaError as exc:
            if not retriable(exc):
                raise
            # E.g. the broker was paused: these offsets stay uncommitted and go
            # with the next commit; a crash before that only repeats requests.
            log.warning("offset commit failed, retried with the next batch: %r", exc)
            return
        self.batcher.committed(offsets)


#: How long a batch's recommendations are re-sent after retriable errors (a
#: paused or restarting broker) before the scorer gives up and exits uncommitted.
SEND_RETRY_S = 120.0


def retriable(exc: BaseException) -> bool:
    """Kafka errors worth retrying: aiokafka marks most; a request the broker timed
    out (Tansu answers REQUEST_TIMED_OUT to requests held across a pause) is one."""
    if isinstance(exc, KafkaTimeoutError):  # a client-side timeout: the broker may be back
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


async def send_all(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    retry_s: float = SEND_RETRY_S,
) -> None:
    """Send every ``(key, value)`` and wait for all acks, re-sending the failed ones
    after retriable errors (at-least-once: a retry may duplicate, never drop)."""
    deadline = time.monotonic() + retry_s
    delay = 0.1
    pending = list(records)
    while pending:
        results: list[object] = []
        try:
            acks = [await producer.send(topic, value, key=key) for key, value in pending]
            results = list(await asyncio.gather(*acks, return_exceptions=True))
        except KafkaError as exc:  # send() itself: e.g. metadata unavailable
            results = [exc] * len(pending)
        failed = [(rec, res) for rec, res in zip(pending, results, strict=True)
                  if isinstance(res, BaseException)]
        if not failed:
            return
        err = failed[0][1]
        assert isinstance(err, BaseException)
        if not retriable(err) or time.monotonic() + delay > deadline:
            raise err
        log.warning("re-sending %d of %d records to %s after %r", len(failed), len(pending),
                    topic, err)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
        pending = [rec for rec, _ in failed]


def _explanations(
    model: Recommender, requests: Sequence[ScoreRequest], top: int
) -> list[list[Explanation]]:
    """Explanations where asked for and the model can give them; else [] per request."""
    if top > 0 and model.can_explain:
        return model.explain(requests, top)
    return [[] for _ in requests]


async def serve(settings: ScorerSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (for embedding; :func:`run_scorer` wires up signals)."""
    metrics = ScorerMetrics()
    swapper, model, published = None, None, None
    if settings.model_registry is not None:
        swapper = ModelSwapper(
            registry=settings.model_registry, backend=settings.backend, k=settings.top_k,
            threads=settings.threads, metrics=SwapMetrics(metrics.registry),
            kafka=settings.kafka.aiokafka_kwargs(), model_name=settings.model_name,
        )
        # Start on the newest valid announced version (a restart serves the latest);
        # with none, on RECSTREAM_MODEL_DIR, else on the registry's CURRENT.
        found = await swapper.start()
        loaded = await asyncio.to_thread(swapper.catch_up, found)
        if loaded is None and settings.model_dir is None:
            loaded = await asyncio.to_thread(swapper.registry_current)
        if loaded is not None:
            model, published = loaded.model, loaded.published_ms
    if model is None:
        model = load_recommender(
            settings.model_dir, backend=settings.backend, k=settings.top_k,
            threads=settings.threads,
        )
        if settings.model_dir is not None:
            published = published_ms_of(settings.model_dir)
    log.info("serving model %s", model.version)
    metrics.set_model(model.version)
    catalogue = CatalogueReader(settings.kafka.aiokafka_kwargs()) if settings.catalogue else None
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    if swapper is None:
        await Scorer(settings, model, metrics, catalogue=catalogue).run(stop)
        return
    swapper.serving(model, published)
    scorer = Scorer(settings, model, metrics, swapper, catalogue)
    swapper.recent = lambda: scorer.recent  # new versions warm up on live requests
    follow = asyncio.create_task(swapper.run(stop))
    try:
        await scorer.run(stop)
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        await swapper.stop()


def run_scorer(settings: ScorerSettings) -> None:
    """Serve until SIGTERM or SIGINT, then leave the group and flush the producer."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
