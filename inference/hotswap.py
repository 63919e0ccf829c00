"""Hot-swap of model versions in a running scorer.

Every scorer reads every ``model-updates`` message: no consumer group, all
partitions assigned, read from the beginning. On start it catches up: the
newest announcement that verifies and loads is what it serves first, so a
restarted scorer serves the latest published version (older messages are
stale; see :mod:`inference.hotswap_policy` for the ordering rules).

While serving, an update is handled in a background thread so scoring never
stalls on it: :func:`inference.registry.verify_version_dir` with the announced
sha256, then the load (same backend as the running model; TensorRT refits the
running engine's plan when the graph matches), then a warm-up on the scorer's
recent requests. The scorer takes the loaded model between two batches
(:meth:`ModelSwapper.take_ready`), never in the middle of one, and every
recommendation carries the version of the model that scored it.

Anything that fails (a checksum, a missing or unreadable file, a version
mismatch, a load or warm-up error, a model that cannot return k items) is
refused with one log line and ``recstream_scorer_model_refused_total{reason}``;
the running model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError
from recstream.inference.hotswap_policy import Announcement, UpdatePolicy, newest_first, resolve_uri
from recstream.inference.recommender import Recommender, load_recommender
from recstream.inference.registry import MANIFEST, ArtifactError, Registry, verify_version_dir
from recstream.schemas.messages import ModelUpdate, ScoreRequest, now_ms
from recstream.schemas.topics import MODEL_UPDATES

log = logging.getLogger(__name__)

#: How long the broker may hold an update fetch (updates are rare; this bounds
#: how late one is seen, and costs one idle fetch per period).
UPDATE_FETCH_WAIT_MS = 200
#: Start-up catch-up gives up after this long and serves what it has.
CATCH_UP_S = 30.0
#: How often to look for the topic's partitions when it had none at start.
ASSIGN_RETRY_S = 5.0
#: How long one look waits for the subscription's partitions.
ASSIGN_WAIT_S = 2.0
#: GIL switch interval while a version loads beside the scoring loop.
LOAD_SWITCH_INTERVAL_S = 0.001
#: Users in the synthetic warm-up batch.
WARM_USERS = 64


class Refused(RuntimeError):
    """An update that must not be served; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)  # logged as "refused (<reason>): <detail>"
        self.reason = reason


class SwapMetrics:
    """Hot-swap metrics, in the scorer's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.swaps = Counter("recstream_scorer_model_swaps", "model versions swapped in",
                             registry=r)
        self.swap_seconds = Histogram(
            "recstream_scorer_model_swap_seconds",
            "model-updates message read to the new version serving (verify, load, warm, wait "
            "for a batch boundary)",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=r)
        self.last_swap_seconds = Gauge("recstream_scorer_model_last_swap_seconds",
                                       "duration of the latest swap", registry=r)
        self.refused = Counter("recstream_scorer_model_refused",
                               "model updates refused; the running version kept serving",
                               ["reason"], registry=r)
        self.ignored = Counter("recstream_scorer_model_updates_ignored",
                               "model updates not acted on (stale, other model, duplicate, "
                               "superseded)", ["reason"], registry=r)
        self.age = Gauge("recstream_scorer_model_age_seconds",
                         "seconds since the served version was published", registry=r)
        self._published_s = time.time()
        self.age.set_function(lambda: time.time() - self._published_s)

    def serving(self, published_ms: int | None) -> None:
        # The version itself is recstream_scorer_model_info (ScorerMetrics.set_model).
        self._published_s = (published_ms / 1000) if published_ms else time.time()


def backend_kind(model: Recommender) -> str | None:
    """The backend name to load the next version with (``select_backend`` kinds),
    or None for a model without one (the co-occurrence baseline)."""
    if model.backend is None:
        return None
    name = model.backend.name
    if name.startswith("tensorrt"):
        return "tensorrt"
    if name.startswith("torch-compile"):
        return "torch-compile"
    if name.startswith("torch-cuda-graphs"):
        return "torch-cuda-graphs"
    if name.startswith("torch"):
        return "torch"
    return name  # onnxruntime, onnxruntime-int8


def published_ms_of(folder: Path) -> int | None:
    """When a version folder was published (its registry manifest), if it says."""
    try:
        return int(json.loads((folder / MANIFEST).read_text())["published_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Loaded:
    announcement: Announcement | None
    model: Recommender
    published_ms: int | None
    timings: dict[str, float] = field(default_factory=dict)


def warm_requests(model: Recommender, recent: Sequence[ScoreRequest], max_len: int = 50
                  ) -> list[ScoreRequest]:
    """The scorer's recent requests, or synthetic ones over the model's catalogue."""
    if recent:
        return list(recent)
    catalogue: list[str] = list(model.item_ids)[:1000] or ["warm-up"]
    t0 = now_ms() - 3_600_000
    out = []
    for u in range(WARM_USERS):
        n = 1 + (u * 7) % max_len
        items = [catalogue[(u + j) % len(catalogue)] for j in range(n)]
        ts = [t0 + 60_000 * j for j in range(n)]
        out.append(ScoreRequest(user_id=f"warm-{u}", items=items, ts=ts,
                                event_types=["view"] * n, trigger_event_id=f"warm-{u}",
                                trigger_ts=ts[-1], ingest_ms=ts[-1]))
    return out


def load_version(
    a: Announcement, registry: Path, *, backend: str, k: int, threads: int | None,
    previous: Recommender | None, recent: Sequence[ScoreRequest],
) -> Loaded:
    """Verify, load and warm one announced version; :class:`Refused` if it cannot serve."""
    u = a.update
    timings: dict[str, float] = {}
    t = time.perf_counter()
    try:
        folder = resolve_uri(u.uri, registry)
        manifest = verify_version_dir(folder, u.sha256)
    except ArtifactError as exc:
        raise Refused(exc.reason, exc.detail) from exc
    if manifest.get("version") != u.version:
        raise Refused("mismatch", f"{folder}: manifest says version {manifest.get('version')!r}, "
                                  f"the update says {u.version!r}")
    timings["verify_s"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        model = load_recommender(folder, backend=backend, k=k, threads=threads, previous=previous)
    except Exception as exc:  # any failure to load: refuse it, keep serving the old one
        raise Refused(_load_reason(exc), f"{folder}: {type(exc).__name__}: {exc}") from exc
    timings["load_s"] = time.perf_counter() - t
    check_servable(model, k)
    t = time.perf_counter()
    try:
        reqs = warm_requests(model, recent)
        for _ in range(2):  # first-call allocations and lazy init happen in the first pass
            out = model.recommend(reqs, k)
            if len(out) != len(reqs):
                raise ValueError(f"{len(out)} lists for {len(reqs)} requests")
    except Exception as exc:
        raise Refused("warmup", f"{folder}: warm-up failed: {type(exc).__name__}: {exc}") from exc
    timings["warm_s"] = time.perf_counter() - t
    return Loaded(a, model, int(manifest.get("published_ms") or u.published_ms), timings)


def _load_reason(exc: BaseException) -> str:
    """The refusal label a load failure carries (``ModelDirError.reason``, found
    through the wrapping ``ModelLoadError``), else "load"."""
    seen: BaseException | None = exc
    while seen is not None:
        reason = getattr(seen, "reason", None)
        if isinstance(reason, str):
            return reason
        seen = seen.__cause__
    return "load"


def check_servable(model: Recommender, k: int) -> None:
    """Refuse a model whose compiled top-K cannot serve ``k`` items (an item list
    that does not fit the model is refused at load: ``ModelDirError``, "catalogue")."""
    if model.backend is None:
        return
    max_k, n_items = model.backend.max_k, model.n_items
    if max_k < min(k, n_items):
        raise Refused("top_k", f"the backend returns at most {max_k} items; {k} are served")


class ModelSwapper:
    """Follows ``model-updates`` and prepares new versions for the scorer to take.

    The scorer calls :meth:`take_ready` between batches and :meth:`swapped`
    after switching; everything else runs in this object's own tasks and its
    loader thread.
    """

    def __init__(
        self, *, registry: Path, backend: str, k: int, threads: int | None,
        metrics: SwapMetrics, kafka: dict[str, Any], model_name: str | None = None,
        recent: Callable[[], Sequence[ScoreRequest]] = lambda: (),
    ) -> None:
        self.registry = Path(registry)
        self.backend = backend
        self.k = k
        self.threads = threads
        self.metrics = metrics
        self.kafka = kafka
        self.policy = UpdatePolicy(model_name=model_name)
        self.recent = recent
        self.current: Recommender | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: Announcement | None = None
        self._wake = asyncio.Event()
        self._ready: Loaded | None = None
        # One loader thread: versions load one at a time, in message order.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model-loader")

    # ---- start-up ---------------------------------------------------------

    async def start(self) -> list[Announcement]:
        """Assign every partition of ``model-updates`` and read it to the end."""
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    fetch_max_wait_ms=UPDATE_FETCH_WAIT_MS, **self.kafka)
        await consumer.start()
        self._consumer = consumer
        tps = await self._assign()
        if not tps:
            log.warning("topic %s has no partitions (not created yet?); looking again every "
                        "%.0fs", MODEL_UPDATES, ASSIGN_RETRY_S)
            return []
        ends = await consumer.end_offsets(tps)
        found: list[Announcement] = []
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=UPDATE_FETCH_WAIT_MS)
            found.extend(self._parse(fetched))
            positions = {tp: await consumer.position(tp) for tp in tps}
            # The embedded broker may answer an end offset short by the tail of the
            # last batch (docs/embedded-broker.md, defect 1): stop only on an empty fetch past it.
            if not fetched and all(positions[tp] >= ends[tp] for tp in tps):
                break
        else:
            log.warning("catch-up on %s did not finish in %.0fs; later updates are applied "
                        "as they come", MODEL_UPDATES, CATCH_UP_S)
        return found

    def catch_up(self, found: list[Announcement]) -> Loaded | None:
        """Load the newest announcement that verifies and loads (synchronously: the
        scorer is not serving yet). Every message read counts as handled."""
        for a in found:
            self.policy.consider(a)  # marks positions; the catch-up chooses by itself
        wanted = [a for a in newest_first(found) if self.policy.model_name in (None,
                                                                              a.update.model_name)]
        for a in wanted:
            try:
                loaded = load_version(a, self.registry, backend=self.backend, k=self.k,
                                      threads=self.threads, previous=None, recent=())
            except Refused as exc:
                self._refuse(a, exc, serving="nothing yet")
                continue
            log.info("start-up: newest valid update is %s (message %d of partition %d)",
                     a.update.version, a.offset, a.partition)
            return loaded
        return None

    def registry_current(self) -> Loaded | None:
        """The registry's CURRENT version, verified and loaded (a start with no valid
        update on the topic, e.g. a fresh broker); None if there is none or it fails."""
        try:
            info = Registry(self.registry).current()
        except (KeyError, OSError) as exc:
            log.warning("registry %s: no usable CURRENT version: %s", self.registry, exc)
            return None
        if info is None:
            return None
        update = ModelUpdate(model_name=self.policy.model_name or "", version=info.version,
                             uri=str(info.path), sha256=info.sha256,
                             published_ms=info.published_ms)
        a = Announcement(update, -1, -1, time.monotonic())
        try:
            loaded = load_version(a, self.registry, backend=self.backend, k=self.k,
                                  threads=self.threads, previous=None, recent=())
        except Refused as exc:
            self._refuse(a, exc, serving="nothing yet")
            return None
        log.info("start-up: no valid update on %s; serving the registry's CURRENT %s",
                 MODEL_UPDATES, info.version)
        return loaded

    # ---- steady state -----------------------------------------------------

    def serving(self, model: Recommender, published_ms: int | None) -> None:
        """Tell the swapper (and the metrics) which model serves now."""
        self.current = model
        self.policy.serving = model.version
        self.metrics.serving(published_ms)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch updates and load them, until ``stop``."""
        if self._consumer is None:
            return
        loader = asyncio.create_task(self._load_loop(stop))
        try:
            while not stop.is_set() and not self._consumer.assignment():
                await asyncio.sleep(ASSIGN_RETRY_S)
                await self._assign()
            while not stop.is_set():
                fetched = await self._consumer.getmany(timeout_ms=500)
                for a in self._parse(fetched):
                    self._offer(a)
        finally:
            self._wake.set()
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def take_ready(self) -> Loaded | None:
        """A loaded, warmed version to switch to now (between two batches), if any."""
        ready, self._ready = self._ready, None
        return ready

    def swapped(self, loaded: Loaded, old_version: str) -> None:
        """The scorer switched to ``loaded``: record it."""
        self.serving(loaded.model, loaded.published_ms)
        a = loaded.announcement
        seconds = time.monotonic() - a.received if a is not None else 0.0
        self.metrics.swaps.inc()
        self.metrics.swap_seconds.observe(seconds)
        self.metrics.last_swap_seconds.set(seconds)
        parts = ", ".join(f"{k.removesuffix('_s')} {v:.2f}s" for k, v in loaded.timings.items())
        log.info("model swapped: %s -> %s in %.2fs (%s)", old_version, loaded.model.version,
                 seconds, parts)

    # ---- internals --------------------------------------------------------

    async def _assign(self) -> list[TopicPartition]:
        """Every partition of the topic, from its beginning; [] if it has none yet.

        A started consumer knows no topic's partitions on Kafka (Tansu lists them
        all), so it subscribes: without a group, aiokafka then assigns every
        partition the broker's metadata lists.
        """
        assert self._consumer is not None
        if not self._consumer.subscription():
            self._consumer.subscribe([MODEL_UPDATES])
        deadline = time.monotonic() + ASSIGN_WAIT_S
        while not self._consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tps = sorted(self._consumer.assignment())
        if tps:
            await self._consumer.seek_to_beginning(*tps)
        return tps

    def _parse(self, fetched: dict[TopicPartition, list[Any]]) -> list[Announcement]:
        out = []
        now = time.monotonic()
        for tp, records in fetched.items():
            for rec in records:
                try:
                    update = ModelUpdate.model_validate_json(rec.value or b"")
                except ValidationError as exc:
                    self.metrics.refused.labels("bad_message").inc()
                    log.warning("model update %s[%d]@%d refused (bad_message): %s", tp.topic,
                                tp.partition, rec.offset, str(exc).splitlines()[0][:200])
                    continue
                out.append(Announcement(update, tp.partition, rec.offset, now))
        return out

    def _offer(self, a: Announcement) -> None:
        reason = self.policy.consider(a)
        if reason is None and self._pending is not None:
            self._ignore(self._pending, "superseded")
        if reason is not None:
            self._ignore(a, reason)
            return
        self._pending = a
        self._wake.set()

    def _ignore(self, a: Announcement, reason: str) -> None:
        self.metrics.ignored.labels(reason).inc()
        log.info("model update %s (message %d) ignored: %s", a.update.version, a.offset, reason)

    def _refuse(self, a: Announcement, exc: Refused, serving: str) -> None:
        self.metrics.refused.labels(exc.reason).inc()
        log.error("model update %s refused (%s): %s; still serving %s", a.update.version,
                  exc.reason, exc, serving)

    async def _load_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            a, self._pending = self._pending, None
            if a is None:
                continue
            # The next version is built from what will be serving by then: a
            # ready one not taken yet, else the current one (TensorRT refits its plan).
            base = self._ready.model if self._ready is not None else self.current
            kind = (backend_kind(base) if base is not None else None) or self.backend
            self.policy.loading = a.update.version
            log.info("model update %s: verifying and loading with the %s backend", a.update.version,
                     kind)
            recent = list(self.recent())  # a snapshot, taken on the event loop's thread
            # The loader's pure-Python stretches (module construction, JSON, ONNX
            # checks) hold the GIL; a short switch interval hands it back to the
            # scoring loop within ~1 ms instead of CPython's default 5 ms.
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, LOAD_SWITCH_INTERVAL_S))
            try:
                loaded = await loop.run_in_executor(self._executor, functools.partial(
                    load_version, a, self.registry, backend=kind, k=self.k,
                    threads=self.threads, previous=base, recent=recent))
            except Refused as exc:
                self._refuse(a, exc, serving=self.current.version if self.current else "?")
                continue
            finally:
                sys.setswitchinterval(interval)
                self.policy.loading = None
            if self._ready is not None:  # loaded but never served: a newer one is ready
                self._ignore(self._ready.announcement, "superseded")  # type: ignore[arg-type]
            self._ready = loaded
            # It serves from the next batch on: a message naming it now is a duplicate,
            # and one naming the version it replaces is a rollback to act on.
            self.policy.serving = loaded.model.version
