"""Read back what a worker did: its RocksDB table, the changelog, the group's
committed offsets; and produce keyed records. For the integration tests, the
benchmarks and ops (``recstream.processes`` starts the worker).

Everything here waits by polling with a deadline (never a bare sleep), because
the tests run on loaded two-core machines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recstream.processes import WorkerProcess, wait_for
from recstream.stream.agents import user_partition
from recstream.stream.sequence import UserSequence, decode_state
from recstream.stream.settings import APP_ID
from recstream.stream.tables import USER_SEQUENCES

#: Faust keeps its own bookkeeping (the changelog offset) in every table DB.
FAUST_OFFSET_KEY = b"__faust\0offset__"



def table_dbs(state_dir: Path) -> dict[int, Path]:
    """Partition -> RocksDB folder of the ``user_sequences`` table below ``state_dir``."""
    out = {}
    for path in state_dir.glob(f"**/{USER_SEQUENCES}-*.db"):
        out[int(path.name.removesuffix(".db").rsplit("-", 1)[1])] = path
    return out


def read_table(state_dir: Path, partitions: int) -> dict[str, UserSequence]:
    """Every user's state from the worker's RocksDB files (the worker must be stopped).

    Also checks co-partitioning: each user must be stored in the partition
    its key hashes to, and nowhere else.
    """
    from rocksdict import AccessType, Options, Rdict

    states: dict[str, UserSequence] = {}
    for partition, path in sorted(table_dbs(state_dir).items()):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if key == FAUST_OFFSET_KEY:
                    continue
                user = key.decode()
                expected = user_partition(key, partitions)
                if partition != expected:
                    raise AssertionError(
                        f"user {user!r} stored in partition {partition}, its key hashes to {expected}"
                    )
                if user in states:
                    raise AssertionError(f"user {user!r} stored in two partitions")
                states[user] = decode_state(value)
        finally:
            db.close()
    return states


def consume_all(bootstrap: str, topics: Iterable[str], timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topics``, read from the beginning up to the fetch high watermark.

    Not ``end_offsets()``: Tansu answers ListOffsets(latest) wrongly (docs/embedded-broker.md
    defect 1); the high watermark in fetch responses is right.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            done = all(
                consumer.highwater(tp) is not None
                and consumer.position(tp) >= consumer.highwater(tp)
                for tp in tps
            )
            if done:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topics} to the end within {timeout_s}s")
    finally:
        consumer.close()


def changelog_topic(app_id: str = APP_ID) -> str:
    return f"{app_id}-{USER_SEQUENCES}-changelog"


def latest_changelog_states(bootstrap: str, app_id: str = APP_ID) -> dict[str, UserSequence]:
    """The last changelog value of every user: what a restore from the changelog gives.

    A tombstone (``None`` value, written by a user deletion) removes the user.
    """
    latest: dict[str, UserSequence] = {}
    for record in consume_all(bootstrap, [changelog_topic(app_id)]):
        if record.value is None:
            latest.pop(record.key.decode(), None)
        else:
            latest[record.key.decode()] = decode_state(record.value)
    return latest


def committed_offsets(bootstrap: str, group: str = APP_ID) -> dict[tuple[str, int], int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def wait_committed(
    bootstrap: str,
    ends: Mapping[tuple[str, int], int],
    timeout_s: float = 60.0,
    worker: WorkerProcess | None = None,
) -> float:
    """Wait until the worker's group committed every ``(topic, partition) -> end``."""

    def done() -> bool:
        if worker is not None:
            worker.check_alive()
        committed = committed_offsets(bootstrap)
        return all(committed.get(tp, -1) >= end for tp, end in ends.items())

    return wait_for(done, timeout_s, f"committed offsets reach {dict(ends)}", interval_s=0.25)


def produce(
    bootstrap: str,
    records: Iterable[tuple[bytes | None, bytes]],
    topic: str = "events",
    linger_ms: int = 20,
) -> dict[tuple[str, int], int]:
    """Produce keyed records in multi-record batches; return the end offset per partition."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, batch_size=256 * 1024, acks="all"
    )
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(60)
        ends: dict[tuple[str, int], int] = {}
        for future in futures:
            meta = future.get(timeout=60)
            tp = (meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        return ends
    finally:
        producer.close()
