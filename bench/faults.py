"""Faults under load: SIGKILL the worker, SIGKILL the scorer, pause the broker.

One scenario per fault, each with a broker, a worker process
(``python -m stream.worker``, RocksDB state) and a ``recstream scorer``
process. Events are produced at a steady rate before, during and after the
fault; the killed process is restarted at once (as a supervisor would), the
paused broker is resumed after ``pause_s``. Then the scenario waits until
every user's last event came back as a recommendation, stops the worker and
checks its table against what was sent:

* ``lost``: sent events missing from the table (the window is large enough to
  keep every event, so nothing may be missing);
* ``double_applied``: table entries beyond one per distinct event id;
* ``recovered_s``: from the end of the fault (restart, resume) to the first
  recommendation triggered by an event sent after it;
* ``users_without_final_rec``: users whose last event never led to a
  recommendation;
* ``crashes``: processes that exited on their own (and were restarted, as a
  supervisor would), with the end of their log.

Used by ``recstream bench faults`` (fresh broker per fault, a 30 s pause) and
by the integration tests (the test broker, a short pause).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.schemas.messages import Recommendation, now_ms
from recstream.schemas.topics import EVENTS, RECOMMENDATIONS
from recstream.stream.testing import WorkerProcess, latest_changelog_states, read_table

from recstream.broker import EmbeddedBroker
from recstream.processes import Child, embedded_broker_env, recstream_command, stop_all

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
FAULTS = ("worker_kill", "scorer_kill", "broker_pause")
#: Events per user stay far below this, so the table keeps every event.
MAX_SEQ_LEN = 100_000


class FaultBenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class FaultLoad:
    users: int = 200
    rate: float = 300.0
    before_s: float = 5.0
    after_s: float = 5.0
    pause_s: float = 30.0
    recover_timeout_s: float = 180.0
    startup_timeout_s: float = 180.0
    #: Give the worker and the scorer a fixed RECSTREAM_GROUP_INSTANCE_ID, so a
    #: restarted one is the same static group member (a supervisor restarting
    #: a named pod); False: dynamic membership, the default deployment.
    static_membership: bool = False


@dataclass
class _Seen:
    triggers: dict[str, float] = field(default_factory=dict)  # trigger id -> receipt wall ms
    count: int = 0


@dataclass
class _Procs:
    """The worker and the scorer, restarted like a supervisor would when they exit.

    Both are designed to fail fast (exit without committing) when they cannot
    deliver their outputs, and to be restarted; a scenario counts such crashes
    (``crashes``) apart from the restarts it causes itself.
    """

    env: dict[str, str]
    run_dir: Path
    worker: WorkerProcess
    scorer: Child
    restarts: int = 0
    crashes: list[dict[str, Any]] = field(default_factory=list)

    def restart_worker(self) -> None:
        self.worker.kill()
        self.restarts += 1
        self.worker = WorkerProcess(self.env, self.run_dir / f"worker-{self.restarts}.log").start()

    def restart_scorer(self) -> None:
        self.scorer.kill()
        self.restarts += 1
        log = self.run_dir / f"scorer-{self.restarts}.log"
        self.scorer = Child("scorer", recstream_command("scorer"), self.env, log).start()

    def supervise(self) -> None:
        """Restart whichever process exited on its own; note why."""
        if self.scorer.returncode is not None:
            self._crashed("scorer", self.scorer.returncode, self.scorer.log_tail(80))
            self.restart_scorer()
        if not self.worker.alive:
            self._crashed("worker", self.worker.returncode(), self.worker.log_tail(80))
            self.restart_worker()

    def _crashed(self, name: str, code: int | None, tail: str) -> None:
        # The first exception line of the log's end: the cause, not the clean-up.
        lines = tail.splitlines()
        cause = next((ln for ln in lines if _EXCEPTION_LINE.match(ln)), lines[-1] if lines else "")
        self.crashes.append({"process": name, "exit_code": code, "cause": cause[:300]})
        if len(self.crashes) > 5:
            raise FaultBenchError(f"crash loop: {self.crashes}")


def _wall_ms() -> float:
    return time.time_ns() / 1e6


async def _read(consumer: AIOKafkaConsumer, seen: _Seen) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100)
        now = _wall_ms()
        for records in batches.values():
            for record in records:
                rec = Recommendation.model_validate_json(record.value)
                seen.count += 1
                seen.triggers.setdefault(rec.trigger_event_id, now)


@dataclass(frozen=True)
class _Outcome:
    sent: dict[str, list[str]]  # user -> event ids, in send order
    recovered_s: float | None
    users_without_final_rec: int
    resent: int


async def _deliver(producer: AIOKafkaProducer, acks: list[tuple[Any, bytes, bytes]]) -> int:
    """Wait for every send; resend the failed ones (at-least-once, as a producer app must).

    Tansu answers produce requests that were in flight across a pause with
    REQUEST_TIMED_OUT, which aiokafka does not retry. A resend is safe: the
    worker drops duplicates by event id. Returns how many were resent.
    """
    resent = 0
    for _ in range(5):
        results = await asyncio.gather(*(f for f, _, _ in acks), return_exceptions=True)
        failed = [
            (k, v) for (_, k, v), r in zip(acks, results, strict=True) if isinstance(r, Exception)
        ]
        if not failed:
            return resent
        resent += len(failed)
        acks = [(await producer.send(EVENTS, v, key=k), k, v) for k, v in failed]
    raise FaultBenchError(f"{len(acks)} events could not be delivered after 5 tries")


async def _drive(kind: str, broker: EmbeddedBroker, procs: _Procs, load: FaultLoad) -> _Outcome:
    """Produce before, during and after the fault, apply it, wait for the last recommendations."""
    rng = random.Random(kind)
    sent: dict[str, list[str]] = {}
    last: dict[str, str] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, linger_ms=2, enable_idempotence=False,
        request_timeout_ms=int(max(40_000, 2_000 * load.pause_s)),
    )  # fmt: skip
    consumer = AIOKafkaConsumer(
        RECOMMENDATIONS, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
        fetch_max_wait_ms=20, request_timeout_ms=int(max(40_000, 2_000 * load.pause_s)),
    )  # fmt: skip
    seen = _Seen()
    await producer.start()
    await consumer.start()
    reader = asyncio.create_task(_read(consumer, seen))
    acks: list[tuple[Any, bytes, bytes]] = []  # (delivery future, key, value)
    resent = 0
    n = 0
    t_base = now_ms() - 3_600_000

    async def send_one() -> None:
        nonlocal n
        user = f"u{rng.randrange(load.users)}"
        event_id = f"{kind}-{n}"
        value = orjson.dumps({
            "event_id": event_id, "user_id": user, "item_id": f"i{rng.randrange(500)}",
            "event_type": "view", "ts": t_base + n,
        })  # fmt: skip
        n += 1
        sent.setdefault(user, []).append(event_id)
        last[user] = event_id
        acks.append((await producer.send(EVENTS, value, key=user.encode()), user.encode(), value))

    async def steady(seconds: float, during: Callable[[], None] | None = None) -> None:
        t0, done = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * load.rate) + 1
            while done < due:
                await send_one()
                done += 1
            if reader.done():
                reader.result()
            if during is not None:
                during()
            await asyncio.sleep(0.01)

    try:
        deadline = time.monotonic() + load.startup_timeout_s
        while seen.count == 0:  # live once the first recommendation comes back
            procs.supervise()
            if time.monotonic() > deadline:
                raise FaultBenchError(f"{kind}: no recommendation within start-up")
            await send_one()
            await asyncio.sleep(0.5)
        await steady(load.before_s, procs.supervise)
        if kind == "worker_kill":
            procs.restart_worker()
        elif kind == "scorer_kill":
            procs.restart_scorer()
        elif kind == "broker_pause":
            broker.pause()
            try:
                await steady(load.pause_s)  # the producer buffers, then blocks (backpressure)
            finally:
                broker.resume()
        else:
            raise ValueError(f"unknown fault {kind!r}")
        fault_end = _wall_ms()
        first_after = n
        await steady(load.after_s, procs.supervise)
        resent = await _deliver(producer, acks)
        deadline = time.monotonic() + load.recover_timeout_s
        while not set(last.values()) <= seen.triggers.keys():
            procs.supervise()
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        after = [seen.triggers[f"{kind}-{i}"] for i in range(first_after, n)
                 if f"{kind}-{i}" in seen.triggers]  # fmt: skip
        recovered = (min(after) - fault_end) / 1000.0 if after else None
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return _Outcome(sent, recovered, len(set(last.values()) - seen.triggers.keys()), resent)


def run_fault(kind: str, broker: EmbeddedBroker, run_dir: Path, load: FaultLoad) -> dict[str, Any]:
    """One fault scenario on ``broker``; the figures of the module docstring."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state_dir = run_dir / "state"
    env = embedded_broker_env(
        broker.bootstrap,
        RECSTREAM_PARTITIONS=str(broker.partitions),
        # The fault's own restarts keep this folder; a reused --run-dir does not.
        fresh_state=state_dir,
        RECSTREAM_MAX_SEQ_LEN=str(MAX_SEQ_LEN),
        # One name serves both: the worker and the scorer are in different groups.
        **({"RECSTREAM_GROUP_INSTANCE_ID": "bench-faults-0"} if load.static_membership else {}),
    )
    scorer = Child("scorer", recstream_command("scorer"), env, run_dir / "scorer-0.log").start()
    procs = _Procs(env, run_dir, WorkerProcess(env, run_dir / "worker-0.log").start(), scorer)
    started = time.monotonic()
    try:
        procs.worker.wait_ready(load.startup_timeout_s)
        outcome = asyncio.run(_drive(kind, broker, procs, load))
        procs.worker.terminate(60)
    finally:
        procs.worker.kill()
        stop_all([procs.scorer])
    table = read_table(state_dir, broker.partitions)
    restored = latest_changelog_states(broker.bootstrap)
    lost = double = 0
    for user, ids in outcome.sent.items():
        stored = Counter(table[user].event_ids) if user in table else Counter()
        lost += sum(1 for i in ids if i not in stored)
        double += sum(c - 1 for c in stored.values())
    return {
        "events": sum(len(v) for v in outcome.sent.values()),
        "lost": lost,
        "double_applied": double,
        "recovered_s": None if outcome.recovered_s is None else round(outcome.recovered_s, 2),
        "users_without_final_rec": outcome.users_without_final_rec,
        "changelog_matches_table": restored == table,
        "restarts": procs.restarts,
        "crashes": procs.crashes,
        "events_resent_by_producer": outcome.resent,
        "pause_s": load.pause_s if kind == "broker_pause" else None,
        "duration_s": round(time.monotonic() - started, 1),
    }


def run_faults_bench(
    faults: tuple[str, ...], load: FaultLoad, run_dir: Path, partitions: int = 4
) -> dict[str, Any]:
    """Each fault on a fresh broker; the totals next to the per-fault figures."""
    results: dict[str, Any] = {}
    run_dir.mkdir(parents=True, exist_ok=True)
    for kind in faults:
        with EmbeddedBroker(partitions=partitions, log_path=run_dir / f"{kind}-broker.log") as b:
            results[kind] = run_fault(kind, b, run_dir / kind, load)
    return {
        "faults": results,
        "lost": sum(r["lost"] for r in results.values()),
        "double_applied": sum(r["double_applied"] for r in results.values()),
        "users_without_final_rec": sum(r["users_without_final_rec"] for r in results.values()),
        "load": {"rate": load.rate, "users": load.users, "before_s": load.before_s,
                 "after_s": load.after_s, "pause_s": load.pause_s,
                 "static_membership": load.static_membership},
    }  # fmt: skip
