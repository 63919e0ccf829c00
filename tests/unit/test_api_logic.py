"""The API's pure parts: the replica of the topics, the trending ranking, request parsing."""

from __future__ import annotations

import orjson
import pytest
from multidict import MultiDict
from recstream.schemas.messages import ItemUpdate, Recommendation, UserDeletion

from recstream.api_requests import (
    BadRequest,
    check_query,
    check_user_id,
    parse_events_body,
    query_category,
    query_k,
    query_window,
)
from recstream.api_state import ApiState, TrendingItems

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000


def rec(user: str, emitted: int, items: list[str], version: str = "v1") -> bytes:
    return Recommendation(
        user_id=user, items=[{"item_id": i, "score": 1.0 - n / 10} for n, i in enumerate(items)],
        model_version=version, trigger_event_id=f"t{emitted}", trigger_ts=emitted,
        ingest_ms=emitted, emitted_ms=emitted,
    ).model_dump_json().encode()  # fmt: skip


def test_trending_decays_in_event_time() -> None:
    t = TrendingItems(half_life_s=3600)
    for _ in range(4):
        t.add("old", T0)
    t.add("new", T0 + 2 * HOUR_MS)
    t.add("new", T0 + 2 * HOUR_MS)
    # old: 4 events two half-lives ago = 1.0; new: 2.0
    assert t.top(2) == [("new", 2.0), ("old", 1.0)]
    assert t.top(5, exclude={"new"}) == [("old", 1.0)]


def test_trending_rescales_over_long_streams_without_overflow() -> None:
    t = TrendingItems(half_life_s=1)
    t.add("a", T0)
    t.add("b", T0 + 10_000_000)  # 10,000 half-lives later: a is gone, b counts 1
    assert t.top(2) == [("b", 1.0)]


def test_replica_keeps_each_users_newest_list_and_forgets_deleted_users() -> None:
    s = ApiState()
    s.add_recommendation(rec("u", 200, ["a", "b"], "v2"))
    s.add_recommendation(rec("u", 100, ["z"], "v1"))  # older, read later: ignored
    s.add_recommendation(b"garbage")
    body = s.user_list("u", 1, set(), now_ms=250)
    assert body["source"] == "stream" and body["model_version"] == "v2"
    assert body["items"] == [{"item_id": "a", "score": 1.0}] and body["age_ms"] == 50
    assert [i["item_id"] for i in s.user_list("u", 5, {"a"}, 250)["items"]] == ["b"]
    assert s.unreadable == 1
    s.add_deletion(UserDeletion(user_id="u", requested_ms=300).model_dump_json().encode())
    assert s.user_list("u", 5, set(), 400)["source"] == "popular"


def test_replica_counts_only_valid_events_for_trending() -> None:
    s = ApiState()
    good = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "ts": T0}
    s.add_event(orjson.dumps(good))
    s.add_event(orjson.dumps({**good, "ts": "soon"}))
    assert s.popular(10, set(), T0) == {"items": [{"item_id": "i", "score": 1.0}],
                                    "half_life_s": 3600.0, "events": 1}
    assert s.unreadable == 1


@pytest.mark.parametrize("raw", ["0", "101", "-1", "x", "²", "1" * 5000, ""])
def test_k_outside_its_range_names_k(raw: str) -> None:
    with pytest.raises(BadRequest) as exc:
        query_k({"k": raw})
    assert exc.value.field == "k" and exc.value.status == 400


@pytest.mark.parametrize("raw", ["", "a" * 257, "bad\x01id", "tab\there", "ok", "a" * 256, "é-ü"])
def test_path_ids_and_categories_follow_the_topics_id_rule(raw: str) -> None:
    from pydantic import TypeAdapter, ValidationError
    from recstream.schemas.messages import Id

    try:
        TypeAdapter(Id).validate_python(raw)
        valid = True
    except ValidationError:
        valid = False
    for name, check in (("user_id", check_user_id),
                        ("category", lambda v: query_category({"category": v}))):  # fmt: skip
        if valid:
            assert check(raw) == raw
        else:
            with pytest.raises(BadRequest) as exc:
                check(raw)
            assert exc.value.field == name and exc.value.detail.startswith(f"{name}: ")


def test_unknown_or_repeated_parameters_are_refused() -> None:
    with pytest.raises(BadRequest, match="unknown"):
        check_query(MultiDict([("kk", "3")]), {"k"})
    with pytest.raises(BadRequest, match="more than once"):
        check_query(MultiDict([("k", "3"), ("k", "4")]), {"k"})


def test_event_bodies_name_the_bad_field() -> None:
    ok = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "ts": T0}
    assert [e.event_id for e in parse_events_body(orjson.dumps(ok))] == ["e"]
    with pytest.raises(BadRequest) as exc:
        parse_events_body(orjson.dumps([ok, {**ok, "event_type": "teleport"}]))
    assert exc.value.field == "events[1].event_type" and exc.value.error == "schema"
    with pytest.raises(BadRequest) as exc:
        parse_events_body(orjson.dumps([ok, 5]))
    assert exc.value.field == "events[1]"
    with pytest.raises(BadRequest) as exc:
        parse_events_body(orjson.dumps({**ok, "ts": T0 + 48 * HOUR_MS * 10**3}))
    assert exc.value.field == "event" and exc.value.error == "ts_future"


def _item(item: str, category: str) -> bytes:
    return ItemUpdate(item_id=item, category=category, updated_ms=T0).model_dump_json().encode()


def _event(item: str, ts: int) -> bytes:
    return orjson.dumps({"event_id": f"e{item}{ts}", "user_id": "x", "item_id": item,
                         "event_type": "view", "ts": ts})  # fmt: skip


def test_a_category_keeps_the_users_order_then_fills_from_the_categorys_trending() -> None:
    s = ApiState()
    for item, category in (("a", "jazz"), ("b", "rock"), ("c", "jazz"), ("d", "jazz"),
                           ("e", "jazz"), ("f", "rock")):  # fmt: skip
        s.add_item(_item(item, category))
    for n, item in enumerate(["d", "d", "d", "e", "e", "b", "b", "b", "b", "a"]):
        s.add_event(_event(item, T0 + n))
    s.add_recommendation(rec("u", 200, ["b", "c", "a", "f"]))
    body = s.user_list("u", 3, set(), 250, category="jazz")
    # c, a from the user's list in its order; d is the jazz trending item it lacked.
    assert [i["item_id"] for i in body["items"]] == ["c", "a", "d"]
    assert body["filled_from_popular"] == 1 and body["source"] == "stream"
    # Excluded items stay out of both parts; the list's own items are never repeated.
    assert [i["item_id"] for i in s.user_list("u", 3, {"d"}, 250, "jazz")["items"]] == [
        "c", "a", "e"]
    assert s.user_list("u", 2, set(), 250, "jazz")["filled_from_popular"] == 0
    # A user without a list: the category's trending items.
    assert [i["item_id"] for i in s.user_list("nobody", 5, set(), 250, "rock")["items"]] == ["b"]


def test_a_window_picks_its_half_life() -> None:
    s = ApiState(half_life_s=3600)
    for _ in range(4):
        s.add_event(_event("old", T0))
    s.add_event(_event("new", T0 + 86_400_000))  # a day later
    assert [i["item_id"] for i in s.popular(2, set(), T0, window="1h")["items"]] == ["new", "old"]
    week = s.popular(2, set(), T0, window="7d")
    assert [i["item_id"] for i in week["items"]] == ["old", "new"] and week["half_life_s"] == 604800
    assert query_window({"window": "1d"}) == "1d" and query_window({}) is None
    with pytest.raises(BadRequest) as err:
        query_window({"window": "2h"})
    assert err.value.field == "window"


def test_trending_items_the_user_had_are_never_filled_in_and_a_deletion_forgets_them() -> None:
    s = ApiState(history=2)
    for n, item in enumerate(["a", "a", "a", "b", "b", "c"]):
        s.add_event(_event(item, T0 + n))
    mine = orjson.dumps({"event_id": "m", "user_id": "u", "item_id": "a", "event_type": "view",
                         "ts": T0 + 9})  # fmt: skip
    s.add_event(mine)
    assert [i["item_id"] for i in s.user_list("u", 2, set(), T0)["items"]] == ["b", "c"]
    s.add_deletion(UserDeletion(user_id="u", requested_ms=T0).model_dump_json().encode())
    assert "u" not in s.history
    assert [i["item_id"] for i in s.user_list("u", 2, set(), T0)["items"]] == ["a", "b"]
