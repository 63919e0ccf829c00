"""The events agent as it ships, with no broker: records go in through the fetch
loop's intake (DirectIntake), the table is RocksDB in a temp folder written by
the DirectWriter, outputs are recorded by an in-memory emitter.

Nothing runs Faust's producer, so :func:`delivering_changelog` plays the broker
for the changelog records that go through Faust's tables (last_recommendations):
the agents wait for those before acknowledging.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.transport.consumer import ConsumerMessage
from faust.types import TP
from recstream.schemas import DeadLetter, ScoreRequest
from recstream.schemas.topics import EVENTS, EVENTS_DLQ, SCORE_REQUESTS
from recstream.stream import tansu_compat
from recstream.stream.agents import user_partition
from recstream.stream.app import WorkerApp, create_app
from recstream.stream.batched_send import Delivered
from recstream.stream.faust_internals import table_partition
from recstream.stream.sequence import UserSequence, decode_state
from recstream.stream.settings import WorkerSettings
from recstream.stream.tables import DirectWriter, read_value
from recstream.stream.topics import repartition_topic_name

from recstream.readback import changelog_topic

T0 = 1_700_000_000_000
PARTITIONS = 4


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None


@dataclass
class RecordingEmitter:
    """A broker stand-in: records what is sent; ``send_records`` reports offsets
    as a broker would, except for the topics in ``hold``, whose deliveries wait
    in ``held`` until the test settles them."""

    sent: list[Sent] = field(default_factory=list)
    hold: set[str] = field(default_factory=set)
    held: list[asyncio.Future[Any]] = field(default_factory=list)
    ends: Counter[tuple[str, int]] = field(default_factory=Counter)

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> Awaitable[Any]:
        self.sent.append(Sent(topic, key, value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_records(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> Awaitable[Any]:
        self.sent.extend(Sent(topic, key, value, partition) for key, value in records)
        self.ends[topic, partition] += len(records)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic in self.hold:
            self.held.append(done)
        else:
            done.set_result(Delivered(topic, partition, self.ends[topic, partition] - 1))
        return done

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


class Fatal(Exception):
    pass


@asynccontextmanager
async def delivering_changelog(app: faust.App, into: list[Sent]) -> AsyncIterator[None]:
    """Deliver (record and acknowledge) every changelog record Faust's tables send meanwhile."""
    buffer = app.producer.buffer

    async def deliver() -> None:
        while True:
            try:
                fut = buffer.pending.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.001)
                continue
            if fut.done():
                continue  # already settled: a future is never settled twice
            msg = fut.message
            into.append(Sent(msg.channel.get_topic_name(), msg.key, msg.value, msg.partition))
            tp = TopicPartition(msg.channel.get_topic_name(), msg.partition or 0)
            fut.set_result(RecordMetadata(tp.topic, tp.partition, tp, len(into), 0, 0, 0))
            if msg.callback:
                msg.callback(fut)

    task = asyncio.create_task(deliver())
    try:
        yield
    finally:
        if task.done():
            task.result()  # a bug in the fake broker must not pass as a hang
        task.cancel()


@dataclass
class _FakeMessage:
    partition: int
    topic: str = "events"


@dataclass
class _FakeEvent:
    partition: int

    @property
    def message(self) -> _FakeMessage:
        return _FakeMessage(self.partition)


Records = list[tuple[bytes | None, bytes, int | None]]


@dataclass
class Harness:
    worker: WorkerApp
    emitter: RecordingEmitter
    fatal: list[BaseException]
    loop: asyncio.AbstractEventLoop
    changelog: list[Sent] = field(default_factory=list)
    #: The next offset of each partition the intake is given.
    offsets: Counter[TP] = field(default_factory=Counter)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run on the worker's one event loop, as the worker does."""
        return self.loop.run_until_complete(coro)

    def state(self, user: str) -> UserSequence | None:
        """Read the table as Faust does, in the user's partition."""
        probe = _FakeEvent(user_partition(user.encode(), PARTITIONS))
        with table_partition(probe):  # type: ignore[arg-type]
            raw = self.worker.table.get(user.encode())
        return None if raw is None else decode_state(raw)

    async def offer(self, records: Records, topic: str = EVENTS) -> None:
        """Hand records to the events agent as the fetch loop does (partition: the
        key's, unless given), at the partition's next offsets."""
        app = self.worker.app
        for key, value, partition in records:
            if partition is None:
                partition = user_partition(key, PARTITIONS) if key else 0
            tp = TP(topic, partition)
            message = ConsumerMessage(
                topic, partition, self.offsets[tp], 0.0, 0, [], key, value, None,
                tp=tp, generation_id=app.consumer_generation_id,
            )  # fmt: skip
            self.offsets[tp] += 1
            wait = self.worker.intake.offer(message)
            if wait is not None:
                await wait


def event(event_id: str, user: str, ts: int, item: str = "i1", kind: str = "view") -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            "ts": T0 + ts,
        }
    )


def make_harness(tmp_path: Path, **settings: Any) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the worker's loop, set before it is built
    emitter = RecordingEmitter()
    fatal: list[BaseException] = []
    worker_settings = WorkerSettings(
        state_dir=tmp_path / "state", worker_id="test",
        **{"max_seq_len": 5, "batch_size": 50, "batch_window_ms": 20, **settings},
    )  # fmt: skip
    worker = create_app(worker_settings, emitter=emitter, on_fatal=fatal.append)
    worker.app.finalize()
    worker.app.flow_control.resume()
    try:
        yield Harness(worker, emitter, fatal, loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.fixture()
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path)


def run(harness: Harness, records: Records, until: Callable[[], bool]) -> None:
    """Feed records to the events agent and wait for ``until``."""

    async def go() -> None:
        async with (
            delivering_changelog(harness.worker.app, harness.changelog),
            harness.worker.agent.test_context(),
        ):
            await harness.offer(records)
            await wait_until(harness, until)

    harness.run(go())


def read_again(harness: Harness, first: Records, more: Records, until: Callable[[], bool]) -> None:
    """Feed ``first`` until a DLQ letter is out, then the same records at the same
    offsets again, as a hole's re-read delivers them, then ``more``; wait for ``until``."""

    async def go() -> None:
        async with (
            delivering_changelog(harness.worker.app, harness.changelog),
            harness.worker.agent.test_context(),
        ):
            offsets = harness.offsets.copy()
            await harness.offer(first)
            await wait_until(harness, lambda: len(harness.emitter.on(EVENTS_DLQ)) >= 1)
            harness.offsets = offsets
            await harness.offer([*first, *more])
            await wait_until(harness, until)

    harness.run(go())


async def wait_until(harness: Harness, done: Callable[[], bool], timeout_s: float = 10) -> None:
    """Let the agents run until ``done()``; fail on a fatal error or after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        assert not harness.fatal, harness.fatal
        assert asyncio.get_running_loop().time() < deadline, "agent did not finish"
        await asyncio.sleep(0.01)


def keyed(user: str, value: bytes) -> tuple[bytes, bytes, None]:
    return (user.encode(), value, None)


def test_events_update_the_table_and_emit_one_score_request_per_user(harness: Harness) -> None:
    records = [keyed("alice", event(f"a{i}", "alice", i, item=f"x{i % 2}")) for i in range(3)]
    records += [keyed("bob", event("b0", "bob", 10, kind="click"))]
    run(harness, records, until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 2)

    alice = harness.state("alice")
    assert alice is not None and alice.event_ids == ["a0", "a1", "a2"]
    assert harness.state("bob") == UserSequence(["b0"], ["i1"], ["click"], [T0 + 10])

    sent = harness.emitter.on(SCORE_REQUESTS)
    requests = {s.key: ScoreRequest.model_validate_json(s.value) for s in sent}
    assert len(sent) == 2 and set(requests) == {b"alice", b"bob"}  # one per user per batch
    assert requests[b"alice"].items == ["x0", "x1", "x0"]
    assert requests[b"alice"].exclude == ["x0", "x1"]
    assert requests[b"alice"].trigger_event_id == "a2"
    assert requests[b"bob"].event_types == ["click"]
    assert harness.emitter.on(EVENTS_DLQ) == []


def test_a_batch_is_finished_only_once_its_changelog_records_are_delivered(
    harness: Harness,
) -> None:
    """A batch acknowledged before its changelog records were stored lets a commit
    cover them; the partition's next owner then loses those events."""
    batches = harness.worker.metrics.batch_seconds
    topic = changelog_topic()
    harness.emitter.hold.add(topic)

    def finished() -> float:
        return sum(s.value for s in batches.collect()[0].samples if s.name.endswith("_count"))

    async def go() -> None:
        async with harness.worker.agent.test_context():
            await harness.offer([(b"kim", event("k1", "kim", 1), 0)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not harness.emitter.on(SCORE_REQUESTS):
                assert loop.time() < deadline, "no score request"
                await asyncio.sleep(0.01)
            # The outputs are sent, but the changelog is not delivered: not finished.
            await asyncio.sleep(0.3)
            assert finished() == 0 and len(harness.emitter.held) == 1
            harness.emitter.held[0].set_result(None)
            while finished() < 1:
                assert loop.time() < deadline, "the batch did not finish"
                await asyncio.sleep(0.01)
        assert [c.key for c in harness.emitter.on(topic)] == [b"kim"]

    harness.run(go())


def test_bad_input_goes_to_the_dlq_with_reason_and_original_bytes(harness: Harness) -> None:
    bad = [
        (b"carol", b"{not json", None),
        (b"carol", b"", None),
        (b"carol", orjson.dumps({"event_id": "c1", "user_id": "carol"}), None),
        (b"carol", event("c2", "carol", 0, kind="teleport"), None),
    ]
    good = keyed("carol", event("c3", "carol", 5))
    run(harness, [*bad, good], until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1)

    letters = [DeadLetter.model_validate_json(s.value) for s in harness.emitter.on(EVENTS_DLQ)]
    assert [d.reason for d in letters] == ["bad_json", "empty", "schema", "schema"]
    assert [base64.b64decode(d.original_b64) for d in letters] == [value for _, value, _ in bad]
    assert all(d.source_offset >= 0 and d.detail for d in letters)
    state = harness.state("carol")
    assert state is not None and state.event_ids == ["c3"]
    assert harness.worker.metrics.dlq.labels("bad_json")._value.get() == 1


def test_a_bad_record_read_again_in_the_same_generation_gets_one_letter(
    harness: Harness,
) -> None:
    # A hole's re-read brings the records after the hole again (stream.offset_gaps):
    # a malformed one among them already has its letter.
    metrics = harness.worker.metrics
    read_again(
        harness,
        first=[keyed("carol", event("c0", "carol", 0)), (b"carol", b"{not json", None)],
        more=[keyed("carol", event("c1", "carol", 1))],
        until=lambda: metrics.applied._value.get() >= 2,
    )  # fmt: skip
    assert len(harness.emitter.on(EVENTS_DLQ)) == 1
    assert metrics.dlq_repeats._value.get() == 1
    assert metrics.duplicates._value.get() == 1  # c0 again: deduplicated by the table
    state = harness.state("carol")
    assert state is not None and state.event_ids == ["c0", "c1"]


def test_redelivered_events_are_not_applied_twice(harness: Harness) -> None:
    first = [keyed("dave", event(f"d{i}", "dave", i)) for i in range(3)]
    run(harness, first + first, until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1)
    state = harness.state("dave")
    assert state is not None and state.event_ids == ["d0", "d1", "d2"]
    metrics = harness.worker.metrics
    assert metrics.applied._value.get() == 3
    assert metrics.duplicates._value.get() == 3


def test_late_events_and_truncation_in_the_table(harness: Harness) -> None:
    # max_seq_len is 5 in this harness
    records = [keyed("erin", event(f"e{t}", "erin", t)) for t in (10, 30, 50, 70, 90, 110)]
    records.append(keyed("erin", event("late", "erin", 40)))
    records.append(keyed("erin", event("too-old", "erin", 5)))
    run(harness, records, until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1)
    state = harness.state("erin")
    assert state is not None
    assert state.event_ids == ["late", "e50", "e70", "e90", "e110"]
    assert state.time_gaps() == [0, 10, 20, 20, 20]


def test_event_on_the_wrong_partition_is_routed_to_its_users_partition(harness: Harness) -> None:
    right = user_partition(b"frank", PARTITIONS)
    wrong = (right + 1) % PARTITIONS
    records: Records = [
        (None, event("f1", "frank", 1), wrong),  # no key, wrong partition: rerouted
        (None, event("f2", "frank", 2), right),  # no key, right partition: applied here
        (b"someone-else", event("f3", "frank", 3), wrong),  # wrong key: rerouted too
    ]
    run(harness, records, until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1)

    rerouted = harness.emitter.on(repartition_topic_name("recstream-worker"))
    assert [(s.key, s.partition) for s in rerouted] == [(b"frank", right), (b"frank", right)]
    assert [orjson.loads(s.value)["event_id"] for s in rerouted] == ["f1", "f3"]
    state = harness.state("frank")
    assert state is not None and state.event_ids == ["f2"]


def test_corrupt_stored_state_starts_the_user_over_without_stopping(harness: Harness) -> None:
    probe = _FakeEvent(user_partition(b"gina", PARTITIONS))
    with table_partition(probe):  # type: ignore[arg-type]
        harness.worker.table.data[b"gina"] = b"garbage"  # the store only: no changelog
    run(
        harness,
        [keyed("gina", event("g1", "gina", 1))],
        until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1,
    )
    state = harness.state("gina")
    assert state is not None and state.event_ids == ["g1"]
    assert harness.worker.metrics.state_errors._value.get() == 1


def test_failed_output_delivery_is_fatal(harness: Harness) -> None:
    async def failing_send(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(Fatal("broker gone"))
        return failed

    # Score requests go out through send_records (the table's writer took its
    # own reference when the app was built).
    harness.emitter.send_records = failing_send  # type: ignore[method-assign]
    run(harness, [keyed("hal", event("h1", "hal", 1))], until=lambda: bool(harness.fatal))
    assert isinstance(harness.fatal[0], Fatal)


def test_a_bug_in_the_update_dead_letters_that_users_events_only(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recstream.stream.agents as agents

    real_apply = agents.apply_events

    def buggy(state, events, max_len):  # type: ignore[no-untyped-def]
        if events[0].user_id == "ivan":
            raise RuntimeError("boom")
        return real_apply(state, events, max_len)

    monkeypatch.setattr(agents, "apply_events", buggy)
    records = [keyed("ivan", event("v1", "ivan", 1)), keyed("judy", event("j1", "judy", 1))]
    run(harness, records, until=lambda: bool(harness.emitter.on(SCORE_REQUESTS)))
    letters = [DeadLetter.model_validate_json(s.value) for s in harness.emitter.on(EVENTS_DLQ)]
    assert [(d.reason, d.detail) for d in letters] == [("processing_error", "RuntimeError: boom")]
    assert harness.state("ivan") is None
    assert harness.state("judy") is not None
    assert not harness.fatal
    # Counted per batch, and only for the user whose events were applied.
    metrics = harness.worker.metrics
    assert metrics.applied._value.get() == 1
    assert metrics.duplicates._value.get() == 0
    assert metrics.score_requests._value.get() == 1
    assert metrics.dlq.labels("processing_error")._value.get() == 1


def test_read_value_is_table_get(harness: Harness) -> None:
    run(
        harness,
        [keyed("kim", event("k1", "kim", 1))],
        until=lambda: bool(harness.emitter.on(SCORE_REQUESTS)),
    )
    table = harness.worker.table
    probe = _FakeEvent(user_partition(b"kim", PARTITIONS))
    with table_partition(probe):  # type: ignore[arg-type]
        assert read_value(table, b"kim") == table.get(b"kim") is not None
        assert read_value(table, b"nobody") is table.get(b"nobody") is None


def test_table_writes_send_their_changelog_records_with_the_outputs(harness: Harness) -> None:
    records = [keyed("lea", event(f"l{i}", "lea", i)) for i in range(3)]
    records.append(keyed("max", event("m0", "max", 0)))
    run(harness, records, until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 2)
    changelog = harness.emitter.on(harness.worker.table.changelog_topic.get_topic_name())
    # one record per user per batch, raw key and value, on the user's partition
    assert sorted((s.key, s.partition) for s in changelog) == [
        (b"lea", user_partition(b"lea", PARTITIONS)),
        (b"max", user_partition(b"max", PARTITIONS)),
    ]
    for sent in changelog:
        assert sent.key is not None
        assert decode_state(sent.value) == harness.state(sent.key.decode())


def test_the_newest_changelog_offset_per_partition_is_persisted(harness: Harness) -> None:
    records = [keyed("lea", event(f"l{i}", "lea", i)) for i in range(3)]
    run(harness, records, until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1)
    topic = changelog_topic()
    store = harness.worker.table.data
    lea = user_partition(b"lea", PARTITIONS)
    # Where a restart resumes the changelog: after the record the batch delivered.
    assert store.persisted_offset(TP(topic, lea)) == harness.emitter.ends[topic, lea] - 1 == 0

    writer = DirectWriter(harness.worker.table, harness.emitter.send_records)
    writer.persisted([Delivered(topic, 0, 5), None, Delivered(topic, 1, 2),
                      Delivered(topic, 0, 9), Delivered(topic, 0, 7)])  # fmt: skip
    assert (store.persisted_offset(TP(topic, 0)), store.persisted_offset(TP(topic, 1))) == (9, 2)


def test_the_producer_buffer_holds_a_batch_of_table_writes(tmp_path: Path) -> None:
    for harness in make_harness(tmp_path, batch_size=700):
        assert harness.worker.app.producer.buffer.max_messages == 4 * 700


def test_settings_from_env() -> None:
    settings = WorkerSettings.from_env(
        {
            "RECSTREAM_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "RECSTREAM_PARTITIONS": "8",
            "RECSTREAM_STATE_DIR": "/var/lib/recstream",
            "RECSTREAM_MAX_SEQ_LEN": "50",
            "RECSTREAM_WORKER_BATCH": "500",
            "RECSTREAM_WORKER_BATCH_WINDOW_MS": "20",
            "RECSTREAM_WORKER_ID": "w-7",
            "RECSTREAM_METRICS_PORT": "9108",
            "RECSTREAM_BROKER_COMPAT": "off",
            "RECSTREAM_FETCH_WAIT_MS": "50",
        }
    )
    assert settings.kafka.partitions == 8
    assert settings.kafka.faust_broker_url == "kafka://k1:9092;kafka://k2:9092"
    assert settings.kafka.broker_compat == "off"
    assert settings.state_dir == Path("/var/lib/recstream")
    assert (settings.max_seq_len, settings.batch_size, settings.batch_window_s) == (50, 500, 0.02)
    assert (settings.worker_id, settings.metrics_port) == ("w-7", 9108)
    assert settings.fetch_wait_ms == 50
    defaults = WorkerSettings.from_env({})
    assert (defaults.max_seq_len, defaults.metrics_port, defaults.app_id) == (
        200,
        0,
        "recstream-worker",
    )
    assert defaults.state_dir == Path("state")
    # The worker's default is the Tansu layer's own (stream.tansu_compat).
    assert defaults.fetch_wait_ms == tansu_compat.TANSU_FETCH_MAX_WAIT_MS


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("RECSTREAM_MAX_SEQ_LEN", "0", "RECSTREAM_MAX_SEQ_LEN"),
        ("RECSTREAM_WORKER_BATCH", "many", "must be an integer"),
        ("RECSTREAM_METRICS_PORT", "70000", "RECSTREAM_METRICS_PORT"),
        ("RECSTREAM_BROKER_COMPAT", "maybe", "RECSTREAM_BROKER_COMPAT"),
        ("RECSTREAM_FETCH_WAIT_MS", "0", "RECSTREAM_FETCH_WAIT_MS"),
        ("RECSTREAM_BROKER_WAIT_S", "0", "RECSTREAM_BROKER_WAIT_S"),
        ("RECSTREAM_LOG_LEVEL", "chatty", "RECSTREAM_LOG_LEVEL"),
        ("RECSTREAM_PARTITIONS", "four", "RECSTREAM_PARTITIONS must be an integer"),
    ],
)
def test_settings_reject_bad_values(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerSettings.from_env({name: value})


def test_direct_writes_and_fausts_store_see_the_same_data(harness: Harness) -> None:
    """DirectWriter.get and .put go straight to the record partition's RocksDB
    database; Faust's own store path sees the same data."""
    table = harness.worker.table
    store = table.data

    async def go() -> None:
        writer = DirectWriter(table, harness.emitter.send_records)
        kim, ann = user_partition(b"kim", PARTITIONS), user_partition(b"ann", PARTITIONS)
        async with writer.lock:
            writer.put(b"kim", b"kim-state", _FakeEvent(kim))  # type: ignore[arg-type]
        with table_partition(_FakeEvent(kim)):  # type: ignore[arg-type]
            assert store[b"kim"] == b"kim-state"  # Faust's path reads the fast write
        with table_partition(_FakeEvent(ann)):  # type: ignore[arg-type]
            store[b"ann"] = b"ann-state"  # Faust's path writes
        async with writer.lock:
            assert writer.get(b"ann", _FakeEvent(ann)) == b"ann-state"  # type: ignore[arg-type]
            assert writer.get(b"kim", _FakeEvent(kim)) == b"kim-state"  # type: ignore[arg-type]
            assert writer.get(b"nobody", _FakeEvent(kim)) is None  # type: ignore[arg-type]
        # Only in the record's partition, and the key index knows where.
        others = [p for p in range(PARTITIONS) if p != kim]
        assert all(store._db_for_partition(p).get(b"kim") is None for p in others)
        assert store._key_index[b"kim"] == kim
        # Without an event, Faust finds the key through that index.
        assert store[b"kim"] == b"kim-state"

    harness.run(go())
