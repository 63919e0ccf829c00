"""``recstream bench api``: the HTTP API's answer times while the stream runs, and
whether a retired item ever shows up in a list emitted after its retirement.

A broker (``--engine``), a worker, a scorer and ``recstream api`` run as
processes; the scorer serves a small model trained first on the stream's
synthetic events with the catalogue's titles (:mod:`recstream.bench.api_model`). Synthetic events go to ``events`` at ``events_rate`` while
``GET /v1/users/{id}/recommendations`` is asked at ``rate`` requests/s for the
stream's users, open loop: each request's time counts from when it was due, so
a stall shows in the percentiles instead of slowing the load. Half way, the
most recommended item so far is retired on ``items``; once the scorer reports
the record applied, every list emitted later must lack it
(``retired_violations``, over every list read from ``recommendations``).
Three quarters of the way, an item no version knows is published with the text
of the most recommended category's best seller plus a word; ``new_item_s`` is
the time from its record's timestamp (its send) to the emission of the first
list that holds it (null if none within ``NEW_ITEM_WAIT_S``), ``new_item_ranked_s`` the
time until the scorer reports ranking it (recommendable; whether a list holds it
then depends on whether the model puts it in some user's top 10).

First, the baseline: ``GET /healthz`` at the same rate for as long, beside the
same stream (HTTP, the load generator and this machine, no state read).

JSON: ``rate``, ``events_rate``, ``requests``, ``p50_ms``, ``p99_ms``,
``baseline_healthz_p50_ms``, ``baseline_healthz_p99_ms``, ``p99_over_baseline``,
``errors_5xx``, ``errors_other``, ``retired_item``, ``retired_violations``,
``lists_after_retirement``, ``new_item``, ``new_item_ranked_s``, ``new_item_s``,
``train_s``, with provenance.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.bench.api_model import train_text_model
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
from recstream.synthetic import SyntheticData, generate


@dataclass(frozen=True)
class ApiBenchOptions:
    json_out: Path
    run_dir: Path
    engine: str = "auto"
    rate: float = 500.0  # requests/s
    events_rate: float = 500.0
    seconds: float = 30.0
    users: int = 1000
    #: Training budget of the served model (seconds).
    train_budget_s: float = 60.0


#: Seconds to wait for the new item's first list.
NEW_ITEM_WAIT_S = 60.0
NEW_ITEM = "bench-new-item"


def _metric(port: int, name: str) -> float:
    return metrics_scrape.value(f"http://127.0.0.1:{port}", name) or 0.0


def _stream(opts: ApiBenchOptions) -> SyntheticData:
    # Enough for the warm-up, the baseline, the requests and the waits for the lists.
    return generate(n_events=int(opts.events_rate * (2 * opts.seconds + 180)),
                    n_users=opts.users, n_items=500, seed=3)  # fmt: skip


async def _events(bootstrap: str, data: SyntheticData, opts: ApiBenchOptions,
                  stop: asyncio.Event) -> int:  # fmt: skip
    """Produce the synthetic stream at ``events_rate`` until ``stop``; return how many."""
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


async def _publish_new_item(bootstrap: str, data: SyntheticData, lists: list[bytes]) -> int:
    """Publish :data:`NEW_ITEM` with the text of the best seller of the most recommended
    category (plus a word); return the record's timestamp (ms, its send time)."""
    recent = await asyncio.to_thread(_parsed, lists[-2000:])
    counts = Counter(i.item_id for r in recent for i in r.items)
    category = Counter({data.items[i].category: n for i, n in counts.items() if i in data.items})
    top = category.most_common(1)[0][0]
    model = max((i for i in counts if i in data.items and data.items[i].category == top),
                key=counts.__getitem__)  # fmt: skip
    item = data.items[model]
    update = ItemUpdate(item_id=NEW_ITEM, text=f"{item.title} Deluxe. {item.category}",
                        category=item.category, updated_ms=int(time.time() * 1000))  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        stored = await (await producer.send(ITEMS, update.model_dump_json().encode(),
                                            key=NEW_ITEM.encode()))  # fmt: skip
    finally:
        await producer.stop()
    # The record's own time (set as it was sent): this loop, busy with the load, may
    # read the clock after the scorer already served the item.
    return int(stored.timestamp)


async def _first_list_with(item: str, lists: list[bytes], start: int) -> int | None:
    """``emitted_ms`` of the first list from ``lists[start:]`` on that holds ``item``."""
    needle, seen, deadline = f'"{item}"'.encode(), start, time.monotonic() + NEW_ITEM_WAIT_S
    while time.monotonic() < deadline:
        for raw in lists[seen:]:
            if needle in raw:
                return Recommendation.model_validate_json(raw).emitted_ms
        seen = len(lists)
        await asyncio.sleep(0.1)
    return None


async def _ranked_after(scorer_port: int, published_ms: int) -> float | None:
    """Seconds from ``published_ms`` until the scorer reports ranking a text-only item
    (an upper bound: the metric is read every 50 ms, off this loop)."""
    deadline = time.monotonic() + NEW_ITEM_WAIT_S
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_metric, scorer_port, "recstream_scorer_text_only_items") >= 1:
            return round((time.time() * 1000 - published_ms) / 1000, 2)
        await asyncio.sleep(0.05)
    return None


async def _drive(bootstrap: str, api_port: int, scorer_port: int, data: SyntheticData,
                 opts: ApiBenchOptions) -> dict[str, Any]:  # fmt: skip
    stop, read_stop = asyncio.Event(), asyncio.Event()
    lists: list[bytes] = []
    reader = asyncio.create_task(_lists(bootstrap, read_stop, lists))
    producing = asyncio.create_task(_events(bootstrap, data, opts, stop))
    while len(lists) < 100:  # the pipeline answers
        await asyncio.sleep(0.2)
    baseline = await _ask(api_port, opts, None)
    users = sorted({r.user_id for r in await asyncio.to_thread(_parsed, lists)})
    asking = asyncio.create_task(_ask(api_port, opts, users))
    await asyncio.sleep(opts.seconds / 2)
    retired, applied_ms = await _retire_most_recommended(bootstrap, lists, scorer_port)
    await asyncio.sleep(opts.seconds / 4)
    seen_before, published_ms = len(lists), await _publish_new_item(bootstrap, data, lists)
    ranked_s = await _ranked_after(scorer_port, published_ms)
    answers = await asking
    first_ms = await _first_list_with(NEW_ITEM, lists, seen_before)
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
            "retired_violations": violations, "lists_after_retirement": len(after),
            "new_item": NEW_ITEM, "new_item_ranked_s": ranked_s,
            "new_item_s": None if first_ms is None else round((first_ms - published_ms) / 1000, 2),
            }  # fmt: skip


def run_api_bench(opts: ApiBenchOptions) -> dict[str, Any]:
    """Start the stack, drive it, stop it; print and write the report."""
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    data = _stream(opts)
    started = time.monotonic()
    model = train_text_model(generate(n_events=20_000, n_users=opts.users, n_items=500, seed=3),
                             opts.run_dir / "train", opts.train_budget_s)  # fmt: skip
    train_s = round(time.monotonic() - started, 1)
    with make_broker(opts.engine, opts.run_dir / "broker", partitions=4,
                     log_path=opts.run_dir / "broker.log") as broker:  # fmt: skip
        env = embedded_broker_env(broker.bootstrap, fresh_state=opts.run_dir / "state",
                                  RECSTREAM_PARTITIONS="4")  # fmt: skip
        scorer_port, api_port = free_port(), free_port()
        worker = WorkerProcess(env, opts.run_dir / "worker.log").start()
        scorer = Child("scorer", recstream_command("scorer"),
                       {**env, "RECSTREAM_METRICS_PORT": str(scorer_port),
                        "RECSTREAM_MODEL_DIR": str(model), "RECSTREAM_TORCH_THREADS": "1",
                        # Spinning ONNX Runtime threads would take the API's core.
                        "RECSTREAM_ORT_SPIN": os.environ.get("RECSTREAM_ORT_SPIN", "0")},
                       opts.run_dir / "scorer.log").start()  # fmt: skip
        api = Child("api", recstream_command("api", "--port", str(api_port)), env,
                    opts.run_dir / "api.log").start()  # fmt: skip
        try:
            worker.wait_ready(180)
            wait_for(lambda: is_ready(api_port), 120, "api ready", 0.2, api)
            wait_for(lambda: is_ready(scorer_port), 120, "scorer ready", 0.2, scorer)
            figures = asyncio.run(_drive(broker.bootstrap, api_port, scorer_port, data, opts))
        finally:
            stop_all([api, scorer])
            worker.terminate()
        engine = broker.engine
    report = {"engine": engine, **{k: v for k, v in asdict(opts).items()
                                   if k in ("rate", "events_rate", "seconds", "users")},
              "train_s": train_s, **figures}  # fmt: skip
    print(f"GET recommendations at {opts.rate:g}/s beside {opts.events_rate:g} events/s "
          f"({engine}): p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms (GET /healthz, "
          f"the baseline: p50 {report['baseline_healthz_p50_ms']}, p99 "
          f"{report['baseline_healthz_p99_ms']}), "
          f"5xx {report['errors_5xx']}; retired {report['retired_item']}: "
          f"{report['retired_violations']} of {report['lists_after_retirement']} later lists; "
          f"a new item ranked {report['new_item_ranked_s']} s and in a list "
          f"{report['new_item_s']} s after its record")  # fmt: skip
    return write_report(opts.json_out, report, (engine,))
