"""The dashboard's catalogue controls (pure parts): request parsing and the watches."""

from __future__ import annotations

import pytest

from recstream.dashboard_catalogue import (
    GRACE_MS,
    MAX_WATCHES,
    BadItemRequest,
    CatalogueWatches,
    parse_item_request,
)


def test_a_request_becomes_the_items_record_it_asks_for() -> None:
    add = parse_item_request(b'{"action": "add", "item_id": "n1", "text": "Kettle", '
                             b'"category": ""}', now_ms=5)  # fmt: skip
    assert (add.item_id, add.text, add.category, add.available, add.updated_ms) == (
        "n1", "Kettle", None, True, 5)
    assert parse_item_request(b'{"action": "retire", "item_id": "n1"}', 6).available is False


@pytest.mark.parametrize(("raw", "field"), [
    (b"{", "body"), (b"[1]", "body"), (b'{"item_id": "x"}', "action"),
    (b'{"action": "hide", "item_id": "x"}', "action"), (b'{"action": "add"}', "item_id"),
    (b'{"action": "add", "item_id": "x", "text": 5}', "text"),
    (b'{"action": "add", "item_id": "x", "colour": "red"}', "colour"),
])  # fmt: skip
def test_a_bad_request_names_its_field(raw: bytes, field: str) -> None:
    with pytest.raises(BadItemRequest) as err:
        parse_item_request(raw, 0)
    assert err.value.field == field


def test_a_watch_counts_only_lists_emitted_from_a_second_after_its_record() -> None:
    w = CatalogueWatches()
    w.start(parse_item_request(b'{"action": "retire", "item_id": "old"}', 0), produced_ms=1000)
    w.observe(["old"], emitted_ms=1000 + GRACE_MS - 1)  # may predate the scorer applying it
    w.observe(["a", "b"], emitted_ms=1000 + GRACE_MS)
    w.observe(["old"], emitted_ms=5000)
    (view,) = w.view(now_ms=6000)
    assert view == {"item_id": "old", "action": "retire", "age_s": 5, "lists": 2, "holding": 1}
    for n in range(MAX_WATCHES + 2):
        w.start(parse_item_request(b'{"action": "add", "item_id": "i%d"}' % n, 0), 0)
    assert len(w.view()) == MAX_WATCHES and w.view()[0]["item_id"] == f"i{MAX_WATCHES + 1}"
