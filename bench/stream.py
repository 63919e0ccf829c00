"""``recstream bench stream``: the stream path's throughput, latency and memory, measured.

Each phase runs real processes on a fresh broker of ``--engine`` (Apache Kafka,
or the embedded Tansu; ``auto``: Kafka where Java is found), its data in a
folder of the run; ``--engine both`` runs every phase on Tansu, then on Kafka.

1. **Throughput.** Every event is produced to ``events`` first (a backlog),
   then read once by a plain aiokafka consumer (the *ceiling*: the same
   records through the same client, without Faust, validation or table
   writes), then a worker process (``python -m stream.worker``, RocksDB state)
   is started and drains the backlog as fast as it can. The rate comes from
   the worker's own Prometheus counters (applied + deduplicated + DLQ),
   sampled every 0.25 s, between 10% and 90% of the backlog (start-up and the
   last partial batches excluded). No scorer runs here: on two cores it would
   compete with the worker for CPU, and the table rate is the worker's.
2. **Latency.** A fresh broker, worker and ``recstream scorer`` (serving what
   ``--scorer-model`` names: by default a MovieLens-1M-shaped sequence model
   through ONNX Runtime); the same
   events are replayed at half the rate phase 1 measured, and each
   recommendation whose trigger event this process sent is timed from the
   send to its receipt (wall clocks of one host, as in the demo).
3. **At the cap** (``--at-cap``, ``bench/stream_at_cap.py``): the worker's rate
   when every user already holds ``RECSTREAM_MAX_SEQ_LEN`` events.

``lost`` counts events sent in any phase that the worker never applied
(nor dropped as a duplicate, nor sent to the DLQ).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from recstream.bench import stored_batches
from recstream.bench.soak import slope_per_min
from recstream.bench.stream_io import (
    EVENTS_PER_USER,
    CpuSampler,
    cpu_seconds,
    movielens_records,
    peak_rss_mb,
    produce_all,
    raw_read_rate,
    synthetic_records,
)
from recstream.schemas.topics import EVENTS, RECOMMENDATIONS, SCORE_REQUESTS
from rich.console import Console
from rich.table import Table

from recstream import harness
from recstream.broker import ENGINES, Broker, make_broker, resolve_engine
from recstream.harness import Latency, percentile
from recstream.processes import (
    Child,
    WorkerProcess,
    embedded_broker_env,
    recstream_command,
    stop_all,
    wait_for,
)

log = logging.getLogger(__name__)

#: A phase gives up when the worker made no progress for this long.
STALL_S = 120.0


class BenchError(RuntimeError):
    pass


#: ``StreamBenchConfig.scorer_model`` keywords (anything else: a model folder).
SCORER_MODELS = ("sequence", "cooccurrence")


@dataclass(frozen=True)
class StreamBenchConfig:
    events: int = 1_000_000
    data: Path | None = None
    users: int | None = None
    latency_seconds: float = 20.0
    #: Events/s of the latency phase; None: half the rate the throughput phase measured.
    latency_rate: float | None = None
    #: The load generator's producer linger during the latency phase. 5 ms is
    #: librdkafka's default and, since Apache Kafka 4.0, the Java client's. It
    #: sets how many batches ``events`` stores, which the embedded broker's
    #: fetch cost grows with (see ``stored_batches`` in the report); the send
    #: time of an event is taken before the linger, so the latency includes it.
    producer_linger_ms: int = 5
    #: Every consumer's fetch wait on the event->recommendation path (worker,
    #: scorer, the bench's reader), applied to both phases; recstream's default.
    fetch_wait_ms: int = 20
    #: Partitions of every topic. Each producer writes a batch per partition it
    #: has records for, and Tansu lists a partition's stored batches on every
    #: fetch that finds new data there: fewer partitions, fewer and cheaper
    #: fetches. 4 is recstream's default (RECSTREAM_PARTITIONS).
    partitions: int = 4
    #: What the latency phase's scorer serves: "sequence", a MovieLens-1M-shaped
    #: sequence model (random weights, ModelConfig's default layers) whose
    #: catalogue holds every replayed item (padded to 3,416), exported to ONNX
    #: and served by the scorer's automatic backend choice (ONNX Runtime on a
    #: CPU); "cooccurrence", the scorer's online fallback when it is given no
    #: model; or a model version folder.
    scorer_model: str = "sequence"
    seed: int = 7
    run_dir: Path | None = None
    startup_timeout_s: float = 180.0
    #: The broker of every phase: "kafka", "tansu" or "auto" (recstream.broker.ENGINES).
    engine: str = "auto"
    #: Also measure the worker's rate with every user at RECSTREAM_MAX_SEQ_LEN events
    #: (bench/stream_at_cap.py): that many users, then that many timed events.
    at_cap: bool = False
    at_cap_users: int = 1000
    at_cap_events: int = 200_000

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.at_cap_users < 1 or self.at_cap_events < 1:
            raise ValueError("--at-cap-users and --at-cap-events must be >= 1")
        if self.events < 1 or self.latency_seconds <= 0:
            raise ValueError("--events and --latency-seconds must be positive")
        if self.latency_rate is not None and self.latency_rate <= 0:
            raise ValueError("--latency-rate must be positive")
        if self.producer_linger_ms < 0:
            raise ValueError("--producer-linger-ms must be >= 0")
        if self.fetch_wait_ms < 1:
            raise ValueError("--fetch-wait-ms must be >= 1")
        if self.partitions < 1:
            raise ValueError("--partitions must be >= 1")
        if self.users is not None and self.users < 1:
            raise ValueError("--users must be >= 1")
        if self.data is not None and not self.data.exists():
            raise ValueError(f"--data {self.data}: no such file or folder")
        if self.scorer_model not in SCORER_MODELS and not Path(self.scorer_model).is_dir():
            raise ValueError(f"--scorer-model must be {' or '.join(SCORER_MODELS)} or a model "
                             f"version folder; {self.scorer_model!r} is neither")


def _wait_done(worker: WorkerProcess, total: int) -> list[tuple[float, float]]:
    """Poll the worker's counters until ``total`` events are done; return (t, done) samples."""
    samples: list[tuple[float, float]] = []
    last_progress = time.monotonic()
    while True:
        if not worker.alive:
            raise BenchError(f"worker exited with {worker.returncode()}\n{worker.log_tail()}")
        now, done = time.monotonic(), worker.events_done()
        if samples and done > samples[-1][1]:
            last_progress = now
        samples.append((now, done))
        if done >= total or now - last_progress > STALL_S:
            return samples
        time.sleep(0.25)


def _crossing(samples: list[tuple[float, float]], level: float) -> float:
    """Time at which the done counter reached ``level`` (linear between samples)."""
    for (t0, d0), (t1, d1) in zip(samples, samples[1:], strict=False):
        if d1 >= level:
            return t0 if d1 == d0 else t0 + (t1 - t0) * (level - d0) / (d1 - d0)
    return samples[-1][0]


def sustained_rate(samples: list[tuple[float, float]], total: int) -> tuple[float, float]:
    """(rate between 10% and 90% of ``total``, rate from the first to the last event)."""
    # From the last sample that still read 0: the first batch began after it.
    first = next((i for i, (_, d) in enumerate(samples) if d > 0), 0)
    started = samples[max(0, first - 1)][0]
    finished = _crossing(samples, total)
    overall = samples[-1][1] / max(finished - started, 1e-3)
    lo, hi = _crossing(samples, 0.1 * total), _crossing(samples, 0.9 * total)
    if hi - lo < 1.0:  # too few samples in between (tiny runs): the overall figure
        return overall, overall
    return 0.8 * total / (hi - lo), overall


def phase_broker(cfg: StreamBenchConfig, run_dir: Path, number: int) -> Broker:
    """An unstarted broker of ``cfg.engine`` for phase ``number``: its data (Kafka's) in
    ``run_dir/broker-N``, emptied first (a reused --run-dir holds an earlier run's
    topics), its log in ``run_dir/broker-N.log``."""
    data = run_dir / f"broker-{number}"
    shutil.rmtree(data, ignore_errors=True)
    return make_broker(cfg.engine, data, partitions=cfg.partitions,
                       log_path=run_dir / f"broker-{number}.log")  # fmt: skip


def phase_env(cfg: StreamBenchConfig, bootstrap: str, state: Path, **extra: str) -> dict[str, str]:
    """The children's environment of a phase: its broker, partitions, fetch waits and
    a worker state folder emptied now (children restarted on it keep their state)."""
    return embedded_broker_env(
        bootstrap,
        RECSTREAM_PARTITIONS=str(cfg.partitions),
        RECSTREAM_FETCH_WAIT_MS=str(cfg.fetch_wait_ms),
        RECSTREAM_SCORER_FETCH_WAIT_MS=str(cfg.fetch_wait_ms),
        fresh_state=state,
        **extra,
    )


@dataclass
class Drain:
    """What a worker showed while draining a backlog."""

    ready_s: float
    #: (monotonic s, events done) every 0.25 s, from ready to the last event.
    samples: list[tuple[float, float]]
    #: Worker CPU from ready to done per event done: less sensitive than the rate
    #: to other jobs on the machine (they take CPU time, not add to it).
    cpu_us_per_event: float | None
    rss_mb: float | None
    metrics: dict[str, float]


def drain(
    env: dict[str, str], log_path: Path, n: int, cfg: StreamBenchConfig, console: Console
) -> Drain:
    """Start a worker on ``env``, wait until it has done ``n`` backlogged events, stop it."""
    with WorkerProcess(env, log_path) as worker:
        ready_s = worker.wait_ready(cfg.startup_timeout_s)
        assert worker.proc is not None
        cpu_ready = cpu_seconds(worker.proc.pid)
        with console.status(f"worker draining {n:,} events ..."):
            samples = _wait_done(worker, n)
        cpu_done = cpu_seconds(worker.proc.pid)
        rss = peak_rss_mb(worker.proc.pid)
        metrics = worker.metrics()
        worker.terminate(60)
    cpu = (
        None
        if cpu_ready is None or cpu_done is None
        else round(1e6 * (cpu_done - cpu_ready) / max(samples[-1][1], 1), 1)
    )
    return Drain(ready_s, samples, cpu, rss, metrics)


def dlq_count(metrics: dict[str, float]) -> int:
    return int(sum(v for k, v in metrics.items() if k.startswith("recstream_worker_events_dlq_total")))


def _throughput(
    cfg: StreamBenchConfig, records: list[tuple[bytes, bytes]], run_dir: Path, console: Console
) -> dict[str, Any]:
    n = len(records)
    with phase_broker(cfg, run_dir, 1) as broker:
        produce_s, failures = asyncio.run(produce_all(broker.bootstrap, records, EVENTS))
        if failures:
            raise BenchError(f"{failures} of {n} events could not be produced")
        console.print(f"produced {n:,} events in {produce_s:.1f}s ({n / produce_s:,.0f}/s)")
        ceiling = asyncio.run(raw_read_rate(broker.bootstrap, EVENTS, n, timeout_s=600))
        console.print(f"raw aiokafka read of the same topic: {ceiling:,.0f} events/s")
        env = phase_env(cfg, broker.bootstrap, run_dir / "state-1")
        done = drain(env, run_dir / "worker-1.log", n, cfg, console)
    rate, overall = sustained_rate(done.samples, n)
    return {
        "engine": broker.engine,
        "events": n,
        "produce_events_per_s": round(n / produce_s),
        "ceiling_events_per_s": round(ceiling),
        "events_per_s": round(rate),
        "events_per_s_overall": round(overall),
        "worker_ready_s": round(done.ready_s, 1),
        "drain_s": round(done.samples[-1][0] - done.samples[0][0], 1),
        "lost_throughput": int(n - done.samples[-1][1]),
        "duplicates": int(done.metrics.get("recstream_worker_events_duplicate_total", 0)),
        "dlq": dlq_count(done.metrics),
        "rss_mb_worker_throughput": done.rss_mb,
        "worker_cpu_us_per_event": done.cpu_us_per_event,
        **_batch_figures(done.metrics),
    }


def _batch_figures(metrics: dict[str, float]) -> dict[str, Any]:
    """Mean events per batch and mean ``BatchProcessor.process`` time, from the histograms."""
    batches = metrics.get("recstream_worker_batch_size_count", 0.0)
    if not batches:
        return {"batches": 0, "batch_events_mean": None, "batch_ms_mean": None}
    return {
        "batches": int(batches),
        "batch_events_mean": round(metrics.get("recstream_worker_batch_size_sum", 0.0) / batches),
        "batch_ms_mean": round(
            1000 * metrics.get("recstream_worker_batch_seconds_sum", 0.0) / batches, 2
        ),
    }


async def _replay(
    bootstrap: str,
    records: list[tuple[bytes, bytes]],
    rate: float,
    seconds: float,
    children: list[Child],
    worker: WorkerProcess,
    startup_timeout_s: float,
    linger_ms: int,
    fetch_wait_ms: int,
) -> tuple[Latency, int, dict[str, str]]:
    """Warm up until the first recommendation, then replay at ``rate``; return what was seen."""
    lat = Latency()
    last_event: dict[str, str] = {}
    stream = iter(records)
    acks: list[Any] = []
    sent = 0
    async with harness.replay_clients(bootstrap, lat.received, linger_ms=linger_ms,
                                      fetch_wait_ms=fetch_wait_ms) as (producer, reader):

        async def send(timed: bool) -> Any:
            nonlocal sent
            key, value = next(stream)
            event_id = orjson.loads(value)["event_id"]
            if timed:
                lat.timed_send(event_id)
            last_event[key.decode()] = event_id
            sent += 1
            return await producer.send(EVENTS, value, key=key)

        async def send_untimed() -> bool:
            await (await send(timed=False))
            return True

        async def send_timed(_: int) -> bool:
            acks.append(await send(timed=True))
            return True

        def check() -> None:
            harness.check_reader(reader)
            for child in children:
                child.check_alive()
            if not worker.alive:
                raise BenchError(f"worker exited with {worker.returncode()}\n{worker.log_tail()}")

        try:
            await harness.warm_up(send_untimed, lambda: lat.recommendations > 0, check,
                                  startup_timeout_s)  # fmt: skip
            planned = min(len(records) - sent, max(1, int(rate * seconds)))
            await harness.paced(send_timed, planned, rate, lambda _: check(), tick_s=0.005)
            await asyncio.gather(*acks)
            # Until every user's last event came back as a recommendation, or quiet.
            await harness.drain(lat, check, lambda: set(last_event.values()) <= lat.triggers)
        except harness.ReplayError as exc:
            raise BenchError(str(exc)) from None
    return lat, sent, last_event


def scorer_model_dir(scorer_model: str, records: list[tuple[bytes, bytes]],
                     run_dir: Path) -> Path | None:
    """The model folder a bench's scorer serves for ``scorer_model`` (a
    :data:`SCORER_MODELS` keyword or a folder); None: the co-occurrence fallback."""
    if scorer_model == "cooccurrence":
        return None
    if scorer_model != "sequence":
        return Path(scorer_model)
    from recstream.bench.scorer import ML1M_ITEMS, ml1m_shape_model
    from recstream.inference.export import export_model_dir
    from recstream.inference.model_dir import save_model_dir

    items = sorted({orjson.loads(value)["item_id"] for _, value in records})
    items += [f"bench-unused-{n}" for n in range(ML1M_ITEMS - len(items))]
    out = run_dir / "sequence-model"
    # Replaced whole: a reused --run-dir holds the last run's (and its ONNX export).
    save_model_dir(out, ml1m_shape_model(0, n_items=len(items)), items, {}, overwrite=True)
    export_model_dir(out, fp16=False)  # the scorer reuses it instead of exporting at start
    return out


def _latency(
    cfg: StreamBenchConfig,
    records: list[tuple[bytes, bytes]],
    rate: float,
    run_dir: Path,
    console: Console,
) -> dict[str, Any]:
    model_dir = scorer_model_dir(cfg.scorer_model, records, run_dir)
    # Building the model imported torch here: hundreds of thousands of objects
    # that each full collection would walk, pausing the load generator and the
    # reader for 400 ms mid-replay. Frozen, the collector leaves them alone.
    gc.collect()
    gc.freeze()
    try:
        return _timed_latency(cfg, records, rate, run_dir, console, model_dir)
    finally:
        gc.unfreeze()  # a caller in this process collects as before


def _timed_latency(
    cfg: StreamBenchConfig,
    records: list[tuple[bytes, bytes]],
    rate: float,
    run_dir: Path,
    console: Console,
    model_dir: Path | None,
) -> dict[str, Any]:
    with phase_broker(cfg, run_dir, 2) as broker:
        env = phase_env(
            cfg, broker.bootstrap, run_dir / "state-2",
            **({"RECSTREAM_MODEL_DIR": str(model_dir)} if model_dir else {}),
            # Four processes on one box: ONNX Runtime's spinning threads would
            # take the broker's and the worker's CPU (set it in the shell to
            # measure otherwise).
            RECSTREAM_ORT_SPIN=os.environ.get("RECSTREAM_ORT_SPIN", "0"),
        )
        scorer = Child("scorer", recstream_command("scorer"), env, run_dir / "scorer.log").start()
        try:
            with WorkerProcess(env, run_dir / "worker-2.log") as worker:
                worker.wait_ready(cfg.startup_timeout_s)
                how = "fixed" if cfg.latency_rate else "half the max"
                console.print(f"latency phase: replaying at {rate:,.0f} events/s ({how})")
                assert broker.proc and worker.proc and scorer.proc  # all started above
                # "bench": this process, the load generator and the reader: on
                # two cores, whether the four together saturate the machine.
                pids = {"broker": broker.proc.pid, "worker": worker.proc.pid,
                        "scorer": scorer.proc.pid, "bench": os.getpid()}
                with CpuSampler(pids) as sampler:
                    lat, sent, last_event = asyncio.run(
                        _replay(
                            broker.bootstrap, records, rate, cfg.latency_seconds, [scorer],
                            worker, cfg.startup_timeout_s, cfg.producer_linger_ms,
                            cfg.fetch_wait_ms,
                        )
                    )  # fmt: skip
                # Each process's CPU during the replay, in % of one core: on two
                # cores the broker's share is what limits latency (its fetch cost
                # grows with the stored batches: bench/broker_fetch_cost.py).
                cpu = sampler.pct_overall()
                try:
                    wait_for(lambda: worker.events_done() >= sent, 60, "latency phase events done")
                except TimeoutError:
                    pass  # reported as lost below
                done = worker.events_done()
                # What the broker's fetches had to scan by the end (the topics
                # that are read during the replay; changelogs are not).
                batches = stored_batches.count(
                    broker.bootstrap, [EVENTS, SCORE_REQUESTS, RECOMMENDATIONS]
                )
                rss_worker = peak_rss_mb(pids["worker"])
                rss_scorer = peak_rss_mb(pids["scorer"])
                worker.terminate(60)
        finally:
            stop_all([scorer])
    return {
        "latency_rate_events_per_s": round(rate, 1),
        "scorer_model": cfg.scorer_model,
        "scorer_ort_spin": env["RECSTREAM_ORT_SPIN"],
        "latency_producer_linger_ms": cfg.producer_linger_ms,
        "fetch_wait_ms": cfg.fetch_wait_ms,
        "stored_batches": batches,
        "latency_events": sent,
        "latency_samples": len(lat.samples_ms),
        "latency_by_interval_ms": _by_interval(lat, LATENCY_INTERVAL_S, sampler),
        "p50_ms": _round(percentile(lat.samples_ms, 0.50)),
        "p95_ms": _round(percentile(lat.samples_ms, 0.95)),
        "p99_ms": _round(percentile(lat.samples_ms, 0.99)),
        **_p99_trend(lat),
        "latency_segments_ms": _segments(lat),
        "recommendations": lat.recommendations,
        "users_without_final_rec": len(set(last_event.values()) - lat.triggers),
        "lost_latency": int(sent - done),
        "rss_mb_worker_latency": rss_worker,
        "rss_mb_scorer": rss_scorer,
        "cpu_pct_latency": cpu,
    }


#: The replay's latency is also reported per interval of this many seconds: at a
#: fixed rate it should stay flat; a rise over the run is a growing cost somewhere.
LATENCY_INTERVAL_S = 5.0


def _by_interval(lat: Latency, seconds: float, cpu: CpuSampler) -> list[dict[str, Any]]:
    """p50/p99 per ``seconds`` of send time, from the first timed send, with each
    segment's p99 in that interval (which hop a slow interval's time went to) and
    each process's CPU over the interval (which one grew)."""
    if not lat.sample_sent_ms:
        return []
    start = min(lat.sample_sent_ms)
    slots: dict[int, list[int]] = {}
    for j, sent in enumerate(lat.sample_sent_ms):
        slots.setdefault(int((sent - start) / (1000 * seconds)), []).append(j)
    out = []
    for i, rows in sorted(slots.items()):
        v = [lat.samples_ms[j] for j in rows]
        out.append({
            "from_s": i * seconds, "samples": len(v), "p50": _round(percentile(v, 0.5)),
            "p99": _round(percentile(v, 0.99)),
            "segments_p99": {name: _round(percentile([seg[j] for j in rows], 0.99))
                             for name, seg in lat.segments_ms.items()},
            "cpu_pct": cpu.pct_between((start / 1000) + i * seconds,
                                       (start / 1000) + (i + 1) * seconds),
        })  # fmt: skip
    return out


def _segments(lat: Latency) -> dict[str, dict[str, float | None]]:
    """p50 and p99 of each segment of the event->recommendation path."""
    return {
        name: {"p50": _round(percentile(values, 0.50)), "p99": _round(percentile(values, 0.99))}
        for name, values in lat.segments_ms.items()
    }


def p99_per_minute(lat: Latency) -> list[float | None]:
    """p99 of the samples sent in each minute of the replay, from the first timed send;
    a last partial minute counts, a minute without samples is None."""
    if not lat.sample_sent_ms:
        return []
    start = min(lat.sample_sent_ms)
    slots: dict[int, list[float]] = {}
    for sent, ms in zip(lat.sample_sent_ms, lat.samples_ms, strict=True):
        slots.setdefault(int((sent - start) // 60_000), []).append(ms)
    return [_round(percentile(slots.get(i, []), 0.99)) for i in range(max(slots) + 1)]


def _p99_trend(lat: Latency) -> dict[str, Any]:
    """``p99_ms_per_minute`` and its least-squares slope in ms per minute over the
    whole minutes (at least 54 s of them within the sends; None with fewer than
    two that have samples): a fixed-rate stream's p99 should stay flat; a rising
    one is a cost that grows as the run goes on. A last partial minute is listed
    but left out of the slope: a 600 s replay that overran by a second had 2
    samples there, and their p99 alone set the slope."""
    per_minute = p99_per_minute(lat)
    sent = lat.sample_sent_ms
    span_s = (max(sent) - min(sent)) / 1000.0 if sent else 0.0
    slope = slope_per_min([(60.0 * i, p) for i, p in enumerate(per_minute)
                           if p is not None and 60.0 * i + 54.0 <= span_s])  # fmt: skip
    return {
        "p99_ms_per_minute": per_minute,
        "p99_slope_ms_per_min": None if slope is None else round(slope, 2),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _records(cfg: StreamBenchConfig) -> tuple[list[tuple[bytes, bytes]], str, int]:
    """(the replayed records, their source, their users)."""
    if cfg.data is not None:
        records = movielens_records(cfg.data, cfg.events)
        return records, str(cfg.data), len({k for k, _ in records})
    users = cfg.users or max(100, cfg.events // EVENTS_PER_USER)
    return synthetic_records(cfg.events, users, cfg.seed), "synthetic", users


def run_stream_bench(cfg: StreamBenchConfig, console: Console | None = None) -> dict[str, Any]:
    """Every phase on one broker engine; the figures of all, as one flat dict."""
    console = console or Console()
    started = time.monotonic()
    cfg = replace(cfg, engine=resolve_engine(cfg.engine))  # one choice for every phase
    run_dir = cfg.run_dir or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    records, source, users = _records(cfg)
    console.print(
        f"[bold]bench stream[/] on {cfg.engine}: {len(records):,} events ({source}, "
        f"{users:,} users), {os.cpu_count()} CPUs; logs in {run_dir}"
    )
    report: dict[str, Any] = {"source": source, "users": users, "partitions": cfg.partitions}
    report.update(_throughput(cfg, records, run_dir, console))
    lost = report["lost_throughput"]
    if cfg.at_cap:
        from recstream.bench.stream_at_cap import run_at_cap  # it builds on this module

        report.update(run_at_cap(cfg, run_dir, console))
        lost += report["lost_at_cap"]
    rate = cfg.latency_rate or max(1.0, report["events_per_s"] / 2)
    report.update(_latency(cfg, records, rate, run_dir, console))
    report["rss_mb_worker"] = max(
        (v for v in (report["rss_mb_worker_throughput"], report["rss_mb_worker_latency"]) if v),
        default=None,
    )
    report["lost"] = lost + report["lost_latency"]
    report["worker_over_ceiling"] = round(
        report["events_per_s"] / max(report["ceiling_events_per_s"], 1), 4
    )
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["run_dir"] = str(run_dir)
    return report


#: ``--engine both`` runs the benchmark on these, in this order.
BOTH_ENGINES = ("tansu", "kafka")


def run_both_engines(cfg: StreamBenchConfig, console: Console | None = None) -> dict[str, Any]:
    """The whole benchmark on Tansu, then on Kafka, each in its own folder of the run:
    ``{"engines": {engine: report}, "duration_s", "run_dir"}``."""
    started = time.monotonic()
    run_dir = cfg.run_dir or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    engines = {
        engine: run_stream_bench(replace(cfg, engine=engine, run_dir=run_dir / engine), console)
        for engine in BOTH_ENGINES
    }
    return {
        "engines": engines,
        "duration_s": round(time.monotonic() - started, 1),
        "run_dir": str(run_dir),
    }


def format_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"bench stream on {report.get('engine', 'tansu')}: "
                        f"{report['events']:,} events ({report['source']})")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in _rows(report):
        table.add_row(name, value)
    return table


def format_engines_table(reports: dict[str, dict[str, Any]]) -> Table:
    """One row per measure, one column per engine (``--engine both``)."""
    first = next(iter(reports.values()))
    table = Table(title=f"bench stream: {first['events']:,} events ({first['source']}), "
                        f"{' vs '.join(reports)}")  # fmt: skip
    table.add_column("measure")
    for engine in reports:
        table.add_column(engine, justify="right")
    columns = [dict(_rows(report)) for report in reports.values()]
    names = list(dict.fromkeys(name for column in columns for name in column))
    for name in names:
        table.add_row(name, *(column.get(name, "n/a") for column in columns))
    return table


def _rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(measure, value) of one engine's report, in the table's order."""
    return [
        ("broker engine", f"{report.get('engine', 'tansu')}"),
        ("events/s into the table (1 worker, 10-90%)", f"{report['events_per_s']:,}"),
        ("events/s, whole drain", f"{report['events_per_s_overall']:,}"),
        ("ceiling: raw aiokafka read, same topic", f"{report['ceiling_events_per_s']:,}"),
        ("worker / ceiling", f"{report['worker_over_ceiling']:.2%}"),
        ("worker CPU per event (µs, throughput phase)", f"{report['worker_cpu_us_per_event']}"),
        ("batches: mean events / mean process() ms",
         f"{report['batch_events_mean']} / {report['batch_ms_mean']}"),
        *_at_cap_rows(report),
        ("latency replay rate (events/s)", f"{report['latency_rate_events_per_s']:,}"),
        ("latency phase's scorer serves", f"{report.get('scorer_model', 'cooccurrence')}"
         f" (RECSTREAM_ORT_SPIN={report.get('scorer_ort_spin', 1)})"),
        ("event→recommendation p50 / p95 / p99 (ms)",
         f"{report['p50_ms']} / {report['p95_ms']} / {report['p99_ms']}"),
        ("p99 per minute (ms); slope (ms/min)",
         f"{_minutes(report.get('p99_ms_per_minute'))}; {report.get('p99_slope_ms_per_min')}"),
        *(
            (f"  segment {name} p50 / p99 (ms)", f"{seg['p50']} / {seg['p99']}")
            for name, seg in report.get("latency_segments_ms", {}).items()
        ),
        ("latency samples", f"{report['latency_samples']:,}"),
        ("load generator's producer linger (ms)", f"{report['latency_producer_linger_ms']}"),
        ("consumers' fetch wait (ms)", f"{report['fetch_wait_ms']}"),
        ("partitions per topic", f"{report['partitions']}"),
        ("batches stored at the end (records)", _batches(report.get("stored_batches"))),
        ("CPU during the replay, % of a core",
         ", ".join(f"{k} {v}" for k, v in report.get("cpu_pct_latency", {}).items())),
        ("peak RSS worker / scorer (MiB)",
         f"{_mb(report['rss_mb_worker'])} / {_mb(report['rss_mb_scorer'])}"),
        ("lost", f"{report['lost']}"),
        ("users without a final recommendation", f"{report['users_without_final_rec']}"),
        ("duration (s)", f"{report['duration_s']}"),
    ]  # fmt: skip


def _at_cap_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    if "events_per_s_at_cap" not in report:
        return []
    return [
        (f"events/s at the cap ({report['max_seq_len']} events per user, 10-90%)",
         f"{report['events_per_s_at_cap']:,}"),
        ("worker CPU per event at the cap (µs)", f"{report['cpu_us_per_event_at_cap']}"),
        ("at the cap: users / timed events", f"{report['at_cap_users']:,} / "
                                             f"{report['at_cap_events']:,}"),
    ]  # fmt: skip


def _minutes(values: list[float | None] | None) -> str:
    return "n/a" if not values else ", ".join(f"{v}" for v in values)


def _batches(stored: dict[str, dict[str, int]] | None) -> str:
    if not stored:
        return "n/a"
    return ", ".join(f"{t} {c['batches']:,} ({c['records']:,})" for t, c in stored.items())


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"
