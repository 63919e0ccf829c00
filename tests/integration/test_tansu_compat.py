"""The Tansu end-offset compatibility layer (docs/embedded-broker.md defect 1), proven necessary.

``test_restart_and_restore`` runs the same scenario with the layer on (auto
detection) and off: on, a worker restarted on its local RocksDB state and a
worker restored from the changelog alone both end with every update; off, the
restart crashes with ConsistencyError and the restore loses updates. If the off
case ever stops failing, Tansu was fixed and the layer can go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.structs import TopicPartition as KafkaTopicPartition
from recstream.schemas import KafkaSettings
from recstream.stream.sequence import UserSequence
from recstream.stream.tansu_compat import compat_wanted, true_end_offsets

from recstream.broker import EmbeddedBroker
from recstream.processes import WorkerProcess, worker_env
from recstream.readback import latest_changelog_states, produce, read_table, wait_committed

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

T0 = 1_700_000_000_000
USERS = 48
PARTITIONS = 4


def test_detection_and_forcing(broker: EmbeddedBroker) -> None:
    kafka = KafkaSettings(bootstrap=broker.bootstrap)
    active, why = compat_wanted(kafka)
    assert active and "tansu_cluster" in why
    assert compat_wanted(KafkaSettings(bootstrap=broker.bootstrap, broker_compat="off"))[0] is False
    # forced on without asking the broker (the detector must not be called)
    forced = KafkaSettings(bootstrap="unreachable:1", broker_compat="tansu")
    assert compat_wanted(forced, detect=lambda _: pytest.fail("detected"))[0] is True
    # a real Kafka cluster id leaves the layer off
    assert compat_wanted(kafka, detect=lambda _: "MkU3OEVBNTcwNTJENDM2Qg")[0] is False


def test_true_end_offsets_come_from_a_fetch(broker: EmbeddedBroker) -> None:
    async def scenario() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        await producer.start()
        try:
            # partition 0: a batch of 5 then a batch of 3 (offsets 0..7); partition 1: 1 record
            for size in (5, 3):
                batch = [
                    await producer.send("events", b"v", key=b"k", partition=0) for _ in range(size)
                ]
                await asyncio.gather(*batch)
            await (await producer.send("events", b"v", key=b"k", partition=1))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition("events", p) for p in range(3)]
            reported = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return reported, await true_end_offsets(reported, {"bootstrap_servers": broker.bootstrap})

    reported, corrected = asyncio.run(scenario())
    p0, p1, p2 = (TopicPartition("events", p) for p in range(3))
    # The defect: first offset of the last batch (5) + 1, not last offset (7) + 1.
    assert reported[p0] == 6, "Tansu answers ListOffsets(latest) correctly now: drop the layer"
    assert corrected == {p0: 8, p1: 1, p2: 0}


def events(wave: int, per_user: int) -> Iterator[tuple[bytes, bytes]]:
    for i in range(per_user):
        for u in range(USERS):
            user = f"user-{u}"
            yield (
                user.encode(),
                orjson.dumps(
                    {
                        "event_id": f"w{wave}-{u}-{i}",
                        "user_id": user,
                        "item_id": f"item-{(u * 7 + i) % 101}",
                        "event_type": "view",
                        "ts": T0 + wave * 1_000_000 + i,
                    }
                ),
            )


def expected(waves: dict[int, int]) -> dict[str, list[str]]:
    return {
        f"user-{u}": [f"w{w}-{u}-{i}" for w, n in sorted(waves.items()) for i in range(n)]
        for u in range(USERS)
    }


def event_ids(states: dict[str, UserSequence]) -> dict[str, list[str]]:
    return {user: state.event_ids for user, state in states.items()}


@pytest.mark.parametrize("compat", ["auto", "off"])
def test_restart_and_restore(
    compat: str, broker: EmbeddedBroker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    base = {
        **recstream_env,
        "RECSTREAM_BROKER_COMPAT": compat,
        "RECSTREAM_WORKER_BATCH": "500",
        # Each worker batch writes ~12 users per changelog partition; a 20 ms
        # linger makes them one produce batch, so every partition's last batch
        # holds several records: what the defect needs, on every run.
        "RECSTREAM_PRODUCER_LINGER_MS": "20",
    }
    dir_a, dir_b = tmp_path / "state-a", tmp_path / "state-b"
    bootstrap = broker.bootstrap

    def worker(state_dir: Path, name: str) -> WorkerProcess:
        return WorkerProcess(worker_env(base, state_dir), tmp_path / f"{name}.log")

    # 1. worker A builds local state and the changelog from wave 1.
    with worker(dir_a, "a1") as a:
        a.wait_ready()
        assert a.metric("recstream_worker_broker_compat_active") == (compat == "auto")
        wait_committed(bootstrap, produce(bootstrap, events(1, 40)), worker=a)
        a.terminate()

    # 2. A restarts on its own RocksDB state: its persisted changelog offsets
    # are the true last offsets, beyond what Tansu reports as the end.
    with worker(dir_a, "a2") as a:
        if compat == "off":
            assert a.wait_exit(60) != 0, "restart without the layer should crash"
            assert "ConsistencyError" in a.log_path.read_text()
        else:
            a.wait_ready()
            a.terminate()

    # 3. B starts from nothing, restores from the changelog alone, then applies
    # wave 2 on top of what it restored.
    with worker(dir_b, "b") as b:
        b.wait_ready()
        wait_committed(bootstrap, produce(bootstrap, events(2, 10)), worker=b)
        b.terminate()
    want = expected({1: 40, 2: 10})
    restored = event_ids(read_table(dir_b, PARTITIONS))
    if compat == "off":
        wrong = [u for u in want if restored.get(u) != want[u]]
        assert wrong, "restore without the layer kept every update: has Tansu been fixed?"
        return
    assert restored == want
    assert event_ids(latest_changelog_states(bootstrap)) == want

    # 4. A restarts once more: local state from wave 1, wave 2 from B's changelog.
    with worker(dir_a, "a3") as a:
        a.wait_ready()
        a.terminate()
    assert event_ids(read_table(dir_a, PARTITIONS)) == want


def test_delete_records_is_not_implemented(broker: EmbeddedBroker) -> None:
    """No trimming of the stored batches either: Tansu 0.6.0 advertises DeleteRecords
    (API 21) but its memory engine panics on it ("not yet implemented") and drops the
    connection; the broker serves on. So nothing in recstream calls it. If this ever
    passes the delete, Tansu can trim consumed score-requests (README: Development)."""
    async def send(n: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await producer.start()
        try:
            for _ in range(n):
                await producer.send_and_wait("events", b"v", key=b"k", partition=0)
        finally:
            await producer.stop()

    async def first_offset() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition("events", 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            got = await consumer.getmany(tp, timeout_ms=5000)
            return min(m.offset for m in got[tp])
        finally:
            await consumer.stop()

    asyncio.run(send(3))
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    try:
        with pytest.raises(KafkaError):
            admin.delete_records({KafkaTopicPartition("events", 0): 2})
    finally:
        admin.close()
    assert broker.proc is not None and broker.proc.poll() is None
    asyncio.run(send(1))  # still serving, and nothing was deleted
    assert asyncio.run(first_offset()) == 0
