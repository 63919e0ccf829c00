"""The per-user sequence state and its pure update, ``apply_events(state | None,
events) -> (state, applied)``: no broker, no Faust, no I/O.

Delivery is at-least-once, so applying an event again (still in the window, or
evicted from it) must change nothing:

* a duplicate ``event_id`` inside the window is skipped;
* once the window is full, an event not newer than the oldest kept entry is
  skipped (``<=``: the window only moves forward in time, so an evicted event,
  even one tied with the oldest entry, stays skipped on redelivery);
* a late event is inserted in time order, after entries with the same ``ts``;
* the window keeps the newest ``max_len`` entries.

Applying a batch is the same as applying its events one by one, in order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from recstream.schemas import SCHEMA_VERSION, Event, ScoreRequest

DEFAULT_MAX_LEN = 200
#: First element of an encoded state. Bump it when the layout changes, and keep
#: decoding the old one: the changelog holds values written by older workers.
CODEC_VERSION = 1


class StateDecodeError(ValueError):
    """A stored table value is not a state this code can read."""


@dataclass(frozen=True, slots=True)
class UserSequence:
    """One user's recent events, oldest first, as parallel lists (four JSON arrays
    for the codec, no copy for ``ScoreRequest``). Never mutated once built."""

    event_ids: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def time_gaps(self) -> list[int]:
        """Milliseconds since the previous entry; 0 for the first."""
        return time_gaps(self.ts)


def time_gaps(ts: Sequence[int]) -> list[int]:
    """Gaps between consecutive time stamps (the first gap is 0)."""
    if not ts:
        return []
    return [0, *(b - a for a, b in zip(ts, ts[1:], strict=False))]


def apply_events(
    state: UserSequence | None,
    events: Iterable[Event],
    max_len: int = DEFAULT_MAX_LEN,
) -> tuple[UserSequence, list[Event]]:
    """Apply ``events`` (arrival order) to ``state``; return the new state and the events
    that changed it when applied (even if a newer one of the batch evicted them)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if state is None:
        ids: list[str] = []
        items: list[str] = []
        types: list[str] = []
        ts: list[int] = []
    else:
        # Copies: the caller's state stays untouched (and the slice also
        # normalises a state written with a larger max_len).
        ids = state.event_ids[-max_len:]
        items = state.items[-max_len:]
        types = state.event_types[-max_len:]
        ts = state.ts[-max_len:]

    seen = set(ids)
    applied: list[Event] = []
    for event in events:
        event_id = event.event_id
        if event_id in seen:
            continue
        t = event.ts
        n = len(ts)
        if n >= max_len and t <= ts[0]:
            continue  # older than the window: already evicted, or would be at once
        seen.add(event_id)
        applied.append(event)
        if n == 0 or t >= ts[-1]:  # the common, in-order case
            ids.append(event_id)
            items.append(event.item_id)
            types.append(event.event_type)
            ts.append(t)
        else:
            i = bisect_right(ts, t)
            ids.insert(i, event_id)
            items.insert(i, event.item_id)
            types.insert(i, event.event_type)
            ts.insert(i, t)
        if n >= max_len:  # one entry too many now: drop the oldest
            del ids[0], items[0], types[0], ts[0]

    if not applied and state is not None and len(state.ts) <= max_len:
        return state, applied
    return UserSequence(ids, items, types, ts), applied


def encode_state(state: UserSequence) -> bytes:
    """Table value: ``[version, event_ids, items, event_types, ts]`` as JSON."""
    return orjson.dumps([CODEC_VERSION, state.event_ids, state.items, state.event_types, state.ts])


def decode_state(raw: bytes) -> UserSequence:
    """Inverse of :func:`encode_state`; :class:`StateDecodeError` for anything else."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateDecodeError(f"state is not JSON: {exc}") from None
    if not isinstance(value, list) or len(value) != 5:
        raise StateDecodeError("state is not a 5-element list")
    version, ids, items, types, ts = value
    if version != CODEC_VERSION:
        raise StateDecodeError(f"unknown state codec version {version!r}")
    if not all(isinstance(v, list) for v in (ids, items, types, ts)):
        raise StateDecodeError("state fields are not lists")
    if not len(ids) == len(items) == len(types) == len(ts):
        raise StateDecodeError(
            f"state lists differ in length: {len(ids)}, {len(items)}, {len(types)}, {len(ts)}"
        )
    return UserSequence(ids, items, types, ts)


def _score_request_fields(state: UserSequence, trigger: Event, ingest_ms: int) -> dict[str, object]:
    # In ScoreRequest's field order, so that orjson's output equals pydantic's.
    # No copies of the lists: states are never mutated once built.
    return {
        "schema_version": SCHEMA_VERSION,
        "user_id": trigger.user_id,
        "items": state.items,
        "ts": state.ts,
        "event_types": state.event_types,
        "exclude": list(dict.fromkeys(state.items)),
        "trigger_event_id": trigger.event_id,
        "trigger_ts": trigger.ts,
        "ingest_ms": ingest_ms,
    }


def build_score_request(state: UserSequence, trigger: Event, ingest_ms: int) -> ScoreRequest:
    """The scorer's input for ``trigger.user_id`` after ``trigger`` was applied
    (not validated again: every entry of the state came from a validated Event)."""
    return ScoreRequest.model_construct(**_score_request_fields(state, trigger, ingest_ms))


def score_request_json(state: UserSequence, trigger: Event, ingest_ms: int) -> bytes:
    """``build_score_request(...).model_dump_json()`` as bytes, without the model
    (the hot path); the unit tests hold the two byte for byte equal."""
    return orjson.dumps(_score_request_fields(state, trigger, ingest_ms))
