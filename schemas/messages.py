"""Message types of every topic, validated on the way in.

Each value is JSON with a ``schema_version``. Validation is strict (no silent
coercion of ``"123"`` into ``123``) because producers in other languages rely
on the exported JSON Schema meaning exactly what the code accepts.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

#: Event types the model knows. Order matters: the index is the model's id.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rate")
EventType = Literal["view", "click", "cart", "purchase", "rate"]

#: Largest accepted event value, in bytes. Real events are ~200 bytes; anything
#: near this is a bug or an attack, and a per-user state must stay small.
MAX_EVENT_BYTES = 16 * 1024
#: 1990-01-01: older than any public interaction log we replay (MovieLens is 1997+).
MIN_TS_MS = 631_152_000_000
#: How far into the future an event clock may run before we call it broken.
MAX_FUTURE_MS = 24 * 3600 * 1000

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]
TimestampMs = Annotated[int, Field(ge=MIN_TS_MS, le=32_503_680_000_000)]
ContextValue = str | int | float | bool


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Event(_Message):
    """One user interaction, the value of the ``events`` topic."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    user_id: Id
    item_id: Id
    event_type: EventType
    ts: TimestampMs = Field(description="event time, milliseconds since the Unix epoch")
    value: float | None = Field(default=None, allow_inf_nan=False,
                                description="e.g. a rating or a price (finite)")
    session_id: Id | None = None
    context: dict[Annotated[str, Field(max_length=64)], ContextValue] | None = Field(
        default=None, max_length=32, description="e.g. {'device': 'mobile', 'geo': 'DE'}"
    )


class ScoreRequest(_Message):
    """A user's fresh sequence for the scorer (``score-requests``).

    The sequence is oldest first; ``ts`` and ``event_types`` run parallel to
    ``items``. ``exclude`` are items never to recommend (the user's history).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    items: list[Id]
    ts: list[int]
    event_types: list[EventType]
    exclude: list[Id] = Field(default_factory=list)
    trigger_event_id: Id
    trigger_ts: int = Field(description="time stamp of the event that caused this request")
    ingest_ms: int = Field(description="wall clock when the worker read the trigger event")


class RankedItem(_Message):
    item_id: Id
    score: float


class Explanation(_Message):
    item_id: Id
    weight: float


class Recommendation(_Message):
    """Ranked items for one user (``recommendations``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    items: list[RankedItem]
    model_version: str
    trigger_event_id: Id
    trigger_ts: int
    ingest_ms: int
    emitted_ms: int
    explanation: list[Explanation] | None = None


class DeadLetter(_Message):
    """A rejected message with everything needed to replay or diagnose it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: str = Field(description="short machine-readable code, e.g. bad_json")
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_b64: str = Field(description="the original value bytes, base64")
    rejected_ms: int


class ModelUpdate(_Message):
    """A published model version (``model-updates``, keyed by model name)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    model_name: str
    version: str
    uri: str
    sha256: str
    config: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    published_ms: int


class UserDeletion(_Message):
    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    requested_ms: int


class ItemUpdate(_Message):
    """An item's upsert or retirement (``items``, compacted, keyed by ``item_id``).

    The newest record of an item is its state: ``available: false`` retires it
    (never recommended again once applied), ``expires_at`` retires it from then.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    item_id: Id
    text: str | None = Field(default=None, max_length=4096,
                             description="title and description, for text embeddings")
    category: Id | None = None
    tags: list[Id] = Field(default_factory=list, max_length=32)
    available: bool = True
    expires_at: TimestampMs | None = Field(
        default=None, description="milliseconds since the Unix epoch; unavailable from then"
    )
    updated_ms: int


class InvalidMessage(ValueError):
    """A value that fails validation: a short ``reason`` code and a ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidEvent(InvalidMessage):
    """Raised for an event that must go to the dead-letter topic."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


M = TypeVar("M", bound=BaseModel)


def _validated(
    model: type[M],
    raw: bytes | None,
    error: type[InvalidMessage] = InvalidMessage,
    *,
    max_bytes: int | None = MAX_EVENT_BYTES,
    json_reason: str = "bad_json",
    version_reason: str = "schema",
) -> M:
    """``raw`` as a ``model``, or ``error(reason, detail)``: empty, too_large,
    ``json_reason`` (not JSON), ``version_reason`` (schema_version) or schema."""
    if raw is None or len(raw) == 0:
        raise error("empty", "message has no value")
    if max_bytes is not None and len(raw) > max_bytes:
        raise error("too_large", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if errors and errors[0]["type"] in ("json_invalid", "json_type"):
            raise error(json_reason, str(errors[0]["msg"])[:300]) from None
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "value"
        code = version_reason if where == "schema_version" else "schema"
        raise error(code, f"{where}: {first['msg']}"[:300]) from None


def parse_event(raw: bytes | None, now: int | None = None) -> Event:
    """Validate one raw ``events`` value; raise :class:`InvalidEvent` with a reason."""
    event = _validated(Event, raw, InvalidEvent, version_reason="bad_schema_version")
    limit = (now_ms() if now is None else now) + MAX_FUTURE_MS
    if event.ts > limit:
        raise InvalidEvent("ts_future", f"ts {event.ts} is more than 24 h ahead of the clock")
    return event


def parse_deletion(raw: bytes | None) -> UserDeletion:
    """Validate one ``user-deletions`` value; raise :class:`InvalidMessage` with a reason."""
    return _validated(UserDeletion, raw)


def parse_item_update(raw: bytes | None) -> ItemUpdate:
    """Validate one ``items`` value; raise :class:`InvalidMessage` with a reason."""
    return _validated(ItemUpdate, raw)


def parse_score_request(raw: bytes | None) -> ScoreRequest:
    """Validate one ``score-requests`` value; raise :class:`InvalidMessage`, reason
    ``empty`` or ``schema`` (bad JSON included)."""
    req = _validated(ScoreRequest, raw, max_bytes=None, json_reason="schema")
    if not (len(req.items) == len(req.ts) == len(req.event_types)):
        raise InvalidMessage("schema", "items, ts and event_types differ in length")
    return req


MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    "event": Event,
    "score_request": ScoreRequest,
    "recommendation": Recommendation,
    "dead_letter": DeadLetter,
    "model_update": ModelUpdate,
    "user_deletion": UserDeletion,
    "item_update": ItemUpdate,
}
