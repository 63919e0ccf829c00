"""The live catalogue from ``items`` records: retirement, expiry, renewal, categories."""

from __future__ import annotations

import orjson
from recstream.inference.catalogue import Catalogue
from recstream.schemas.messages import ItemUpdate

from recstream.api_state import ApiState

T0 = 1_700_000_000_000


def item(item_id: str, **kw: object) -> ItemUpdate:
    return ItemUpdate(item_id=item_id, updated_ms=T0, **kw)


def test_retired_items_are_unavailable_until_a_later_record_brings_them_back() -> None:
    c = Catalogue()
    c.apply(item("a", text="A", category="books"))
    c.apply(item("b", available=False))
    assert c.unavailable(T0) == {"b"}
    c.apply(item("b"))
    assert c.unavailable(T0) == set() and c.applied == 3


def test_expiry_applies_from_its_time_and_a_renewal_cancels_it() -> None:
    c = Catalogue()
    c.apply(item("a", expires_at=T0 + 10))
    c.apply(item("b", expires_at=T0 + 10))
    assert c.unavailable(T0 + 9) == set()
    c.apply(item("b", expires_at=T0 + 1000))  # renewed before it expired
    assert c.unavailable(T0 + 10) == {"a"}
    assert c.unavailable(T0 + 1000) == {"a", "b"}


def test_unreadable_records_are_counted_and_skipped() -> None:
    c = Catalogue()
    assert c.apply_raw(b"{}") is None and c.apply_raw(None) is None
    assert c.unreadable == 2 and c.applied == 0
    assert c.apply_raw(item("x", category="toys").model_dump_json().encode()) is not None
    assert c.category("x") == "toys" and c.category("nope") is None


def test_api_state_filters_popular_by_category_inside_the_ranking_and_hides_retired() -> None:
    s = ApiState()
    for n, (i, cat) in enumerate([("a", "books"), ("b", "toys"), ("c", "books"), ("d", "toys")]):
        s.add_item(item(i, category=cat).model_dump_json().encode())
        for e in range(4 - n):  # a most popular, d least
            ev = {"event_id": f"{i}{e}", "user_id": "u", "item_id": i, "event_type": "view",
                  "ts": T0}  # fmt: skip
            s.add_event(orjson.dumps(ev))
    assert [x["item_id"] for x in s.popular(2, set(), T0, "toys")["items"]] == ["b", "d"]
    s.add_item(item("b", available=False).model_dump_json().encode())
    assert [x["item_id"] for x in s.popular(2, set(), T0, "toys")["items"]] == ["d"]
    assert "b" not in {x["item_id"] for x in s.user_list("new", 4, set(), T0)["items"]}
