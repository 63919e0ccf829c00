"""``recstream bench stream --soak-s N``: is the worker's memory flat under a steady load?

A fresh broker of ``--engine`` (Kafka or the embedded Tansu), one worker process
(RocksDB state) and one scorer (``--scorer-model``: by default the sequence model
of ``bench stream``'s latency phase, ONNX Runtime on the CPU); synthetic events
are produced at a fixed rate for N seconds while the worker's and the scorer's
resident memory (``VmRSS``) is sampled every few seconds. The report gives, per
process, the least-squares slope of RSS over time in MB/min: over every sample,
and after the first quarter of the run (warm-up: RocksDB block caches, the
Python allocator's arenas and Faust's buffers fill, then should stay put).
"""

from __future__ import annotations

import asyncio
import os
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
from recstream.processes import (
    Child,
    WorkerProcess,
    embedded_broker_env,
    recstream_command,
    stop_all,
    wait_for,
)


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
    #: What the scorer serves: "sequence", "cooccurrence" or a model folder
    #: (``bench stream --scorer-model``).
    scorer_model: str = "sequence"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.seconds <= 0 or self.rate <= 0 or self.sample_every_s <= 0:
            raise ValueError("--soak-s, --soak-rate and the sample interval must be positive")
        if self.partitions < 1:
            raise ValueError("--partitions must be >= 1")
        from recstream.bench.stream import SCORER_MODELS  # (it imports this module)

        if self.scorer_model not in SCORER_MODELS and not Path(self.scorer_model).is_dir():
            raise ValueError("--scorer-model: sequence, cooccurrence or a model version "
                             f"folder; {self.scorer_model!r} is neither")


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


Samples = dict[str, list[tuple[float, float]]]


def _sample_rss(pids: dict[str, int], samples: Samples, t: float) -> None:
    for name, pid in pids.items():
        mb = rss_mb(pid)
        if mb is not None:
            samples.setdefault(name, []).append((round(t, 2), round(mb, 2)))


async def _produce_and_sample(
    bootstrap: str,
    records: list[tuple[bytes, bytes]],
    cfg: SoakConfig,
    worker: WorkerProcess,
    scorer: Child,
) -> tuple[int, Samples, list[tuple[float, float]]]:
    """Produce at ``cfg.rate``; return (sent, RSS samples per process, done-counter samples)."""
    assert worker.proc is not None and scorer.proc is not None
    pids = {"worker": worker.proc.pid, "scorer": scorer.proc.pid}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    samples: Samples = {}
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
                scorer.check_alive()
                _sample_rss(pids, samples, now - t0)
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
        _sample_rss(pids, samples, time.monotonic() - t0)
    finally:
        await producer.stop()
    return sent, samples, done


def run_soak(cfg: SoakConfig, console: Console | None = None) -> dict[str, Any]:
    from recstream.bench.stream import scorer_model_dir  # (it imports this module)

    console = console or Console()
    started = time.monotonic()
    run_dir = cfg.run_dir or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    n = max(1, int(cfg.rate * cfg.seconds))
    records = synthetic_records(n, cfg.users, cfg.seed)
    model_dir = scorer_model_dir(cfg.scorer_model, records, run_dir)
    console.print(
        f"[bold]bench soak[/]: {n:,} events at {cfg.rate:,.0f}/s for {cfg.seconds:,.0f}s "
        f"({cfg.users:,} users, scorer: {cfg.scorer_model}); RSS every "
        f"{cfg.sample_every_s:g}s; logs in {run_dir}"
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
            **({"RECSTREAM_MODEL_DIR": str(model_dir)} if model_dir else {}),
            RECSTREAM_ORT_SPIN=os.environ.get("RECSTREAM_ORT_SPIN", "0"),
        )
        scorer = Child("scorer", recstream_command("scorer"), env, run_dir / "scorer.log").start()
        try:
            with WorkerProcess(env, run_dir / "worker.log") as worker:
                worker.wait_ready(cfg.startup_timeout_s)
                with console.status(f"soaking for {cfg.seconds:,.0f}s ..."):
                    sent, samples, progress = asyncio.run(
                        _produce_and_sample(broker.bootstrap, records, cfg, worker, scorer)
                    )
                try:
                    wait_for(lambda: worker.events_done() >= sent, 60, "soak events done",
                             interval_s=0.25)  # fmt: skip
                except TimeoutError:
                    pass  # reported as backlog_at_end below
                done = worker.events_done()
                worker.terminate(60)
        finally:
            stop_all([scorer])
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
        "scorer_model": cfg.scorer_model,
        **_rss_figures("worker", samples.get("worker", [])),
        **_rss_figures("scorer", samples.get("scorer", [])),
        "soak_done_events_per_s": None if kept is None else round(kept / 60.0, 1),
        "rss_samples": [list(s) for s in samples.get("worker", [])],
        "rss_samples_scorer": [list(s) for s in samples.get("scorer", [])],
        # Not lost: still queued for the worker 60 s after the last send (it
        # fell behind the target rate). 0 when it kept up.
        "backlog_at_end": int(sent - done),
        "duration_s": round(time.monotonic() - started, 1),
        "run_dir": str(run_dir),
    }


def _rss_figures(name: str, samples: list[tuple[float, float]]) -> dict[str, Any]:
    """One process's RSS slopes (after the first quarter, all, last half) and levels."""
    def since(fraction: float) -> list[tuple[float, float]]:
        return [s for s in samples if s[0] >= samples[-1][0] * fraction] if samples else []

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        f"rss_slope_mb_per_min_{name}": rounded(slope_per_min(since(0.25))),
        f"rss_slope_mb_per_min_{name}_all": rounded(slope_per_min(samples)),
        f"rss_slope_mb_per_min_{name}_last_half": rounded(slope_per_min(since(0.5))),
        f"rss_mb_{name}_start": samples[0][1] if samples else None,
        f"rss_mb_{name}_end": samples[-1][1] if samples else None,
        f"rss_mb_{name}_max": max((mb for _, mb in samples), default=None),
    }


def format_soak_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"bench soak: {report['soak_events']:,} events over {report['soak_s']:g}s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("broker engine", f"{report.get('engine', 'tansu')}"),
        ("rate (events/s)", f"{report['soak_rate_events_per_s']:,.0f}"),
        ("partitions per topic", f"{report['partitions']}"),
        ("scorer serves", f"{report['scorer_model']}"),
        *(row for name in ("worker", "scorer") for row in _rss_rows(report, name)),
        ("events/s the worker kept up with", f"{report['soak_done_events_per_s']}"),
        ("RSS samples", f"{len(report['rss_samples'])}"),
        ("events not done 60 s after the last send", f"{report['backlog_at_end']}"),
        ("duration (s)", f"{report['duration_s']}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def _rss_rows(report: dict[str, Any], name: str) -> list[tuple[str, str]]:
    slope = f"rss_slope_mb_per_min_{name}"
    return [
        (f"{name} RSS slope after warm-up (MB/min)", f"{report[slope]}"),
        (f"{name} RSS slope, all samples (MB/min)", f"{report[slope + '_all']}"),
        (f"{name} RSS slope, last half (MB/min)", f"{report[slope + '_last_half']}"),
        (f"{name} RSS start / end / max (MiB)", f"{report[f'rss_mb_{name}_start']} / "
         f"{report[f'rss_mb_{name}_end']} / {report[f'rss_mb_{name}_max']}"),
    ]
