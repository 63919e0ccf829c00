import orjson
import pytest
from recstream.schemas import EVENT_TYPES, InvalidEvent, parse_event
from recstream.schemas.jsonschema import SCHEMA_DIR, render_all
from recstream.schemas.messages import MAX_EVENT_BYTES

GOOD = dict(event_id="e1", user_id="u1", item_id="i1", event_type="view", ts=1_700_000_000_000)
NOW = 1_700_000_100_000


def raw(**over: object) -> bytes:
    return orjson.dumps({**GOOD, **over})


def test_good_event_parses_with_defaults() -> None:
    e = parse_event(raw(context={"device": "mobile"}, value=4.5), now=NOW)
    assert e.schema_version == 1 and e.event_type == "view" and e.context == {"device": "mobile"}


@pytest.mark.parametrize("etype", EVENT_TYPES)
def test_every_event_type_is_accepted(etype: str) -> None:
    assert parse_event(raw(event_type=etype), now=NOW).event_type == etype


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "bad_json"),
        (b"[1,2]", "schema"),
        (raw(event_type="teleport"), "schema"),
        (raw(ts="1700000000000"), "schema"),  # strict: no string->int coercion
        (raw(ts=1.7e12), "schema"),
        (raw(ts=-5), "schema"),
        (raw(ts=NOW + 2 * 24 * 3600 * 1000), "ts_future"),
        (raw(user_id=""), "schema"),
        (raw(user_id=7), "schema"),
        (raw(extra_field=1), "schema"),
        (raw(schema_version=2), "bad_schema_version"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "item_id"}), "schema"),
        (raw(item_id="x" * (MAX_EVENT_BYTES + 1)), "too_large"),
        (raw(user_id="bad\x00id"), "schema"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(payload, now=NOW)
    assert info.value.reason == reason
    assert info.value.detail


def test_json_schema_files_match_the_code() -> None:
    rendered = render_all()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == rendered, "run `recstream schemas export` and commit schemas/json"


def test_exported_event_schema_agrees_with_validation() -> None:
    schema = orjson.loads(render_all()["event.schema.json"])
    assert set(schema["required"]) == {"event_id", "user_id", "item_id", "event_type", "ts"}
    assert schema["properties"]["event_type"]["enum"] == list(EVENT_TYPES)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_event_value_is_a_schema_error(value: str) -> None:
    raw = ('{"schema_version":1,"event_id":"e","user_id":"u","item_id":"i",'
           f'"event_type":"view","ts":1700000000000,"value":{value}}}').encode()
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw)
    assert exc.value.reason == "schema"


def test_exported_openapi_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    document = orjson.loads(render_all()["openapi.json"])
    validate(document)
    assert set(document["paths"]) == {"/v1/users/{user_id}/recommendations", "/v1/popular",
                                      "/v1/items/{item_id}/similar", "/v1/events"}
