"""The deletions agent in Faust's test context: RocksDB tables in a temp folder, no broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from recstream.schemas import DeadLetter
from recstream.schemas.topics import EVENTS_DLQ, SCORE_REQUESTS, USER_DELETIONS
from recstream.stream.agents import user_partition
from test_worker_agent import (  # noqa: F401 - harness is a fixture
    PARTITIONS,
    T0,
    Harness,
    delivering_changelog,
    event,
    harness,
    keyed,
    run,
    wait_until,
)

Records = list[tuple[bytes | None, bytes, int]]


def deletion(user: str) -> bytes:
    return orjson.dumps({"user_id": user, "requested_ms": T0})


def delete(h: Harness, records: Records, want: int) -> None:
    """Feed ``user-deletions`` records; wait until ``want`` were handled (deleted, DLQ, moved)."""
    metrics = h.worker.metrics

    def handled() -> float:
        return (
            metrics.users_deleted._value.get()
            + sum(m._value.get() for m in metrics.dlq._metrics.values())
            + metrics.repartitioned._value.get()
        )

    async def go() -> None:
        async with (
            delivering_changelog(h.worker.app, h.changelog),
            h.worker.deletions_agent.test_context() as agent,
        ):
            await put_all(agent, records)
            await wait_until(h, lambda: handled() >= want)

    h.run(go())


def test_deletion_forgets_the_user_and_the_next_event_starts_over(harness: Harness) -> None:  # noqa: F811
    run(harness, [keyed("alice", event(f"a{i}", "alice", i)) for i in range(3)],
        until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 1)  # fmt: skip
    alice = user_partition(b"alice", PARTITIONS)
    delete(
        harness,
        [
            (b"alice", deletion("alice"), alice),
            (b"zed", deletion("zed"), user_partition(b"zed", PARTITIONS)),  # never seen: no-op
            (b"bob", b'{"user_id": ', user_partition(b"bob", PARTITIONS)),
            (b"x", deletion("bob"), (user_partition(b"bob", PARTITIONS) + 1) % PARTITIONS),
        ],
        want=4,
    )
    assert harness.state("alice") is None
    metrics = harness.worker.metrics
    assert metrics.users_deleted._value.get() == 2
    letters = [DeadLetter.model_validate_json(s.value) for s in harness.emitter.on(EVENTS_DLQ)]
    assert [(d.reason, d.source_topic) for d in letters] == [("deletion_bad_json", USER_DELETIONS)]
    # the wrongly keyed deletion goes to bob's partition, keyed by bob
    moved = harness.emitter.on(USER_DELETIONS)
    assert [(s.key, s.partition) for s in moved] == [(b"bob", user_partition(b"bob", PARTITIONS))]
    # user_sequences changelog: alice's state, then the tombstones (zed's too: a
    # redelivered deletion repairs a lost one), each on the user's partition
    changelog = harness.emitter.on(harness.worker.table.changelog_topic.get_topic_name())
    assert [(s.key, s.value is None, s.partition) for s in changelog] == [
        (b"alice", False, alice),
        (b"alice", True, alice),
        (b"zed", True, user_partition(b"zed", PARTITIONS)),
    ]

    run(harness, [keyed("alice", event("a9", "alice", 99))],
        until=lambda: len(harness.emitter.on(SCORE_REQUESTS)) >= 2)  # fmt: skip
    state = harness.state("alice")
    assert state is not None and state.event_ids == ["a9"]


def test_a_deletion_offset_that_never_arrived_is_sought_back(harness: Harness) -> None:  # noqa: F811
    # A deletion that skipped the agent leaves the user remembered: the
    # deletions agent watches its offsets like the events agent (HoleWatch).
    alice = user_partition(b"alice", PARTITIONS)
    metrics = harness.worker.metrics
    holes = metrics.offset_holes

    async def go() -> None:
        async with (
            delivering_changelog(harness.worker.app, harness.changelog),
            harness.worker.deletions_agent.test_context() as agent,
        ):
            await agent.put(deletion("alice"), key=b"alice", partition=alice, wait=False)
            agent.sent_offset += 3  # offsets 1..3 of the partition never reach the agent
            await agent.put(deletion("alice"), key=b"alice", partition=alice, wait=False)
            await wait_until(harness, lambda: metrics.users_deleted._value.get() >= 2)

    harness.run(go())
    # Asked to seek back to offset 1 (the test context has no broker to seek:
    # the seek fails and is logged; a worker re-reads).
    assert holes.labels("seek")._value.get() == 1



def test_a_bad_deletion_read_again_in_the_same_generation_gets_one_letter(
    harness: Harness,  # noqa: F811
) -> None:
    bob = user_partition(b"bob", PARTITIONS)
    metrics = harness.worker.metrics
    read_again(
        harness,
        first=[(b"bob", b'{"user_id": ', bob)],
        more=[(b"bob", deletion("bob"), bob)],
        until=lambda: metrics.users_deleted._value.get() >= 1,
    )  # fmt: skip
    assert len(harness.emitter.on(EVENTS_DLQ)) == 1
    assert metrics.dlq_repeats._value.get() == 1


def read_again(h: Harness, first: Records, more: Records, until: Callable[[], bool]) -> None:
    """Feed ``first`` until a DLQ letter is out, then the same records at the same
    offsets again, as a hole's re-read delivers them, then ``more``; wait for ``until``."""

    async def go() -> None:
        async with (
            delivering_changelog(h.worker.app, h.changelog),
            h.worker.deletions_agent.test_context() as agent,
        ):
            await put_all(agent, first)
            await wait_until(h, lambda: len(h.emitter.on(EVENTS_DLQ)) >= 1)
            agent.sent_offset -= len(first)
            await put_all(agent, [*first, *more])
            await wait_until(h, until)

    h.run(go())


async def put_all(agent: Any, records: Records) -> None:
    for key, value, partition in records:
        await agent.put(value, key=key, partition=partition, wait=False)
