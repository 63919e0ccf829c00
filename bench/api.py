"""``recstream bench api``: the HTTP API's answer times while the stream runs, and
whether a retired item ever shows up in a list emitted after its retirement.

A broker (``--engine``), a worker, a co-occurrence scorer and ``recstream api``
run as processes. Synthetic events go to ``events`` at ``events_rate`` while
``GET /v1/users/{id}/recommendations`` is asked at ``rate`` requests/s for the
stream's users, open loop: each request's time counts from when it was due, so
a stall shows in the percentiles instead of slowing the load. Half way, the
most recommended item so far is retired on ``items``; once the scorer reports
the record applied, every list emitted later must lack it
(``retired_violations``, over every list read from ``recommendations``).

First, the baseline: ``GET /healthz`` at the same rate for as long, beside the
same stream (HTTP, the load generator and this machine, no state read).

JSON: ``rate``, ``events_rate``, ``requests``, ``p50_ms``, ``p99_ms``,
``baseline_healthz_p50_ms``, ``baseline_healthz_p99_ms``, ``p99_over_baseline``,
``errors_5xx``, ``errors_other``, ``retired_item``, ``retired_violations``,
``lists_after_retirement``, ``new_item_s`` (null: a new item's text is not yet
projected into the served model, README "Serving API"), with provenance.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.bench.jsonio import write_report
from recstream.schemas.messages import ItemUpdate, Recommendation
from recstream.schemas.topics import EVENTS, ITEMS, RECOMMENDATIONS

from recstream import metrics_scrape
from recstream.broker import make_broker
from recstream.harness import percentile
from recstream.processes import (
    Child,
    WorkerProcess,
    embedded_broker_env,
    free_port,
    is_ready,
    recstream_command,
    stop_all,
    wait_for,
)
from recstream.synthetic import generate


@dataclass(frozen=True)
class ApiBenchOptions:
    json_out: Path
    run_dir: Path
    engine: str = "auto"
    rate: float = 500.0  # requests/s
    events_rate: float = 500.0
    seconds: float = 30.0
    users: int = 1000


def _metric(port: int, name: str) -> float:
    return metrics_scrape.value(f"http://127.0.0.1:{port}", name) or 0.0


async def _events(bootstrap: str, opts: ApiBenchOptions, stop: asyncio.Event) -> int:
    """Produce the synthetic stream at ``events_rate`` until ``stop``; return how many."""
    # Enough for the warm-up, the baseline, the requests and the wait for the lists.
    data = generate(n_events=int(opts.events_rate * (2 * opts.seconds + 120)),
                    n_users=opts.users, n_items=500, seed=3)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent, start = 0, time.monotonic()
    try:
        for event in data.events:
            if stop.is_set():
                break
            await asyncio.sleep(max(0.0, start + sent / opts.events_rate - time.monotonic()))
            await producer.send(EVENTS, event.model_dump_json().encode(),
                                key=event.user_id.encode())  # fmt: skip
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _ask(port: int, opts: ApiBenchOptions, users: list[str] | None) -> dict[str, Any]:
    """Open-loop GETs at ``rate``; latency from each request's due time. ``users``
    None: ``/healthz`` instead, the baseline (HTTP and this machine, no state)."""
    n = int(opts.rate * opts.seconds)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    limit = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=limit) as session:
        start = time.monotonic()

        async def one(i: int) -> None:
            due = start + i / opts.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            url = (f"http://127.0.0.1:{port}/healthz" if users is None else
                   f"http://127.0.0.1:{port}/v1/users/{users[i % len(users)]}/recommendations")
            async with session.get(url) as resp:
                await resp.read()
                statuses[resp.status] += 1
            latencies.append((time.monotonic() - due) * 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
    return {"requests": n, "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "errors_5xx": sum(c for s, c in statuses.items() if s >= 500),
            "errors_other": sum(c for s, c in statuses.items() if 300 <= s < 500)}  # fmt: skip


async def _lists(bootstrap: str, stop: asyncio.Event, into: list[bytes]) -> None:
    """Every list's raw value (parsed afterwards: parsing here would slow the load's loop)."""
    consumer = AIOKafkaConsumer(RECOMMENDATIONS, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                into.extend(r.value for r in records)
    finally:
        await consumer.stop()


def _parsed(raw: list[bytes]) -> list[Recommendation]:
    return [Recommendation.model_validate_json(v) for v in raw]


async def _retire_most_recommended(
    bootstrap: str, lists: list[bytes], scorer_port: int
) -> tuple[str, int]:
    """Retire the item most often in the lists so far; return it and when it applied."""
    # Off the loop, like every blocking step here: the load's requests must go out on time.
    recent = await asyncio.to_thread(_parsed, lists[-2000:])
    item = Counter(i.item_id for r in recent for i in r.items).most_common(1)[0][0]
    applied = "recstream_scorer_catalogue_records"
    before = await asyncio.to_thread(_metric, scorer_port, applied)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        update = ItemUpdate(item_id=item, available=False, updated_ms=int(time.time() * 1000))
        await (await producer.send(ITEMS, update.model_dump_json().encode(), key=item.encode()))
    finally:
        await producer.stop()
    while await asyncio.to_thread(_metric, scorer_port, applied) <= before:
        await asyncio.sleep(0.05)
    return item, int(time.time() * 1000)


async def _drive(bootstrap: str, api_port: int, scorer_port: int,
                 opts: ApiBenchOptions) -> dict[str, Any]:  # fmt: skip
    stop, read_stop = asyncio.Event(), asyncio.Event()
    lists: list[bytes] = []
    reader = asyncio.create_task(_lists(bootstrap, read_stop, lists))
    producing = asyncio.create_task(_events(bootstrap, opts, stop))
    while len(lists) < 100:  # the pipeline answers
        await asyncio.sleep(0.2)
    baseline = await _ask(api_port, opts, None)
    users = sorted({r.user_id for r in await asyncio.to_thread(_parsed, lists)})
    asking = asyncio.create_task(_ask(api_port, opts, users))
    await asyncio.sleep(opts.seconds / 2)
    retired, applied_ms = await _retire_most_recommended(bootstrap, lists, scorer_port)
    answers = await asking
    stop.set()
    sent = await producing
    await asyncio.sleep(3.0)  # the lists of the last events arrive
    read_stop.set()
    await reader
    after = [r for r in _parsed(lists) if r.emitted_ms > applied_ms]
    violations = sum(1 for r in after if retired in {i.item_id for i in r.items})
    return {**answers, "baseline_healthz_p50_ms": baseline["p50_ms"],
            "baseline_healthz_p99_ms": baseline["p99_ms"],
            "p99_over_baseline": round(answers["p99_ms"] / baseline["p99_ms"], 2),
            "events_sent": sent, "retired_item": retired,
            "retired_violations": violations, "lists_after_retirement": len(after)}  # fmt: skip


def run_api_bench(opts: ApiBenchOptions) -> dict[str, Any]:
    """Start the stack, drive it, stop it; print and write the report."""
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    with make_broker(opts.engine, opts.run_dir / "broker", partitions=4,
                     log_path=opts.run_dir / "broker.log") as broker:  # fmt: skip
        env = embedded_broker_env(broker.bootstrap, fresh_state=opts.run_dir / "state",
                                  RECSTREAM_PARTITIONS="4")  # fmt: skip
        scorer_port, api_port = free_port(), free_port()
        worker = WorkerProcess(env, opts.run_dir / "worker.log").start()
        scorer = Child("scorer", recstream_command("scorer"),
                       {**env, "RECSTREAM_METRICS_PORT": str(scorer_port)},
                       opts.run_dir / "scorer.log").start()  # fmt: skip
        api = Child("api", recstream_command("api", "--port", str(api_port)), env,
                    opts.run_dir / "api.log").start()  # fmt: skip
        try:
            worker.wait_ready(180)
            wait_for(lambda: is_ready(api_port), 120, "api ready", 0.2, api)
            wait_for(lambda: is_ready(scorer_port), 120, "scorer ready", 0.2, scorer)
            figures = asyncio.run(_drive(broker.bootstrap, api_port, scorer_port, opts))
        finally:
            stop_all([api, scorer])
            worker.terminate()
        engine = broker.engine
    report = {"engine": engine, **{k: v for k, v in asdict(opts).items()
                                   if k in ("rate", "events_rate", "seconds", "users")},
              **figures, "new_item_s": None}  # fmt: skip
    print(f"GET recommendations at {opts.rate:g}/s beside {opts.events_rate:g} events/s "
          f"({engine}): p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms (GET /healthz, "
          f"the baseline: p50 {report['baseline_healthz_p50_ms']}, p99 "
          f"{report['baseline_healthz_p99_ms']}), "
          f"5xx {report['errors_5xx']}; retired {report['retired_item']}: "
          f"{report['retired_violations']} of {report['lists_after_retirement']} later lists")  # fmt: skip
    return write_report(opts.json_out, report, (engine,))
