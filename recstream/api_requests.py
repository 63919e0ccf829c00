"""Parsing the HTTP API's requests: parameters and event bodies, each refusal a
:class:`BadRequest` that names the field (answered as a 4xx, never a 5xx)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from multidict import MultiMapping
from pydantic import TypeAdapter, ValidationError

from recstream.schemas.api import DEFAULT_K, MAX_BATCH, MAX_EXCLUDE, MAX_K, POPULAR_WINDOWS
from recstream.schemas.messages import Event, Id, InvalidMessage, parse_event

#: The topics' rule for ids and categories (``schemas.messages.Id``), not a copy of it.
_ID = TypeAdapter(Id)


class BadRequest(Exception):
    """A 4xx answer naming the field at fault."""

    def __init__(self, field_name: str | None, detail: str, status: int = 400,
                 error: str = "bad_parameter") -> None:  # fmt: skip
        super().__init__(detail)
        self.field, self.detail, self.status, self.error = field_name, detail, status, error


def query_k(query: Mapping[str, str]) -> int:
    raw = query.get("k")
    if raw is None:
        return DEFAULT_K
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_K:
        raise BadRequest("k", f"k must be an integer in 1..{MAX_K}, got {raw[:40]!r}")
    return int(raw)


def query_exclude(query: Mapping[str, str]) -> set[str]:
    raw = query.get("exclude", "")
    ids = [i for i in raw.split(",") if i]
    if len(ids) > MAX_EXCLUDE:
        raise BadRequest("exclude", f"at most {MAX_EXCLUDE} item ids, got {len(ids)}")
    return set(ids)


def query_category(query: Mapping[str, str]) -> str | None:
    raw = query.get("category")
    if raw is None:
        return None
    return _check_id("category", raw)


def query_window(query: Mapping[str, str]) -> str | None:
    raw = query.get("window")
    if raw is not None and raw not in POPULAR_WINDOWS:
        raise BadRequest("window", f"window must be one of {sorted(POPULAR_WINDOWS)}, "
                         f"got {raw[:40]!r}")  # fmt: skip
    return raw


def check_query(query: MultiMapping[str], allowed: set[str]) -> None:
    """Refuse an unknown or repeated parameter: a typo must not be ignored silently."""
    for name in query:
        if name not in allowed:
            raise BadRequest(name, f"unknown parameter {name[:60]!r}; known: {sorted(allowed)}")
        if len(query.getall(name)) > 1:
            raise BadRequest(name, f"parameter {name!r} given more than once")


def check_user_id(user_id: str) -> str:
    return _check_id("user_id", user_id)


def check_item_id(item_id: str) -> str:
    return _check_id("item_id", item_id)


def _check_id(name: str, value: str) -> str:
    try:
        return _ID.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]  # e.g. "String should have at most 256 characters"
        rule = ("must not hold control characters" if error["type"] == "string_pattern_mismatch"
                else error["msg"])  # fmt: skip
        raise BadRequest(name, f"{name}: {rule}") from None


def parse_events_body(raw: bytes) -> list[Event]:
    """The body's events (one object or an array), validated like the topic's; raise
    :class:`BadRequest` naming the first bad one (``events[i].field``)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("body", f"not JSON: {exc}", error="bad_json") from None
    batch = isinstance(body, list)
    events = body if batch else [body]
    if not events or len(events) > MAX_BATCH:
        raise BadRequest("body", f"send 1..{MAX_BATCH} events, got {len(events)}")
    parsed = []
    for n, value in enumerate(events):
        where = f"events[{n}]" if batch else "event"
        if not isinstance(value, dict):
            raise BadRequest(where, "an event is a JSON object", error="schema")
        try:
            parsed.append(parse_event(orjson.dumps(value)))
        except InvalidMessage as exc:
            field_name, _, why = exc.detail.partition(": ")
            named = f"{where}.{field_name}" if why and exc.reason == "schema" else where
            raise BadRequest(named, exc.detail, error=exc.reason) from None
    return parsed

