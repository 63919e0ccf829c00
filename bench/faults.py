"""Faults under load: SIGKILL the worker or the scorer, pause or kill the broker.

One scenario per fault, each with a broker, a worker process
(``python -m stream.worker``, RocksDB state) and a ``recstream scorer``
process. Events are produced at a steady rate (``acks=all``) before, during
and after the fault; the killed process is restarted at once (as a supervisor
would), the paused broker is resumed after ``pause_s``. The Kafka engine also
has node faults (:data:`NODE_FAULTS`): ``broker_kill`` SIGKILLs a single-node
broker, ``leader_kill`` the node of a three-node cluster that leads the most
partitions of ``events``; either comes back on its data after ``down_s`` and
catches up. Then the scenario waits until every user's last event came back as
a recommendation (past the recovery timeout it has the worker log a dump of its
tasks: SIGUSR1), stops the worker and checks its table against what was sent:

* ``lost``: sent events missing from the table (the window is large enough to
  keep every event, so nothing may be missing);
* ``double_applied``: table entries beyond one per distinct event id;
* ``recovered_s``: from the end of the fault (restart, resume) to the first
  recommendation triggered by an event sent after it;
* ``users_without_final_rec``: users whose last event never led to a
  recommendation;
* ``crashes``: processes that exited on their own (and were restarted, as a
  supervisor would), with the end of their log;
* ``longest_gap_s``: the longest time without any recommendation read, from
  the start of the fault until every user's last event was answered;
* node faults also: ``killed_node``, ``leaders_before`` / ``leaders_down`` /
  ``leaders_after`` (partition of ``events`` -> leading node), ``restart_s``
  and ``caught_up_s`` (restart to the node back in the ISR of every partition
  it replicates).

Used by ``recstream bench faults`` (fresh broker per fault, a 30 s pause) and
by the integration tests (the test broker, a short pause).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.schemas.messages import Recommendation, now_ms
from recstream.schemas.topics import EVENTS, RECOMMENDATIONS

from recstream.broker import Broker, make_broker
from recstream.processes import (
    Child,
    WorkerProcess,
    embedded_broker_env,
    recstream_command,
    stop_all,
)
from recstream.readback import latest_changelog_states, read_table

if TYPE_CHECKING:
    from recstream.kafka_broker import KafkaBroker

log = logging.getLogger(__name__)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
FAULTS = ("worker_kill", "scorer_kill", "broker_pause", "broker_kill", "leader_kill")
#: Faults that kill a broker node and start it again on its data (Kafka only).
NODE_FAULTS = ("broker_kill", "leader_kill")
#: What ``recstream bench faults`` runs unless told: on one node, and on a cluster.
DEFAULT_FAULTS = ("worker_kill", "scorer_kill", "broker_pause")
CLUSTER_DEFAULT_FAULTS = ("leader_kill",)
#: Events per user stay far below this, so the table keeps every event.
MAX_SEQ_LEN = 100_000


class FaultBenchError(RuntimeError):
    pass


def fault_refusal(kind: str, engine: str, nodes: int = 1) -> str | None:
    """Why ``kind`` cannot run on a broker of ``engine`` with ``nodes`` nodes; None if it can."""
    if kind not in FAULTS:
        return f"unknown fault {kind!r}: choose from {', '.join(FAULTS)}"
    if kind in NODE_FAULTS and engine != "kafka":
        return (
            f"{kind} needs --engine kafka: the Tansu broker keeps nothing across a "
            "restart, so a killed one would come back empty"
        )
    if kind == "leader_kill" and nodes < 3:
        return "leader_kill needs --cluster (on one node, that node leads every partition: broker_kill)"
    if kind == "broker_kill" and nodes > 1:
        return "broker_kill kills a single-node broker; on --cluster, leader_kill kills one node"
    return None


@dataclass(frozen=True)
class FaultLoad:
    users: int = 200
    rate: float = 300.0
    before_s: float = 5.0
    after_s: float = 5.0
    pause_s: float = 30.0
    #: How long a killed broker node stays down before it is started again.
    down_s: float = 5.0
    recover_timeout_s: float = 180.0
    startup_timeout_s: float = 180.0
    #: Give the worker and the scorer a fixed RECSTREAM_GROUP_INSTANCE_ID, so a
    #: restarted one is the same static group member (a supervisor restarting
    #: a named pod); False: dynamic membership, the default deployment.
    static_membership: bool = False

    @property
    def request_timeout_ms(self) -> int:
        """Long enough for the load's clients to wait out a pause or a node's restart."""
        return int(max(40_000, 2_000 * self.pause_s, 2_000 * (self.down_s + 30)))


@dataclass
class _Seen:
    triggers: dict[str, float] = field(default_factory=dict)  # trigger id -> receipt wall ms
    count: int = 0
    receipts: list[float] = field(default_factory=list)  # wall ms of each non-empty read


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


def _after(seconds: float, action: Callable[[], object]) -> float:
    """Sleep ``seconds``, run ``action``; the wall ms when it returned (for a thread)."""
    time.sleep(seconds)
    action()
    return _wall_ms()


async def _read(consumer: AIOKafkaConsumer, seen: _Seen) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100)
        now = _wall_ms()
        if batches:
            seen.receipts.append(now)
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
    fault: dict[str, Any]  # what the fault itself reports (node faults: which node, leaders)


class _Traffic:
    """Events at ``load.rate`` (ids ``<kind>-<n>``, acks=all) and the recommendations read back.

    Build it inside the event loop (aiokafka's clients bind to the running loop).
    """

    def __init__(self, kind: str, bootstrap: str, load: FaultLoad) -> None:
        self.kind, self.load = kind, load
        self.rng = random.Random(kind)
        self.sent: dict[str, list[str]] = {}
        self.last: dict[str, str] = {}
        self.acks: list[tuple[Any, bytes, bytes]] = []  # (delivery future, key, value)
        self.n = 0
        self.seen = _Seen()
        self.t_base = now_ms() - 3_600_000
        timeout = load.request_timeout_ms
        # acks=all: on a cluster, an event is acknowledged once min.insync.replicas hold it.
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=2, acks="all", enable_idempotence=False,
            request_timeout_ms=timeout,
        )  # fmt: skip
        self.consumer = AIOKafkaConsumer(
            RECOMMENDATIONS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            fetch_max_wait_ms=20, request_timeout_ms=timeout,
        )  # fmt: skip
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.reader = asyncio.create_task(_read(self.consumer, self.seen))

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def send_one(self) -> None:
        user = f"u{self.rng.randrange(self.load.users)}"
        event_id = f"{self.kind}-{self.n}"
        value = orjson.dumps({
            "event_id": event_id, "user_id": user, "item_id": f"i{self.rng.randrange(500)}",
            "event_type": "view", "ts": self.t_base + self.n,
        })  # fmt: skip
        self.n += 1
        self.sent.setdefault(user, []).append(event_id)
        self.last[user] = event_id
        key = user.encode()
        self.acks.append((await self.producer.send(EVENTS, value, key=key), key, value))

    async def steady(
        self,
        seconds: float,
        during: Callable[[], None] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Produce at the load's rate for ``seconds``, or until ``until()`` holds."""
        t0, done = time.monotonic(), 0
        while time.monotonic() - t0 < seconds and not (until is not None and until()):
            due = int((time.monotonic() - t0) * self.load.rate) + 1
            while done < due:
                await self.send_one()
                done += 1
            if self.reader is not None and self.reader.done():
                self.reader.result()
            if during is not None:
                during()
            await asyncio.sleep(0.01)

    async def wait_live(self, procs: _Procs) -> None:
        """Send slowly until the first recommendation comes back (the pipeline is up)."""
        deadline = time.monotonic() + self.load.startup_timeout_s
        while self.seen.count == 0:
            procs.supervise()
            if time.monotonic() > deadline:
                raise FaultBenchError(f"{self.kind}: no recommendation within start-up")
            await self.send_one()
            await asyncio.sleep(0.5)

    async def deliver(self) -> int:
        """Wait for every send; resend the failed ones (at-least-once, as a producer app must).

        Tansu answers produce requests that were in flight across a pause with
        REQUEST_TIMED_OUT, which aiokafka does not retry; a batch that outlived
        its request timeout while a node was down fails too. A resend is safe:
        the worker drops duplicates by event id. Returns how many were resent.
        """
        resent, acks = 0, self.acks
        for _ in range(5):
            results = await asyncio.gather(*(f for f, _, _ in acks), return_exceptions=True)
            failed = [(k, v) for (_, k, v), r in zip(acks, results, strict=True)
                      if isinstance(r, Exception)]  # fmt: skip
            if not failed:
                return resent
            resent += len(failed)
            acks = [(await self.producer.send(EVENTS, v, key=k), k, v) for k, v in failed]
        raise FaultBenchError(f"{len(acks)} events could not be delivered after 5 tries")

    async def wait_answered(self, procs: _Procs) -> None:
        """Until every user's last event led to a recommendation (or the recovery timeout).

        Timed out, it asks the worker for a dump of its tasks (SIGUSR1: mode's
        worker logs every thread's and task's stack), so its log says where it waits.
        """
        deadline = time.monotonic() + self.load.recover_timeout_s
        while self.unanswered() and time.monotonic() < deadline:
            procs.supervise()
            await asyncio.sleep(0.1)
        proc = procs.worker.proc
        if self.unanswered() and proc is not None and proc.poll() is None:
            log.warning("%d users unanswered after %.0f s: the worker's tasks go to %s",
                        self.unanswered(), self.load.recover_timeout_s, procs.worker.log_path)
            proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(2.0)

    def unanswered(self) -> int:
        return len(set(self.last.values()) - self.seen.triggers.keys())

    def recovered_s(self, first_after: int, fault_end_ms: float) -> float | None:
        """Fault end to the first recommendation of an event sent after it."""
        ids = (f"{self.kind}-{i}" for i in range(first_after, self.n))
        after = [self.seen.triggers[i] for i in ids if i in self.seen.triggers]
        return (min(after) - fault_end_ms) / 1000.0 if after else None

    def longest_gap_s(self, since_ms: float, until_ms: float) -> float:
        """The longest time without a recommendation read, within [since, until]."""
        marks = [since_ms, *(t for t in self.seen.receipts if since_ms < t < until_ms), until_ms]
        return round(max(b - a for a, b in zip(marks, marks[1:], strict=False)) / 1000.0, 2)


async def _drive(kind: str, broker: Broker, procs: _Procs, load: FaultLoad) -> _Outcome:
    """Produce before, during and after the fault, apply it, wait for the last recommendations."""
    traffic = _Traffic(kind, broker.bootstrap, load)
    await traffic.start()
    try:
        await traffic.wait_live(procs)
        await traffic.steady(load.before_s, procs.supervise)
        start_ms = _wall_ms()
        fault = await _apply(kind, broker, procs, load, traffic)
        end_ms = fault.pop("end_ms")
        first_after = traffic.n
        await traffic.steady(load.after_s, procs.supervise)
        resent = await traffic.deliver()
        await traffic.wait_answered(procs)
        recovered = traffic.recovered_s(first_after, end_ms)
        fault["longest_gap_s"] = traffic.longest_gap_s(start_ms, _wall_ms())
    finally:
        await traffic.stop()
    return _Outcome(traffic.sent, recovered, traffic.unanswered(), resent, fault)


async def _apply(
    kind: str, broker: Broker, procs: _Procs, load: FaultLoad, traffic: _Traffic
) -> dict[str, Any]:
    """Apply the fault under load; its report, with ``end_ms`` (wall ms) when it ended."""
    if kind == "worker_kill":
        procs.restart_worker()
    elif kind == "scorer_kill":
        procs.restart_scorer()
    elif kind == "broker_pause":
        broker.pause()
        # Resumed on the wall clock: the sends block while the broker is paused.
        resuming = asyncio.ensure_future(asyncio.to_thread(_after, load.pause_s, broker.resume))
        try:
            await traffic.steady(load.pause_s + 60, until=resuming.done)
        finally:
            end_ms = await resuming
        return {"end_ms": end_ms}
    elif kind in NODE_FAULTS:  # run_fault checked that the broker can take it
        return await _kill_node(cast("KafkaBroker", broker), procs, load, traffic)
    else:
        raise ValueError(f"unknown fault {kind!r}")
    return {"end_ms": _wall_ms()}


async def _kill_node(
    broker: KafkaBroker, procs: _Procs, load: FaultLoad, traffic: _Traffic
) -> dict[str, Any]:
    """SIGKILL a node (the only one, or the busiest leader of ``events``) under load, start
    it again on its data after ``down_s``, and keep producing until it is back in every ISR."""
    cluster = len(broker.nodes) > 1
    node = broker.busiest_leader(EVENTS) if cluster else broker.nodes[0].node_id
    before = broker.leaders(EVENTS)
    seen: dict[str, Any] = {}

    def down_then_restart() -> float:
        # On the wall clock, in a thread: the traffic's sends block while no
        # leader answers (backpressure), so a loop that counts sends would keep
        # the node down for as long as the producer's buffer stays full.
        time.sleep(load.down_s)
        # A lone node's leaders cannot be read while it is down.
        seen["down"] = broker.leaders(EVENTS) if cluster else None
        started = time.monotonic()
        broker.restart_node(node, load.startup_timeout_s)
        seen["restart_s"] = time.monotonic() - started
        return _wall_ms()

    broker.kill_node(node)
    restarting = asyncio.ensure_future(asyncio.to_thread(down_then_restart))
    limit = load.down_s + load.startup_timeout_s + 10
    await traffic.steady(limit, procs.supervise, until=restarting.done)
    end_ms = await restarting
    down, restart_s = seen["down"], seen["restart_s"]
    catching_up = asyncio.ensure_future(
        asyncio.to_thread(wait_in_sync, broker.bootstrap, node, load.recover_timeout_s)
    )
    await traffic.steady(load.recover_timeout_s + 10, procs.supervise, until=catching_up.done)
    caught_up_s = await catching_up
    after = await asyncio.to_thread(broker.leaders, EVENTS)

    def named(leaders: dict[int, int] | None) -> dict[str, int] | None:
        return None if leaders is None else {str(p): n for p, n in sorted(leaders.items())}

    return {
        "end_ms": end_ms,
        "killed_node": node,
        "leaders_before": named(before),
        "leaders_down": named(down),
        "leaders_after": named(after),
        "down_s": load.down_s,
        "restart_s": round(restart_s, 2),
        "caught_up_s": round(caught_up_s, 2),
    }


def out_of_sync(bootstrap: str, node: int) -> list[str]:
    """``topic-partition`` of every partition ``node`` replicates but is not in the ISR of."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        described = admin.describe_topics()
    finally:
        admin.close()
    return [f"{t['name']}-{p['partition_index']}" for t in described for p in t["partitions"]
            if node in p["replica_nodes"] and node not in p["isr_nodes"]]  # fmt: skip


def wait_in_sync(bootstrap: str, node: int, timeout_s: float) -> float:
    """Block until ``node`` is in the ISR of every partition it replicates; the seconds it took."""
    started = time.monotonic()
    lagging: list[str] = []
    while time.monotonic() - started < timeout_s:
        try:
            lagging = out_of_sync(bootstrap, node)
        except Exception as exc:  # noqa: BLE001 - metadata not served yet: try again
            lagging = [repr(exc)]
        if not lagging:
            return time.monotonic() - started
        time.sleep(0.2)
    raise FaultBenchError(f"node {node} not back in sync within {timeout_s}s: {lagging[:5]}")


def _nodes(broker: Broker) -> int:
    return len(getattr(broker, "nodes", ())) or 1


def run_fault(kind: str, broker: Broker, run_dir: Path, load: FaultLoad) -> dict[str, Any]:
    """One fault scenario on ``broker`` (started); the figures of the module docstring."""
    refusal = fault_refusal(kind, broker.engine, _nodes(broker))
    if refusal:
        raise FaultBenchError(refusal)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_dir = run_dir / "state"
    extra = {"RECSTREAM_GROUP_INSTANCE_ID": "bench-faults-0"} if load.static_membership else {}
    env = embedded_broker_env(
        broker.bootstrap,
        RECSTREAM_PARTITIONS=str(broker.partitions),
        # The fault's own restarts keep this folder; a reused --run-dir does not.
        fresh_state=state_dir,
        RECSTREAM_MAX_SEQ_LEN=str(MAX_SEQ_LEN),
        # One name serves both: the worker and the scorer are in different groups.
        **extra,
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
    return _report(kind, broker, load, procs, outcome, state_dir,
                   time.monotonic() - started)  # fmt: skip


def _report(
    kind: str, broker: Broker, load: FaultLoad, procs: _Procs, outcome: _Outcome,
    state_dir: Path, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """Compare the worker's table and changelog with what was sent."""
    table = read_table(state_dir, broker.partitions)
    restored = latest_changelog_states(broker.bootstrap)
    lost = double = 0
    for user, ids in outcome.sent.items():
        stored = Counter(table[user].event_ids) if user in table else Counter()
        lost += sum(1 for i in ids if i not in stored)
        double += sum(c - 1 for c in stored.values())
    report = {
        "engine": broker.engine,
        "nodes": _nodes(broker),
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
        **outcome.fault,
        "duration_s": round(seconds, 1),
    }
    if lost or outcome.users_without_final_rec:
        report["diagnosis"] = _worker_logs_digest(state_dir.parent)
    return report


def _worker_logs_digest(run_dir: Path) -> dict[str, list[str]]:
    """Each worker log's group and recovery lines and its last lines: what a lost
    event's partition went through (a failed run's folder is gone in CI)."""
    keep = ("Joined group", "Setting newly assigned", "Revoking", "Recovery complete",
            "Worker ready", "ERROR", "WARNING", "Traceback")
    digest = {}
    for log_path in sorted(run_dir.glob("worker-*.log")):
        lines = log_path.read_text(errors="replace").splitlines()
        marked = [ln[:400] for ln in lines if any(k in ln for k in keep)]
        digest[log_path.name] = marked[-30:] + ["..."] + [ln[:400] for ln in lines[-15:]]
    return digest


def run_faults_bench(
    faults: tuple[str, ...],
    load: FaultLoad,
    run_dir: Path,
    partitions: int = 4,
    engine: str = "auto",
    nodes: int = 1,
) -> dict[str, Any]:
    """Each fault on a fresh broker of ``engine`` (``nodes`` 3: a Kafka cluster); the totals
    next to the per-fault figures."""
    import shutil

    results: dict[str, Any] = {}
    run_dir.mkdir(parents=True, exist_ok=True)
    used = None
    for kind in faults:
        # A fresh broker: Kafka's data of an earlier run in this folder goes.
        shutil.rmtree(run_dir / kind / "kafka", ignore_errors=True)
        broker = make_broker(engine, run_dir / kind, partitions=partitions, nodes=nodes,
                             log_path=run_dir / f"{kind}-broker.log")  # fmt: skip
        used = broker.engine
        refusal = fault_refusal(kind, broker.engine, nodes)
        if refusal:
            raise FaultBenchError(refusal)
        with broker:
            results[kind] = run_fault(kind, broker, run_dir / kind, load)
    return {
        "engine": used,
        "nodes": nodes,
        "faults": results,
        "lost": sum(r["lost"] for r in results.values()),
        "double_applied": sum(r["double_applied"] for r in results.values()),
        "users_without_final_rec": sum(r["users_without_final_rec"] for r in results.values()),
        "load": {"rate": load.rate, "users": load.users, "before_s": load.before_s,
                 "after_s": load.after_s, "pause_s": load.pause_s, "down_s": load.down_s,
                 "static_membership": load.static_membership},
    }  # fmt: skip
