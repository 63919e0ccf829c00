"""Freshness with the real trainer: an event to the first recommendation made by a
model that trained on it.

How "trained on it" is known without help from the trainer: the event names a
*probe item* no version has seen, and the same user's next event follows it (so
the probe event is not the user's newest, which the trainer holds out for its
gate). A version whose catalogue (``item_ids.json``) holds the probe item grew a
row for it from its training window, so it trained on that event. Freshness is
the time from sending the probe event to the first recommendation, by such a
version, arriving from the scorer. Everything in between is real: the trainer's
consumer and window, a round (fine-tune, gate, ONNX export, publish), the
``model-updates`` message and the scorer's verify, load, warm-up and swap.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from recstream.bench.hotswap import Traffic, collect, stream_requests
from recstream.schemas import Event
from recstream.schemas.topics import EVENTS

from recstream.processes import Child, recstream_command

PROBE_ITEM = "probe-item-0"
PROBE_USER = "probe-user-0"


def trainer_child(root: Path, bootstrap: str, registry: Path, every_events: int) -> Child:
    """``recstream trainer`` with small settings: short rounds, every candidate published
    (the gate is tested on its own), no pruning of the bench's versions."""
    env = {
        **os.environ, "RECSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "RECSTREAM_MODEL_REGISTRY": str(registry), "RECSTREAM_TRAINER_DIR": str(root / "trainer"),
        "RECSTREAM_TRAINER_EVERY_EVENTS": str(every_events),
        "RECSTREAM_TRAINER_EVERY_MINUTES": "10", "RECSTREAM_TRAINER_BUDGET_S": "3",
        "RECSTREAM_TRAINER_EPOCHS": "1", "RECSTREAM_TRAINER_MIN_HOLDOUT": "1",
        "RECSTREAM_TRAINER_TOLERANCE": "1.0", "RECSTREAM_TRAINER_KEEP": "50",
        "RECSTREAM_TORCH_THREADS": "1", "TMPDIR": str(root), "PYTHONUNBUFFERED": "1",
    }
    return Child("trainer", recstream_command("trainer"), env, root / "trainer.log").start()


def _event(n: int, user: str, item: str) -> Event:
    return Event(event_id=f"f{n}", user_id=user, item_id=item, event_type="view",
                 ts=int(time.time() * 1000))


async def _stream_events(bootstrap: str, items: list[str], stop: asyncio.Event, rate: float,
                         probe_sent: list[float]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    rng = random.Random(7)
    try:
        for n, item in enumerate((PROBE_ITEM, rng.choice(items))):
            await producer.send_and_wait(EVENTS, _event(n, PROBE_USER, item)
                                         .model_dump_json().encode(), key=PROBE_USER.encode())
            if n == 0:
                probe_sent.append(time.time())
        n, start = 2, time.monotonic()
        while not stop.is_set():
            delay = start + (n - 2) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            user = f"bu{rng.randrange(300)}"
            await producer.send(EVENTS, _event(n, user, rng.choice(items)).model_dump_json()
                                .encode(), key=user.encode())
            n += 1
        await producer.flush()
    finally:
        await producer.stop()


def _has_probe(registry: Path, version: str) -> bool:
    try:
        return PROBE_ITEM in json.loads((registry / version / "item_ids.json").read_text())
    except (OSError, ValueError):
        return False


async def measure_freshness(bootstrap: str, registry: Path, items: list[str], scorer: Child,
                            trainer: Child, known: set[str], timeout_s: float = 600.0
                            ) -> dict[str, Any]:
    """Run the probe; the figures, or why there are none. ``known``: versions
    published before (by the bench), which cannot have trained on the probe."""
    traffic = Traffic()
    probe_sent: list[float] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(collect(bootstrap, traffic, stop, scorer)),
        asyncio.create_task(stream_requests(bootstrap, traffic, stop, 50.0, items, 10, seed=3,
                                            prefix="f")),
        asyncio.create_task(_stream_events(bootstrap, items, stop, 200.0, probe_sent)),
    ]
    deadline = time.monotonic() + timeout_s
    found: str | None = None
    try:
        while found is None and time.monotonic() < deadline:
            scorer.check_alive()
            trainer.check_alive()
            await asyncio.sleep(0.2)
            if not probe_sent:
                continue
            for version in list(traffic.first_seen):
                if version not in known and _has_probe(registry, version):
                    found = version
                    break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    if found is None:
        return {"freshness_error": f"no version with the probe item served within "
                                   f"{timeout_s:.0f}s (see trainer.log)"}
    trained = sorted(v for v in traffic.first_seen if v not in known)
    metrics = json.loads((registry / found / "metrics.json").read_text())
    return {
        "freshness_s": round(traffic.first_seen[found] - probe_sent[0], 3),
        "freshness_version": found,
        "trainer_versions_served": trained,
        "trainer_round": metrics.get("window", {}),
    }
