"""``recstream bench stream --soak-s N``: is the worker's memory flat under a steady load?

A fresh broker of ``--engine`` (Kafka or the embedded Tansu) and one worker process (RocksDB state, no scorer);
synthetic events are produced at a fixed rate for N seconds while the
worker's resident memory (``VmRSS``) is sampled every few seconds. The report
gives the least-squares slope of RSS over time in MB/min: over every sample,
and after the first quarter of the run (warm-up: RocksDB block caches, the
Python allocator's arenas and Faust's buffers fill, then should stay put).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from recstream.bench.stream_io import synthetic_records
from recstream.schemas.topics import EVENTS
from rich.console import Console
from rich.table import Table

from recstream.broker import ENGINES, make_broker
from recstream.processes import WorkerProcess, embedded_broker_env, wait_for


class SoakError(RuntimeError):
    pass


@dataclass(frozen=True)
class SoakConfig:
    seconds: float
    rate: float = 1000.0
    #: Few enough users that sequences reach max_seq_len during a long soak
    #: (state size then stops growing), many enough to spread over partitions.
    users: int = 2000
    sample_every_s: float = 5.0
    partitions: int = 4
    seed: int = 7
    run_dir: Path | None = None
    startup_timeout_s: float = 180.0
    #: The broker: "kafka", "tansu" or "auto" (recstream.broker.ENGINES).
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.seconds <= 0 or self.rate <= 0 or self.sample_every_s <= 0:
            raise ValueError("--soak-s, --soak-rate and the sample interval must be positive")
        if self.partitions < 1:
            raise ValueError("--partitions must be >= 1")


def rss_mb(pid: int) -> float | None:
    """Current resident memory of a live process (Linux ``VmRSS``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def slope_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MiB)`` samples, in MiB per minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (y - mean_y) for t, y in samples)
    return cov / var * 60.0


async def _produce_and_sample(
    bootstrap: str,
    records: list[tuple[bytes, bytes]],
    cfg: SoakConfig,
    worker: WorkerProcess,
) -> tuple[int, list[tuple[float, float]], list[tuple[float, float]]]:
    """Produce at ``cfg.rate``; return (sent, RSS samples, done-counter samples)."""
    assert worker.proc is not None
    pid = worker.proc.pid
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    samples: list[tuple[float, float]] = []
    done: list[tuple[float, float]] = []
    acks: list[Any] = []
    sent = 0
    try:
        t0 = time.monotonic()
        next_sample = t0
        while sent < len(records):
            now = time.monotonic()
            if now >= next_sample:
                if not worker.alive:
                    raise SoakError(
                        f"worker exited with {worker.returncode()}\n{worker.log_tail()}"
                    )
                mb = rss_mb(pid)
                if mb is not None:
                    samples.append((round(now - t0, 2), round(mb, 2)))
                done.append((round(now - t0, 2), worker.events_done()))
                next_sample += cfg.sample_every_s
            due = min(len(records), int((now - t0) * cfg.rate) + 1)
            while sent < due:
                key, value = records[sent]
                acks.append(await producer.send(EVENTS, value, key=key))
                sent += 1
            if len(acks) >= 10_000:
                await asyncio.gather(*acks)
                acks = []
            await asyncio.sleep(0.01)
        await asyncio.gather(*acks)
        mb = rss_mb(pid)
        if mb is not None:
            samples.append((round(time.monotonic() - t0, 2), round(mb, 2)))
    finally:
        await producer.stop()
    return sent, samples, done


def run_soak(cfg: SoakConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    started = time.monotonic()
    run_dir = cfg.run_dir or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    n = max(1, int(cfg.rate * cfg.seconds))
    records = synthetic_records(n, cfg.users, cfg.seed)
    console.print(
        f"[bold]bench soak[/]: {n:,} events at {cfg.rate:,.0f}/s for {cfg.seconds:,.0f}s "
        f"({cfg.users:,} users); RSS every {cfg.sample_every_s:g}s; logs in {run_dir}"
    )
    # Its data (Kafka's) in a folder of the run, emptied first: a reused
    # --run-dir holds an earlier run's topics.
    shutil.rmtree(run_dir / "broker", ignore_errors=True)
    broker = make_broker(cfg.engine, run_dir / "broker", partitions=cfg.partitions,
                         log_path=run_dir / "broker.log")  # fmt: skip
    with broker:
        env = embedded_broker_env(
            broker.bootstrap,
            RECSTREAM_PARTITIONS=str(cfg.partitions),
            fresh_state=run_dir / "state",
        )
        with WorkerProcess(env, run_dir / "worker.log") as worker:
            worker.wait_ready(cfg.startup_timeout_s)
            with console.status(f"soaking for {cfg.seconds:,.0f}s ..."):
                sent, samples, progress = asyncio.run(
                    _produce_and_sample(broker.bootstrap, records, cfg, worker)
                )
            try:
                wait_for(lambda: worker.events_done() >= sent, 60, "soak events done", interval_s=0.25)
            except TimeoutError:
                pass  # reported as backlog_at_end below
            done = worker.events_done()
            worker.terminate(60)
    warm = [s for s in samples if s[0] >= samples[-1][0] / 4] if samples else []
    slope_all = slope_per_min(samples)
    slope = slope_per_min(warm)
    half = [x for x in samples if x[0] >= samples[-1][0] / 2] if samples else []
    slope_half = slope_per_min(half)
    # The rate the worker kept up with while events were sent (<= the target
    # rate when it fell behind; then ``backlog_at_end`` counts what it had not done
    # 60 s after the last send).
    kept = slope_per_min(progress)
    return {
        "engine": broker.engine,
        "soak_s": cfg.seconds,
        "soak_rate_events_per_s": cfg.rate,
        "soak_events": sent,
        "soak_users": cfg.users,
        "partitions": cfg.partitions,
        "rss_slope_mb_per_min_worker": None if slope is None else round(slope, 3),
        "rss_slope_mb_per_min_worker_all": None if slope_all is None else round(slope_all, 3),
        "rss_slope_mb_per_min_worker_last_half": None
        if slope_half is None
        else round(slope_half, 3),
        "soak_done_events_per_s": None if kept is None else round(kept / 60.0, 1),
        "rss_mb_worker_start": samples[0][1] if samples else None,
        "rss_mb_worker_end": samples[-1][1] if samples else None,
        "rss_mb_worker_max": max((mb for _, mb in samples), default=None),
        "rss_samples": [list(s) for s in samples],
        # Not lost: still queued for the worker 60 s after the last send (it
        # fell behind the target rate). 0 when it kept up.
        "backlog_at_end": int(sent - done),
        "duration_s": round(time.monotonic() - started, 1),
        "run_dir": str(run_dir),
    }


def format_soak_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"bench soak: {report['soak_events']:,} events over {report['soak_s']:g}s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("broker engine", f"{report.get('engine', 'tansu')}"),
        ("rate (events/s)", f"{report['soak_rate_events_per_s']:,.0f}"),
        ("partitions per topic", f"{report['partitions']}"),
        ("RSS slope after warm-up (MB/min)", f"{report['rss_slope_mb_per_min_worker']}"),
        ("RSS slope, all samples (MB/min)", f"{report['rss_slope_mb_per_min_worker_all']}"),
        ("RSS slope, last half (MB/min)", f"{report['rss_slope_mb_per_min_worker_last_half']}"),
        ("events/s the worker kept up with", f"{report['soak_done_events_per_s']}"),
        ("RSS start / end / max (MiB)",
         f"{report['rss_mb_worker_start']} / {report['rss_mb_worker_end']} / "
         f"{report['rss_mb_worker_max']}"),
        ("RSS samples", f"{len(report['rss_samples'])}"),
        ("events not done 60 s after the last send", f"{report['backlog_at_end']}"),
        ("duration (s)", f"{report['duration_s']}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table
