"""The trainer's bounded, on-disk training window (RocksDB through rocksdict).

Per user, the last ``max_events`` events of the last ``max_age_days`` (event
time, measured from the newest event the window has seen, so a replayed log
ages like a live one). Every event gets a window sequence number when it is
first stored; the number of the last event a fine-tuning round saw is the
"trained" watermark, which is what makes the validation prequential: events
after the watermark have never been trained on.

Layout (raw bytes keys)::

    u:<user_id>   orjson list of [seq, event_id, item_id, ts, event_type], oldest first
    m:seq         last sequence number handed out
    m:trained     the trained watermark
    m:users / m:events / m:max_ts    running totals, kept in the same write batches

Each :meth:`TrainingWindow.apply` / :meth:`TrainingWindow.delete_users` is one
synced write batch, so a caller may commit its Kafka offsets as soon as the call
returns: a crash after that never loses an event, and a redelivery before it is
dropped by ``event_id`` (at-least-once in, idempotent state).

The merge of new events into a user's list is the pure function
:func:`merge_user`, a pure function.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from recstream.schemas.messages import Event
from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

DAY_MS = 24 * 3600 * 1000
_USER = b"u:"
_SEQ, _TRAINED, _USERS, _EVENTS, _MAX_TS = b"m:seq", b"m:trained", b"m:users", b"m:events", b"m:max_ts"

#: One stored event: (seq, event_id, item_id, ts, event_type).
Row = tuple[int, str, str, int, str]


@dataclass(frozen=True)
class WindowBounds:
    max_events: int = 200
    max_age_days: float = 30.0

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_age_days <= 0:
            raise ValueError(f"window bounds must be positive: {self}")

    @property
    def max_age_ms(self) -> int:
        return int(self.max_age_days * DAY_MS)


@dataclass(frozen=True)
class MergeResult:
    rows: list[Row]
    added: int
    duplicates: int
    stale: int  # too old for the window (by age or behind a full list)


def merge_user(rows: list[Row], new: Iterable[Row], bounds: WindowBounds, newest_ts: int) -> MergeResult:
    """Insert ``new`` rows into one user's ``rows`` (oldest first) and apply the bounds.

    Duplicates (same ``event_id``) are dropped, out-of-order events are inserted
    in time order (ties keep arrival order), events older than ``newest_ts`` minus
    the age bound are dropped, and only the newest ``max_events`` are kept.
    """
    out = list(rows)
    seen = {r[1] for r in out}
    min_ts = newest_ts - bounds.max_age_ms
    added = dup = stale = 0
    for row in new:
        if row[1] in seen:
            dup += 1
            continue
        if row[3] < min_ts or (len(out) >= bounds.max_events and row[3] < out[0][3]):
            stale += 1
            continue
        # Insert after every row with ts <= this one: equal time stamps keep arrival order.
        pos = bisect.bisect_right([r[3] for r in out], row[3])
        out.insert(pos, row)
        seen.add(row[1])
        added += 1
    kept = [r for r in out if r[3] >= min_ts][-bounds.max_events :]
    # Rows pushed out by the bounds in this very call count as stale, not as added.
    old_seqs = {r[0] for r in rows}
    gone_new = added - sum(1 for r in kept if r[0] not in old_seqs)
    return MergeResult(kept, added - gone_new, dup, stale + gone_new)


@dataclass(frozen=True)
class ApplyResult:
    added: int = 0
    duplicates: int = 0
    stale: int = 0


@dataclass(frozen=True)
class UserRows:
    user: str
    rows: list[Row]


class TrainingWindow:
    """The window on disk. Writes come from one thread; reads may come from another."""

    def __init__(self, path: Path, bounds: WindowBounds, read_only: bool = False) -> None:
        self.path = Path(path)
        self.bounds = bounds
        self.path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        access = AccessType.read_only() if read_only else AccessType.read_write()
        self._db = Rdict(str(self.path), opts, access_type=access)
        self._sync = WriteOptions()
        self._sync.sync = True  # durable before the caller commits offsets

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TrainingWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- counters ------------------------------------------------------

    def _int(self, key: bytes) -> int:
        raw = self._db.get(key)
        return int(raw) if raw is not None else 0

    @property
    def seq(self) -> int:
        return self._int(_SEQ)

    @property
    def trained_seq(self) -> int:
        return self._int(_TRAINED)

    @property
    def n_users(self) -> int:
        return self._int(_USERS)

    @property
    def n_events(self) -> int:
        return self._int(_EVENTS)

    @property
    def newest_ts(self) -> int:
        return self._int(_MAX_TS)

    def pending(self) -> int:
        """Events stored since the last round's snapshot (not trained on yet)."""
        return self.seq - self.trained_seq

    def set_trained_seq(self, seq: int) -> None:
        self._db.put(_TRAINED, str(seq).encode(), self._sync)

    # ---- writes ----------------------------------------------------------

    def apply(self, events: Iterable[Event]) -> ApplyResult:
        """Store ``events`` (one synced batch); duplicates and stale events are dropped."""
        by_user: dict[str, list[Event]] = {}
        for e in events:
            by_user.setdefault(e.user_id, []).append(e)
        if not by_user:
            return ApplyResult()
        seq = self.seq
        newest = max(self.newest_ts, *(e.ts for evs in by_user.values() for e in evs))
        users, n_events = self.n_users, self.n_events
        batch = WriteBatch(raw_mode=True)
        added = dup = stale = 0
        for user, evs in by_user.items():
            key = _USER + user.encode()
            old = self._read(key)
            # Placeholder (negative) numbers first: only events that are actually stored
            # get a sequence number, so pending() counts stored events, not redeliveries.
            new_rows = [(-(k + 1), e.event_id, e.item_id, e.ts, e.event_type)
                        for k, e in enumerate(evs)]
            res = merge_user(old, new_rows, self.bounds, newest)
            added, dup, stale = added + res.added, dup + res.duplicates, stale + res.stale
            numbers = {}
            for placeholder in sorted((r[0] for r in res.rows if r[0] < 0), reverse=True):
                seq += 1  # in arrival order
                numbers[placeholder] = seq
            rows = [(numbers.get(r[0], r[0]), *r[1:]) for r in res.rows]
            if rows != old:
                batch.put(key, orjson.dumps(rows))
                users += (not old) - (not rows)
                n_events += len(rows) - len(old)
        for key, value in ((_SEQ, seq), (_USERS, users), (_EVENTS, n_events), (_MAX_TS, newest)):
            batch.put(key, str(value).encode())
        self._db.write(batch, self._sync)
        return ApplyResult(added, dup, stale)

    def delete_users(self, user_ids: Iterable[str]) -> int:
        """Forget users (one synced batch); return how many were in the window."""
        batch = WriteBatch(raw_mode=True)
        users, n_events, gone = self.n_users, self.n_events, 0
        for user in set(user_ids):
            key = _USER + user.encode()
            rows = self._read(key)
            if rows:
                batch.delete(key)
                users, n_events, gone = users - 1, n_events - len(rows), gone + 1
        if gone:
            batch.put(_USERS, str(users).encode())
            batch.put(_EVENTS, str(n_events).encode())
            self._db.write(batch, self._sync)
        return gone

    def sweep(self) -> int:
        """Drop events that aged out of the window since they were stored; return how many."""
        min_ts = self.newest_ts - self.bounds.max_age_ms
        batch = WriteBatch(raw_mode=True)
        users, n_events, dropped = self.n_users, self.n_events, 0
        for key, value in self._db.items(from_key=_USER):
            if not key.startswith(_USER):
                break
            rows = _decode(value)
            keep = [r for r in rows if r[3] >= min_ts]
            if len(keep) == len(rows):
                continue
            dropped += len(rows) - len(keep)
            n_events -= len(rows) - len(keep)
            if keep:
                batch.put(key, orjson.dumps(keep))
            else:
                batch.delete(key)
                users -= 1
        if dropped:
            batch.put(_USERS, str(users).encode())
            batch.put(_EVENTS, str(n_events).encode())
            self._db.write(batch, self._sync)
        return dropped

    # ---- reads -------------------------------------------------------------

    def _read(self, key: bytes) -> list[Row]:
        raw = self._db.get(key)
        return _decode(raw) if raw is not None else []

    def user(self, user_id: str) -> list[Row]:
        return self._read(_USER + user_id.encode())

    def snapshot(self, upto_seq: int | None = None) -> Iterator[UserRows]:
        """Every user's rows with ``seq <= upto_seq`` from one consistent RocksDB snapshot."""
        snap = self._db.snapshot()
        for key, value in snap.items(from_key=_USER):
            if not key.startswith(_USER):
                break
            rows = _decode(value)
            if upto_seq is not None:
                rows = [r for r in rows if r[0] <= upto_seq]
            if rows:
                yield UserRows(key[len(_USER) :].decode(), rows)


def _decode(raw: bytes) -> list[Row]:
    return [tuple(r) for r in orjson.loads(raw)]  # type: ignore[misc]
