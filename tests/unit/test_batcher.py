"""Micro-batcher: coalescing, ordering, bounds and commit offsets (no Kafka)."""

from __future__ import annotations

import pytest
from recstream.inference.batcher import BatcherFull, MicroBatcher


def make(
    max_batch: int = 3, max_wait_ms: float = 10, max_pending: int | None = None
) -> MicroBatcher[int, str]:
    return MicroBatcher(max_batch, max_wait_ms, max_pending)


def test_latest_trigger_ts_wins_then_latest_arrival() -> None:
    b = make(max_batch=10)
    b.add(0, 0, "u", 100, "u@100", now_ms=0)
    b.add(0, 1, "u", 300, "u@300", now_ms=0)
    b.add(0, 2, "u", 200, "u@200-late", now_ms=0)  # older event, arrives later: loses
    b.add(0, 3, "u", 300, "u@300-again", now_ms=0)  # same ts, arrives later: wins
    batch = b.take()
    assert batch.items == ["u@300-again"] and batch.coalesced == 3 and batch.records == 4


def test_users_come_out_in_the_order_they_became_pending() -> None:
    b = make(max_batch=10)
    for offset, (user, ts) in enumerate([("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]):
        b.add(0, offset, user, ts, f"{user}{ts}", now_ms=0)
    assert b.take().items == ["a2", "b2", "c1"]


def test_per_partition_order_is_kept_across_partitions() -> None:
    b = make(max_batch=10)
    b.add(0, 0, "a", 1, "p0-a", 0)
    b.add(1, 0, "x", 1, "p1-x", 0)
    b.add(0, 1, "b", 1, "p0-b", 0)
    b.add(1, 1, "y", 1, "p1-y", 0)
    out = b.take().items
    assert [i for i in out if i.startswith("p0")] == ["p0-a", "p0-b"]
    assert [i for i in out if i.startswith("p1")] == ["p1-x", "p1-y"]


def test_same_user_on_two_partitions_is_not_merged() -> None:
    b = make(max_batch=10)
    b.add(0, 0, "u", 1, "p0", 0)
    b.add(1, 0, "u", 2, "p1", 0)
    assert b.take().items == ["p0", "p1"]


def test_take_is_bounded_by_max_batch_and_keeps_the_rest() -> None:
    b = make(max_batch=2, max_pending=10)
    for n in range(5):
        b.add(0, n, f"u{n}", 1, f"u{n}", 0)
    assert b.take().items == ["u0", "u1"]
    assert len(b) == 3
    assert b.take().items == ["u2", "u3"]
    assert b.take().items == ["u4"]
    assert b.take().items == [] and len(b) == 0


def test_due_when_full_or_when_the_oldest_has_waited() -> None:
    b = make(max_batch=2, max_wait_ms=10)
    assert not b.due(0) and b.wait_ms(0) == 10
    b.add(0, 0, "a", 1, "a", now_ms=100)
    assert not b.due(105) and b.wait_ms(105) == pytest.approx(5)
    assert b.due(110)
    b.add(0, 1, "b", 1, "b", now_ms=106)
    assert b.due(106) and b.wait_ms(106) == 0  # full


def test_coalescing_does_not_use_room_but_new_users_do() -> None:
    b = make(max_batch=1, max_pending=2)
    b.add(0, 0, "a", 1, "a", 0)
    b.add(0, 1, "b", 1, "b", 0)
    assert b.room == 0
    b.add(0, 2, "a", 2, "a2", 0)  # an update for a pending user fits
    with pytest.raises(BatcherFull):
        b.add(0, 3, "c", 1, "c", 0)


def test_offsets_never_commit_past_a_pending_user() -> None:
    b = make(max_batch=1, max_pending=10)
    b.add(0, 10, "a", 1, "a", 0)
    b.add(0, 11, "b", 1, "b", 0)
    b.add(0, 12, "a", 2, "a2", 0)
    assert b.committable() == {0: 10}  # nothing scored yet
    b.committed(b.committable())
    assert b.take().items == ["a2"]
    assert b.committable() == {0: 11}  # b (offset 11) still pending
    b.committed({0: 11})
    assert b.committable() == {}  # nothing moved
    b.take()
    assert b.committable() == {0: 13}


def test_skipped_records_advance_offsets() -> None:
    b = make()
    b.skip(2, 40)
    b.skip(2, 41)
    assert b.committable() == {2: 42}
    assert len(b) == 0


def test_drop_partitions_forgets_their_users_and_offsets() -> None:
    b = make(max_batch=10)
    b.add(0, 0, "a", 1, "a", 0)
    b.add(1, 0, "b", 1, "b", 0)
    assert b.drop_partitions([1]) == 1
    assert b.take().items == ["a"]
    assert b.committable() == {0: 1}


@pytest.mark.parametrize(
    ("max_batch", "max_wait_ms", "max_pending"), [(0, 10, None), (2, -1, None), (4, 10, 2)]
)
def test_invalid_bounds_are_rejected(
    max_batch: int, max_wait_ms: float, max_pending: int | None
) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(max_batch, max_wait_ms, max_pending)
