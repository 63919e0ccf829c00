"""Scale-out: two workers and two scorers share the load; one of each leaves; nothing is lost.

Real processes against the test broker: two ``python -m stream.worker`` with
their own state folders and two ``recstream scorer`` in the same groups.
Events stream at a steady rate while

1. the two workers split the ``events`` partitions (each reports consumer lag
   for its own partitions only) and the two scorers split ``score-requests``
   (each logs a non-empty assignment and scores requests);
2. one worker and one scorer leave (SIGTERM, or SIGKILL: no goodbye, the group
   notices after the session timeout);
3. the survivors take every partition over, the worker bringing the leaver's
   table partitions into its own state folder from the changelog (Faust keeps
   standby replicas, so most of it is there already; the rest is restored).

At the end the survivor's table equals the pure model (``apply_events`` over
every event sent, one user at a time: what a single worker gives), so does a
restore from the changelog, and every user's last event led to a
recommendation.

Found by this test (issue #7): right after the takeover's rebalance Faust's
consumer could drop a short run of offsets in every partition (the events
never reached the agent: the table lost them and the committed offset stalled
in front of them), and a seek back to re-read them could be dropped the same
way (about one run in four under load lost an event). The worker now turns
that filter of Faust's off for its source topics (stream/faust_internals.py), and
still notices holes and seeks back to re-read them (stream/offset_gaps.py);
the survivor logs each hole it filled and counts them in
``recstream_worker_offset_holes_total``. Had the fix not worked, the state
check below fails with a diagnosis of which offsets went missing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from recstream.schemas.messages import Event, Recommendation, now_ms
from recstream.schemas.topics import EVENTS, RECOMMENDATIONS
from recstream.stream.sequence import UserSequence, apply_events, decode_state

from recstream.broker import Broker
from recstream.processes import (
    Child,
    WorkerProcess,
    free_port,
    recstream_command,
    stop_all,
    worker_env,
)
from recstream.readback import (
    changelog_topic,
    committed_offsets,
    consume_all,
    latest_changelog_states,
    read_table,
    wait_committed,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PARTITIONS = 4
USERS = 60
RATE = 150.0  # events/s: modest, the machine also runs four Python processes
#: Small enough that long sequences are truncated (the model must agree on that too).
MAX_SEQ_LEN = 40
ALL = set(range(PARTITIONS))
_LAG = re.compile(r'recstream_worker_consumer_lag\{partition="(\d+)",topic="events"\}')
_ASSIGNED = re.compile(r"assigned \[(.*)\]")


def _scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def worker_partitions(worker: WorkerProcess) -> set[int]:
    """The ``events`` partitions this worker owns now (it reports lag for those only)."""
    return {int(m.group(1)) for k in worker.metrics() if (m := _LAG.fullmatch(k))}


@dataclass
class Scorer:
    child: Child
    port: int

    def requests(self) -> float:
        return _scrape(self.port).get("recstream_scorer_requests_total", 0.0)

    def partitions(self) -> set[int]:
        """``score-requests`` partitions of the scorer's latest assignment (from its log)."""
        found = _ASSIGNED.findall(self.child.log_tail(400))
        return (
            {int(p) for p in re.findall(r"score-requests\[(\d+)\]", found[-1])} if found else set()
        )


@dataclass
class Stream:
    """Events sent (per user, in order) and recommendations seen, by trigger event id."""

    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)
    triggers: set[str] = field(default_factory=set)
    acks: list[Any] = field(default_factory=list)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    n: int = 0


async def _read(consumer: AIOKafkaConsumer, s: Stream) -> None:
    while True:
        for records in (await consumer.getmany(timeout_ms=100)).values():
            for record in records:
                s.triggers.add(Recommendation.model_validate_json(record.value).trigger_event_id)


async def _drive(
    bootstrap: str,
    workers: list[WorkerProcess],
    scorers: list[Scorer],
    leave: signal.Signals,
    timings: dict[str, float],
) -> Stream:
    rng = random.Random(11)
    s = Stream()
    t_base = now_ms() - 3_600_000
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, enable_idempotence=False)
    consumer = AIOKafkaConsumer(
        RECOMMENDATIONS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )  # fmt: skip
    await producer.start()
    await consumer.start()
    reader = asyncio.create_task(_read(consumer, s))

    async def send_one() -> None:
        user = f"u{rng.randrange(USERS)}"
        event = {"event_id": f"e{s.n}", "user_id": user, "item_id": f"i{rng.randrange(300)}",
                 "event_type": "view", "ts": t_base + s.n}  # fmt: skip
        s.n += 1
        s.sent.setdefault(user, []).append(event)
        s.last[user] = event["event_id"]
        s.acks.append(await producer.send(EVENTS, orjson.dumps(event), key=user.encode()))

    async def steady_until(what: str, done: Any, timeout_s: float, at_least_s: float) -> float:
        """Send at RATE until ``done()`` (after at least ``at_least_s``); the seconds taken."""
        t0, count = time.monotonic(), 0
        while True:
            elapsed = time.monotonic() - t0
            while count < int(elapsed * RATE) + 1:
                await send_one()
                count += 1
            if reader.done():
                reader.result()
            for w in workers:
                if not w.alive and w.returncode() not in (0, -signal.SIGKILL):
                    raise AssertionError(f"a worker died: {w.returncode()}\n{w.log_tail()}")
            for sc in scorers:
                if sc.child.returncode not in (None, 0, -signal.SIGKILL):
                    raise AssertionError(f"a scorer died\n{sc.child.describe_log()}")
            if elapsed >= at_least_s and done():
                return elapsed
            if elapsed > timeout_s:
                raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
            await asyncio.sleep(0.01)

    def split() -> bool:
        owned = [worker_partitions(w) for w in workers]
        scored = [sc.partitions() for sc in scorers]
        return (
            all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == ALL
            and all(scored) and not scored[0] & scored[1] and scored[0] | scored[1] == ALL
            and all(sc.requests() > 0 for sc in scorers)
            and all(w.metric("recstream_worker_events_applied_total") > 0 for w in workers)
        )  # fmt: skip

    try:
        timings["split_s"] = await steady_until("two workers and two scorers split", split, 120, 3)
        # One worker and one scorer leave while events keep coming.
        workers[1].proc.send_signal(leave)  # type: ignore[union-attr]
        assert scorers[1].child.proc is not None
        scorers[1].child.proc.send_signal(leave)
        left = time.monotonic()

        def taken_over() -> bool:
            return (
                not workers[1].alive
                and scorers[1].child.returncode is not None
                and worker_partitions(workers[0]) == ALL
                and scorers[0].partitions() == ALL
            )

        await steady_until("the survivors own every partition", taken_over, 120, 5)
        timings["takeover_s"] = time.monotonic() - left
        await steady_until("a few more seconds on the survivors", lambda: True, 10, 3)
        for meta in await asyncio.gather(*s.acks):
            tp = (meta.topic, meta.partition)
            s.ends[tp] = max(s.ends.get(tp, 0), meta.offset + 1)
        deadline = time.monotonic() + 90
        while not set(s.last.values()) <= s.triggers and time.monotonic() < deadline:
            if reader.done():
                reader.result()
            await asyncio.sleep(0.1)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return s


def expected_states(sent: dict[str, list[dict[str, Any]]]) -> dict[str, UserSequence]:
    """What one worker gives: the pure state update over each user's events, in send order."""
    return {
        user: apply_events(None, [Event(**e) for e in events], MAX_SEQ_LEN)[0]
        for user, events in sent.items()
    }


def diagnose(
    bootstrap: str,
    s: Stream,
    table: dict[str, UserSequence],
    want: dict[str, UserSequence],
    bad: list[str],
) -> dict[str, Any]:
    """For each differing user: the events missing or extra, where they were, the changelog story."""
    where: dict[str, tuple[int, int]] = {}
    for i, ack in enumerate(s.acks):
        meta = ack.result()
        where[f"e{i}"] = (meta.partition, meta.offset)
    history: dict[str, list[dict[str, Any]]] = {u: [] for u in bad}
    for record in consume_all(bootstrap, [changelog_topic()]):
        user = record.key.decode()
        if user in history:
            ids = decode_state(record.value).event_ids if record.value is not None else None
            history[user].append(
                {"partition": record.partition, "offset": record.offset,
                 "timestamp": record.timestamp, "last_ids": ids[-5:] if ids else ids,
                 "n": len(ids) if ids else 0}
            )  # fmt: skip
    out: dict[str, Any] = {"committed": {f"{t}[{p}]": o for (t, p), o in
                                         committed_offsets(bootstrap).items()}}  # fmt: skip
    for user in bad:
        got = table.get(user)
        exp = want.get(user)
        got_ids = got.event_ids if got else []
        exp_ids = exp.event_ids if exp else []
        out[user] = {
            "missing": [(e, where.get(e)) for e in exp_ids if e not in got_ids],
            "extra": [(e, where.get(e)) for e in got_ids if e not in exp_ids],
            "changelog": history[user],
        }
    return out


@pytest.mark.parametrize("leave", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_two_workers_and_two_scorers_split_and_take_over(
    leave: signal.Signals, broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    base = {**recstream_env, "RECSTREAM_MAX_SEQ_LEN": str(MAX_SEQ_LEN)}
    workers = [
        WorkerProcess(
            worker_env(base, tmp_path / f"state-{name}", RECSTREAM_WORKER_ID=f"worker-{name}"),
            tmp_path / f"worker-{name}.log",
        )
        for name in ("a", "b")
    ]
    scorers = []
    for name in ("1", "2"):
        port = free_port()
        env = {**base, "RECSTREAM_METRICS_PORT": str(port)}
        child = Child(
            f"scorer-{name}", recstream_command("scorer"), env, tmp_path / f"scorer-{name}.log"
        )
        scorers.append(Scorer(child, port))
    timings: dict[str, float] = {}
    try:
        for w in workers:
            w.start()
        for sc in scorers:
            sc.child.start()
        for w in workers:
            w.wait_ready(120)
        stream = asyncio.run(_drive(broker.bootstrap, workers, scorers, leave, timings))
        # The leavers: a SIGTERM'd process stops cleanly, a SIGKILL'd one is just gone.
        want_rc = 0 if leave == signal.SIGTERM else -signal.SIGKILL
        assert workers[1].returncode() == want_rc, workers[1].log_tail()
        assert scorers[1].child.returncode == want_rc, scorers[1].child.describe_log()
        assert scorers[0].child.returncode is None, scorers[0].child.describe_log()
        total = stream.n
        # Every user's last event came back (checked below), so the survivor
        # has applied every partition to its end: one user's events are in one
        # partition, in order, and the last record of each partition is some
        # user's last event. Its commits must follow, taken-over partitions too.
        holes: dict[str, float] = {}
        try:
            wait_committed(broker.bootstrap, stream.ends, timeout_s=60, worker=workers[0])
        finally:
            holes = {k: v for k, v in workers[0].metrics().items() if "offset_holes" in k}
            committed = committed_offsets(broker.bootstrap)
            log.warning("committed %s, ends %s, survivor's holes %s", committed, stream.ends, holes)
        workers[0].terminate(60)
    finally:
        for w in workers:
            w.kill()
        stop_all([sc.child for sc in scorers])
    log.warning(
        "%s: %d events; split after %.1fs, taken over %.1fs after the leave; %.0fs in all; "
        "survivor's offset holes: %s",
        leave.name, total, timings["split_s"], timings["takeover_s"], time.monotonic() - started,
        holes,
    )  # fmt: skip

    missing = set(stream.last.values()) - stream.triggers
    assert not missing, f"{len(missing)} users' last events never led to a recommendation"
    # No hole given up on, in any of the survivor's topics (none is transactional
    # or compacted here, so an abandoned hole would be lost records).
    abandoned = {k: v for k, v in holes.items() if 'outcome="abandoned"' in k and v}
    assert not abandoned, f"the survivor gave up on offset holes: {abandoned}"
    want = expected_states(stream.sent)
    assert sum(len(v) for v in stream.sent.values()) == total
    # The survivor's own RocksDB now holds every partition: its own, and the
    # leaver's restored from the changelog, then updated. So does a restore
    # from the changelog. Both equal the single-worker model.
    table = read_table(tmp_path / "state-a", PARTITIONS)
    changelog = latest_changelog_states(broker.bootstrap)
    if table != want or changelog != want:
        bad = sorted(u for u in set(table) | set(want) if table.get(u) != want.get(u))
        diagnosis = diagnose(broker.bootstrap, stream, table, want, bad)
        (tmp_path / "diagnosis.json").write_bytes(
            orjson.dumps(diagnosis, option=orjson.OPT_INDENT_2)
        )
        raise AssertionError(
            f"after the takeover {len(bad)} of {len(want)} users' states differ from the "
            f"single-worker model (e.g. {bad[:3]}); changelog equal: {changelog == want}; "
            f"survivor's holes: {holes}; diagnosis: {tmp_path / 'diagnosis.json'}"
        )
