"""``recstream bench hotswap``: the scorer's latency and losses while model versions swap.

A real broker (``engine``: Kafka or Tansu) and a real ``recstream scorer`` process following a
model registry. Score requests are produced at a fixed rate, straight to
``score-requests``, each stamped with its send time; every recommendation is
matched to its request. Versions are staged (weights + ONNX export) before the
stream starts, then published one after another during the run (rename into
the registry, then a ``model-updates`` message), as a trainer on another
machine would. Reported:

* ``lost``: requests with no recommendation after the stream stopped and the
  scorer had time to drain (``duplicates``: extra ones);
* ``p50/p99_steady_ms``: request sent to recommendation received, for requests
  sent outside every swap window; ``p50/p99_swap_ms``: for requests sent inside
  one (from the update's publish to 1 s after the first recommendation of the
  new version);
* ``swap_s``: the scorer's own swap durations (``recstream_scorer_model_last_swap_seconds``
  after each swap: message read to new version serving);
* ``freshness_s``: what ``freshness_kind`` says, never anything else. With the
  trainer (``HotswapConfig.trainer``, :mod:`bench.hotswap_freshness`) it is
  ``event_to_first_served``; without, ``publish_to_first_served`` (update
  published to the first recommendation the new version made).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.schemas import ModelUpdate, Recommendation, ScoreRequest
from recstream.schemas.topics import MODEL_UPDATES, RECOMMENDATIONS, SCORE_REQUESTS

from recstream.broker import make_broker
from recstream.harness import percentile
from recstream.processes import Child, free_port, recstream_command, wait_for_async

MODEL_NAME = "recstream"
#: Why freshness is publish -> first served and not event -> first served.
FRESHNESS_NOTE = (
    "time from the model-updates message to the first recommendation by that version; "
    "versions are published by this bench, not by recstream trainer, whose published "
    "metrics carry no event-time high-water mark to start an event->served clock from"
)
#: A swap window ends this long after the new version's first recommendation.
SWAP_TAIL_S = 1.0
READY_S = 180.0


@dataclass(frozen=True)
class TinyModel:
    """Model shape of the versions published (small: the bench is about the swap)."""

    n_items: int = 2000
    max_len: int = 50
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    #: The trainer grows new items' text rows from MiniLM (384 wide), so a version it
    #: warm-starts from must have that width.
    text_dim: int = 384


def stage_version(root: Path, seed: int, shape: TinyModel, *, onnx: bool, k: int) -> Path:
    """A complete version folder under the registry's staging area (not yet published)."""
    import torch
    from recstream.inference.export import export_onnx_files
    from recstream.inference.model import ModelConfig, SeqRecModel
    from recstream.inference.model_dir import save_model_dir
    from recstream.inference.registry import Registry

    torch.manual_seed(seed)
    cfg = ModelConfig(n_items=shape.n_items, max_len=shape.max_len, d_model=shape.d_model,
                      n_heads=shape.n_heads, n_layers=shape.n_layers, text_dim=shape.text_dim,
                      dropout=0.0)
    model = SeqRecModel(cfg)
    with torch.no_grad():
        model.set_item_text(torch.randn(shape.n_items + 1, shape.text_dim))
    model.eval()
    staged = Registry(root).staging_dir()
    version = save_model_dir(staged, model, catalogue(shape), {"seed": seed})
    if onnx:
        export_onnx_files(model, staged, version, k=k, fp16=False)
    return staged


def catalogue(shape: TinyModel) -> list[str]:
    return [f"i{n}" for n in range(shape.n_items)]


def publish(root: Path, staged: Path) -> ModelUpdate:
    """Rename a staged version into the registry; the update that announces it."""
    from recstream.inference.registry import Registry

    info = Registry(root).publish(staged)
    return ModelUpdate(model_name=MODEL_NAME, version=info.version, uri=str(info.path.resolve()),
                       sha256=info.sha256, published_ms=info.published_ms)


def corrupt(folder: Path, name: str = "model.safetensors") -> None:
    """Flip bytes in a published file (what a bad disk or a half copy does)."""
    path = Path(folder) / name
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


async def send_update(bootstrap: str, update: ModelUpdate) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(MODEL_UPDATES, update.model_dump_json().encode(),
                                     key=update.model_name.encode())
    finally:
        await producer.stop()


def scrape(port: int) -> dict[str, float]:
    """The scorer's Prometheus metrics, ``name{labels}`` -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return values.get(f"{name}{{{want}}}" if want else name, 0.0)


@dataclass
class Traffic:
    """Requests sent and recommendations received, matched by trigger event id."""

    sent: dict[str, float] = field(default_factory=dict)  # trigger -> wall send time (s)
    got: dict[str, list[tuple[float, Recommendation, int, int]]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)  # version -> wall time (s)

    def answered(self) -> int:
        return sum(1 for t in self.sent if t in self.got)


def make_request(n: int, rng: random.Random, items: list[str], seq_len: int,
                 prefix: str = "t") -> ScoreRequest:
    now = int(time.time() * 1000)
    seq = [rng.choice(items) for _ in range(seq_len)]
    ts = [now - 60_000 * (seq_len - j) for j in range(seq_len)]
    return ScoreRequest(user_id=f"u{n % 5000}", items=seq, ts=ts, event_types=["view"] * seq_len,
                        trigger_event_id=f"{prefix}{n}", trigger_ts=ts[-1], ingest_ms=now)


async def stream_requests(bootstrap: str, traffic: Traffic, stop: asyncio.Event, rate: float,
                          items: list[str], seq_len: int, seed: int = 0,
                          prefix: str = "t") -> None:
    """Send requests at ``rate`` per second (on a fixed schedule, not after each ack)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                linger_ms=1)
    await producer.start()
    rng = random.Random(seed)
    n, start = 0, time.monotonic()
    try:
        while not stop.is_set():
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            req = make_request(n, rng, items, seq_len, prefix)
            traffic.sent[req.trigger_event_id] = req.ingest_ms / 1000
            await producer.send(SCORE_REQUESTS, req.model_dump_json().encode(),
                                key=req.user_id.encode())
            n += 1
        await producer.flush()
    finally:
        await producer.stop()


async def collect(bootstrap: str, traffic: Traffic, stop: asyncio.Event, child: Child) -> None:
    consumer = AIOKafkaConsumer(RECOMMENDATIONS, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    try:
        while not stop.is_set():
            child.check_alive()
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for rec in records:
                    value = Recommendation.model_validate_json(rec.value)
                    traffic.got.setdefault(value.trigger_event_id, []).append(
                        (now, value, rec.partition, rec.offset))
                    traffic.first_seen.setdefault(value.model_version, now)
    finally:
        await consumer.stop()


def _p(values: list[float], q: float) -> float | None:
    return percentile(values, q, method="nearest")


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


@dataclass(frozen=True)
class HotswapConfig:
    swaps: int = 3
    rate: float = 200.0
    #: Seconds of steady stream before the first swap and between swaps.
    steady_s: float = 15.0
    seq_len: int = 20
    backend: str = "onnxruntime"
    threads: int | None = 1
    batch: int = 64
    k: int = 10
    shape: TinyModel = TinyModel()
    drain_s: float = 30.0
    #: Seconds after the first recommendation before anything is measured.
    warmup_s: float = 5.0
    #: Then run ``recstream trainer`` and measure event -> served freshness
    #: (bench.hotswap_freshness); without it, freshness is publish -> served.
    trainer: bool = False
    trainer_timeout_s: float = 300.0
    #: Broker engine (recstream.broker.make_broker): auto, kafka or tansu.
    engine: str = "auto"


def run_hotswap_bench(cfg: HotswapConfig, root: Path | None = None) -> dict[str, Any]:
    root = Path(root or tempfile.mkdtemp(prefix="recstream-bench-hotswap-"))
    root.mkdir(parents=True, exist_ok=True)
    registry = root / "registry"
    onnx = cfg.backend not in ("torch", "torch-compile", "torch-cuda-graphs")
    t = time.perf_counter()
    staged = [stage_version(registry, seed, cfg.shape, onnx=onnx, k=cfg.k)
              for seed in range(cfg.swaps + 1)]
    prepare_s = time.perf_counter() - t
    shutil.rmtree(root / "kafka", ignore_errors=True)  # a reused root: a fresh broker
    broker = make_broker(cfg.engine, root, partitions=4, log_path=root / "broker.log")
    with broker:
        first = publish(registry, staged[0])
        asyncio.run(send_update(broker.bootstrap, first))
        port = free_port()
        env = {
            **os.environ, "RECSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap,
            "RECSTREAM_MODEL_REGISTRY": str(registry), "RECSTREAM_SCORER_BACKEND": cfg.backend,
            "RECSTREAM_SCORER_BATCH": str(cfg.batch), "RECSTREAM_TOP_K": str(cfg.k),
            "RECSTREAM_METRICS_PORT": str(port), "TMPDIR": str(root), "PYTHONUNBUFFERED": "1",
        }
        if cfg.threads:
            env["RECSTREAM_TORCH_THREADS"] = str(cfg.threads)
        trainer = None
        if cfg.trainer:  # started now, so that it is up (and idle) when its phase comes
            from recstream.bench.hotswap_freshness import trainer_child

            trainer = trainer_child(root, broker.bootstrap, registry, every_events=500)
        child = Child("scorer", recstream_command("scorer"), env, root / "scorer.log").start()
        try:
            result = asyncio.run(_run(cfg, broker.bootstrap, registry, staged[1:], first, child,
                                      port))
            if trainer is not None:
                _trainer_freshness(cfg, result, broker.bootstrap, registry, child, trainer)
        finally:
            for proc in (child, trainer):
                if proc is not None:
                    proc.terminate()
                    if proc.wait(30) is None:
                        proc.kill()
    result["prepare_s"] = round(prepare_s, 1)
    result["engine"] = broker.engine
    return result


async def _run(cfg: HotswapConfig, bootstrap: str, registry: Path, staged: list[Path],
               first: ModelUpdate, child: Child, port: int) -> dict[str, Any]:
    traffic = Traffic()
    stop_send, stop_collect = asyncio.Event(), asyncio.Event()
    collector = asyncio.create_task(collect(bootstrap, traffic, stop_collect, child))
    sender = asyncio.create_task(stream_requests(bootstrap, traffic, stop_send, cfg.rate,
                                                 catalogue(cfg.shape), cfg.seq_len))
    swaps: list[dict[str, Any]] = []
    try:
        await wait_for_async(lambda: first.version in traffic.first_seen, READY_S,
                       "first recommendation", child)
        # Not measured: the backlog of requests sent while the scorer joined its group.
        await asyncio.sleep(cfg.warmup_s)
        steady_from = time.time()
        for path in staged:
            await asyncio.sleep(cfg.steady_s)
            update = publish(registry, path)
            published = time.time()
            await send_update(bootstrap, update)
            await wait_for_async(lambda v=update.version: v in traffic.first_seen, READY_S,
                           f"version {update.version} served", child)
            served = traffic.first_seen[update.version]
            await asyncio.sleep(0.3)  # the scorer sets its gauge right after the switch
            swap_s = metric(scrape(port), "recstream_scorer_model_last_swap_seconds")
            swaps.append({"version": update.version, "published": published, "served": served,
                          "swap_s": round(swap_s, 3),
                          "publish_to_first_served_s": round(served - published, 3)})
        await asyncio.sleep(cfg.steady_s)
        stop_send.set()
        await sender
        deadline = time.monotonic() + cfg.drain_s
        while traffic.answered() < len(traffic.sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # duplicates, if any, arrive too
    finally:
        stop_send.set()
        stop_collect.set()
        await asyncio.gather(sender, collector, return_exceptions=True)
    metrics = scrape(port)
    return _report(cfg, traffic, swaps, steady_from, metrics)


def _report(cfg: HotswapConfig, traffic: Traffic, swaps: list[dict[str, Any]],
            steady_from: float, metrics: dict[str, float]) -> dict[str, Any]:
    windows = [(s["published"], s["served"] + SWAP_TAIL_S) for s in swaps]
    steady, swapping = [], []
    for trigger, sent in traffic.sent.items():
        answers = traffic.got.get(trigger)
        if not answers or sent < steady_from:
            continue
        latency = answers[0][0] - sent
        (swapping if any(a <= sent <= b for a, b in windows) else steady).append(latency)
    timeline = _timeline(traffic, steady_from, windows)
    lost = len(traffic.sent) - traffic.answered()
    duplicates = sum(len(v) - 1 for v in traffic.got.values() if len(v) > 1)
    versions_in_order = _versions_never_go_back(traffic, [s["version"] for s in swaps])
    swap_s = [s["swap_s"] for s in swaps]
    fresh = [s["publish_to_first_served_s"] for s in swaps]
    refused = sum(v for k, v in metrics.items()
                  if k.startswith("recstream_scorer_model_refused_total"))
    return {
        "requests": len(traffic.sent), "lost": lost, "duplicates": duplicates,
        "rate_per_s": cfg.rate, "backend": cfg.backend, "swaps": len(swaps),
        "swaps_counted_by_scorer": int(metric(metrics, "recstream_scorer_model_swaps_total")),
        "refused": int(refused), "versions_in_order": versions_in_order,
        "steady_requests": len(steady), "swap_requests": len(swapping),
        "p50_steady_ms": _ms(_p(steady, 0.50)), "p99_steady_ms": _ms(_p(steady, 0.99)),
        "p50_swap_ms": _ms(_p(swapping, 0.50)), "p99_swap_ms": _ms(_p(swapping, 0.99)),
        "swap_s": round(statistics.mean(swap_s), 3) if swap_s else None,
        "swap_s_max": max(swap_s) if swap_s else None,
        "freshness_s": round(statistics.mean(fresh), 3) if fresh else None,
        "freshness_kind": "publish_to_first_served",
        "freshness_note": FRESHNESS_NOTE,
        "swap_details": [{k: v for k, v in sw.items() if k not in ("published", "served")}
                         | {"at_s": round(sw["published"] - steady_from, 1)} for sw in swaps],
        "timeline": timeline,
        "model": vars(cfg.shape), "seq_len": cfg.seq_len, "batch": cfg.batch,
    }


def _timeline(traffic: Traffic, since: float, windows: list[tuple[float, float]]
              ) -> list[list[float]]:
    """Per second of send time: [second, requests, p50 ms, max ms, 1 if in a swap window]."""
    buckets: dict[int, list[float]] = {}
    for trigger, sent in traffic.sent.items():
        answers = traffic.got.get(trigger)
        if answers and sent >= since:
            buckets.setdefault(int(sent - since), []).append(answers[0][0] - sent)
    rows = []
    for sec in sorted(buckets):
        lat = buckets[sec]
        swap = any(a - 1 <= since + sec <= b for a, b in windows)
        rows.append([sec, len(lat), _ms(_p(lat, 0.50)), _ms(max(lat)), int(swap)])
    return rows


def _trainer_freshness(cfg: HotswapConfig, result: dict[str, Any], bootstrap: str,
                       registry: Path, scorer: Child, trainer: Child) -> None:
    """Replace publish -> served freshness by event -> served, measured with the trainer."""
    from recstream.bench.hotswap_freshness import measure_freshness

    known = {first["version"] for first in result["swap_details"]}
    known |= {v.name for v in registry.iterdir() if v.is_dir()}
    fresh = asyncio.run(measure_freshness(bootstrap, registry, catalogue(cfg.shape), scorer,
                                          trainer, known, cfg.trainer_timeout_s))
    result["freshness_publish_to_served_s"] = result["freshness_s"]
    if "freshness_s" not in fresh:
        result["freshness_error"] = fresh["freshness_error"]
        return
    result.update(fresh)
    result["freshness_kind"] = "event_to_first_served"
    result["freshness_note"] = (
        "a probe event naming a new item, sent to events, to the first recommendation by a "
        "version whose catalogue holds that item (so it trained on the event): the trainer's "
        "window and round (fine-tune, gate, ONNX export, publish), the update and the swap")


def _versions_never_go_back(traffic: Traffic, published: list[str]) -> bool:
    """Per partition, in offset order, the served versions follow the publish order."""
    order = {v: i for i, v in enumerate(published, start=1)}
    by_part: dict[int, list[tuple[int, int]]] = {}
    for answers in traffic.got.values():
        for _, rec, part, offset in answers:
            by_part.setdefault(part, []).append((offset, order.get(rec.model_version, 0)))
    for rows in by_part.values():
        idx = [i for _, i in sorted(rows)]
        if any(b < a for a, b in zip(idx, idx[1:], strict=False)):
            return False
    return True


def format_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"bench hotswap: {report['swaps']} swaps at {report['rate_per_s']:.0f} "
                        f"requests/s ({report['backend']})")
    table.add_column("window")
    table.add_column("requests", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_row("steady", str(report["steady_requests"]), str(report["p50_steady_ms"]),
                  str(report["p99_steady_ms"]))
    table.add_row("around swaps", str(report["swap_requests"]), str(report["p50_swap_ms"]),
                  str(report["p99_swap_ms"]))
    table.caption = (f"lost {report['lost']} of {report['requests']}, duplicates "
                     f"{report['duplicates']}; swap {report['swap_s']} s mean "
                     f"(max {report['swap_s_max']}); freshness {report['freshness_s']} s "
                     f"({report['freshness_kind']})")
    return table


def add_drift(report: dict[str, Any]) -> None:
    """Online HR@10 fine-tuned vs frozen on drifting data, where bench.drift exists."""
    try:
        from recstream.bench import drift  # written by the trainer work; absent until then
    except ImportError:
        report["online_hr10_note"] = "bench.drift is not available: online HR@10 not measured"
        return
    result = drift.run_drift()
    for key in ("online_hr10_finetuned", "online_hr10_frozen"):
        if key in result:
            report[key] = result[key]

