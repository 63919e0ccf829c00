"""Micro-batching for the scorer: pure logic, no Kafka, no clock of its own.

Records come in with their partition and offset; a batch goes out when
``max_batch`` users are pending or the oldest pending one has waited
``max_wait_ms``. Several pending requests of one user collapse into one (the
latest state wins), because scoring a sequence that is already stale wastes the
model's time and sends the user an out-of-date list.

The batcher also says which offsets are safe to commit: never past a record
whose user is still pending, so a crash re-delivers it (at-least-once).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
P = TypeVar("P", bound=Hashable)


class BatcherFull(RuntimeError):
    """Adding this record would exceed ``max_pending`` users; fetch less."""


@dataclass
class _Entry(Generic[T]):
    payload: T
    #: (trigger_ts, arrival): the larger wins when a user's requests are coalesced.
    rank: tuple[int, int]
    first_offset: int
    since_ms: float
    records: int = 1


@dataclass(frozen=True)
class Batch(Generic[T]):
    items: list[T]
    #: Records folded into a later request of the same user in this batch.
    coalesced: int = 0
    records: int = 0


class MicroBatcher(Generic[P, T]):
    """Collects (partition, offset, user) records and hands out coalesced batches.

    Order: a batch lists users in the order they became pending, so within a
    partition the outputs keep the input order and no user waits behind
    later arrivals. Requests are coalesced per (partition, user).
    """

    def __init__(self, max_batch: int, max_wait_ms: float, max_pending: int | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.max_pending = max_pending if max_pending is not None else 4 * max_batch
        if self.max_pending < max_batch:
            raise ValueError("max_pending must be >= max_batch")
        # Insertion order is the order users became pending.
        self._entries: dict[tuple[P, str], _Entry[T]] = {}
        self._next_offset: dict[P, int] = {}
        self._committed: dict[P, int] = {}
        self._arrivals = 0

    def __len__(self) -> int:
        """Pending users (not records)."""
        return len(self._entries)

    @property
    def room(self) -> int:
        """How many more records can be fetched without risking :class:`BatcherFull`."""
        return max(0, self.max_pending - len(self._entries))

    def add(
        self, partition: P, offset: int, user_id: str, trigger_ts: int, payload: T, now_ms: float
    ) -> None:
        self._arrivals += 1
        key = (partition, user_id)
        rank = (trigger_ts, self._arrivals)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_pending:
                raise BatcherFull(f"{len(self._entries)} users pending (max {self.max_pending})")
            self._entries[key] = _Entry(payload, rank, offset, now_ms)
        else:
            entry.records += 1
            if rank > entry.rank:
                entry.payload, entry.rank = payload, rank
        self._seen(partition, offset)

    def skip(self, partition: P, offset: int) -> None:
        """A record with nothing to score (e.g. invalid): only its offset counts."""
        self._seen(partition, offset)

    def _seen(self, partition: P, offset: int) -> None:
        if offset + 1 > self._next_offset.get(partition, -1):
            self._next_offset[partition] = offset + 1

    def next_offsets(self) -> Mapping[P, int]:
        """Per partition still held, the offset after the last record read (added or skipped)."""
        return self._next_offset

    def due(self, now_ms: float) -> bool:
        return self.wait_ms(now_ms) == 0.0

    def wait_ms(self, now_ms: float) -> float:
        """Milliseconds until a batch is due; ``max_wait_ms`` when nothing is pending."""
        if not self._entries:
            return self.max_wait_ms
        if len(self._entries) >= self.max_batch:
            return 0.0
        oldest = next(iter(self._entries.values()))
        return max(0.0, oldest.since_ms + self.max_wait_ms - now_ms)

    def take(self) -> Batch[T]:
        """Up to ``max_batch`` users, oldest pending first, each with their latest request."""
        keys = []
        for key in self._entries:
            if len(keys) >= self.max_batch:
                break
            keys.append(key)
        entries = [self._entries.pop(k) for k in keys]
        records = sum(e.records for e in entries)
        return Batch(
            [e.payload for e in entries], coalesced=records - len(entries), records=records
        )

    def committable(self) -> dict[P, int]:
        """Next offset to commit per partition, only where it moved since :meth:`committed`.

        Call after the outputs of every taken batch are acknowledged.
        """
        safe = dict(self._next_offset)
        for (partition, _), entry in self._entries.items():
            if entry.first_offset < safe[partition]:
                safe[partition] = entry.first_offset
        return {p: o for p, o in safe.items() if o > self._committed.get(p, -1)}

    def committed(self, offsets: dict[P, int]) -> None:
        self._committed.update(offsets)

    def drop_partitions(self, partitions: Iterable[P]) -> int:
        """Forget a revoked partition's pending users; its next owner re-reads them."""
        gone = set(partitions)
        keys = [k for k in self._entries if k[0] in gone]
        for k in keys:
            del self._entries[k]
        for p in gone:
            self._next_offset.pop(p, None)
            self._committed.pop(p, None)
        return len(keys)
