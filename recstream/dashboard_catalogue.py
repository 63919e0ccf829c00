"""The dashboard's catalogue controls: add or retire an item, then watch the effect.

``POST /api/items`` with ``{"action": "add"|"retire", "item_id", "text"?, "category"?}``
produces an ``items`` record (validated like any other, acknowledged by the
broker before the answer) and starts a watch: of the lists the dashboard reads
that were emitted from one second after the record on, how many hold the item
(a retired item: none; a new one: those whose users its text suits, once a
version with a text tower serves).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from recstream.schemas.messages import ItemUpdate

#: Watches kept (the newest); older ones leave the page.
MAX_WATCHES = 8
#: Lists emitted this soon after the record may predate the scorer applying it.
GRACE_MS = 1000


class BadItemRequest(ValueError):
    """A 400 answer naming the field at fault."""

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field_name


def parse_item_request(raw: bytes, now_ms: int) -> ItemUpdate:
    """The ``items`` record a request asks for; :class:`BadItemRequest` names the bad field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadItemRequest("body", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadItemRequest("body", "send a JSON object")
    action = body.pop("action", None)
    if action not in ("add", "retire"):
        raise BadItemRequest("action", f"action must be 'add' or 'retire', got {action!r}")
    body = {k: v for k, v in body.items() if v not in (None, "")}  # blank form fields
    try:
        return ItemUpdate(**body, available=action == "add", updated_ms=now_ms)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadItemRequest(where, f"{where}: {first['msg']}") from None
    except TypeError as exc:  # e.g. a field given twice
        raise BadItemRequest("body", str(exc)) from None


@dataclass
class Watch:
    action: str
    produced_ms: int
    lists: int = 0
    holding: int = 0


class CatalogueWatches:
    """The effect of each recent add or retire on the lists read since."""

    def __init__(self) -> None:
        self.watches: OrderedDict[str, Watch] = OrderedDict()

    def start(self, update: ItemUpdate, produced_ms: int) -> None:
        self.watches.pop(update.item_id, None)
        self.watches[update.item_id] = Watch("add" if update.available else "retire", produced_ms)
        while len(self.watches) > MAX_WATCHES:
            self.watches.popitem(last=False)

    def observe(self, items: list[str], emitted_ms: int) -> None:
        """Count one recommendation list read by the dashboard."""
        for item, watch in self.watches.items():
            if emitted_ms >= watch.produced_ms + GRACE_MS:
                watch.lists += 1
                watch.holding += item in items

    def view(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return [{"item_id": item, "action": w.action, "age_s": round((now - w.produced_ms) / 1000),
                 "lists": w.lists, "holding": w.holding}
                for item, w in reversed(self.watches.items())]  # fmt: skip
