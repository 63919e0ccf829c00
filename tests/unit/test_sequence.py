"""The pure sequence update: dedupe, late events, truncation, codec, score requests."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recstream.schemas import Event, ScoreRequest
from recstream.stream.sequence import (
    StateDecodeError,
    UserSequence,
    apply_events,
    build_score_request,
    decode_state,
    encode_state,
    score_request_json,
    time_gaps,
)

T0 = 1_700_000_000_000


def ev(event_id: str, ts: int, item: str | None = None, kind: str = "view") -> Event:
    return Event(
        event_id=event_id,
        user_id="u1",
        item_id=item or f"i-{event_id}",
        event_type=kind,
        ts=T0 + ts,
    )


def ids(state: UserSequence) -> list[str]:
    return state.event_ids


def test_first_events_start_a_sequence_in_time_order() -> None:
    state, applied = apply_events(None, [ev("a", 1), ev("b", 2, kind="click")])
    assert ids(state) == ["a", "b"]
    assert state.items == ["i-a", "i-b"]
    assert state.event_types == ["view", "click"]
    assert state.ts == [T0 + 1, T0 + 2]
    assert [e.event_id for e in applied] == ["a", "b"]


def test_duplicates_are_dropped_within_a_batch_and_across_batches() -> None:
    state, applied = apply_events(None, [ev("a", 1), ev("a", 1), ev("b", 2)])
    assert ids(state) == ["a", "b"]
    assert [e.event_id for e in applied] == ["a", "b"]
    again, applied2 = apply_events(state, [ev("b", 2), ev("a", 1)])
    assert again == state
    assert applied2 == []


def test_late_event_is_inserted_in_time_order() -> None:
    state, _ = apply_events(None, [ev("a", 10), ev("c", 30)])
    state, applied = apply_events(state, [ev("b", 20), ev("z", 5)])
    assert ids(state) == ["z", "a", "b", "c"]
    assert [e.event_id for e in applied] == ["b", "z"]


def test_equal_timestamps_keep_arrival_order() -> None:
    state, _ = apply_events(None, [ev("a", 10), ev("b", 10), ev("c", 20)])
    state, _ = apply_events(state, [ev("d", 10)])
    assert ids(state) == ["a", "b", "d", "c"]


def test_truncation_keeps_the_newest() -> None:
    state, applied = apply_events(None, [ev(f"e{i}", i) for i in range(10)], max_len=4)
    assert ids(state) == ["e6", "e7", "e8", "e9"]
    assert len(applied) == 10  # each changed the state when applied


def test_full_window_ignores_events_not_newer_than_its_oldest_entry() -> None:
    state, _ = apply_events(None, [ev(f"e{i}", 10 * i) for i in range(1, 4)], max_len=3)
    assert ids(state) == ["e1", "e2", "e3"]
    # older than the window, and tied with its oldest entry: both no-ops
    after, applied = apply_events(state, [ev("old", 5), ev("tie", 10)], max_len=3)
    assert after == state
    assert applied == []
    # newer than the oldest entry, though late: inserted, the oldest evicted
    after, applied = apply_events(state, [ev("late", 15)], max_len=3)
    assert ids(after) == ["late", "e2", "e3"]


def test_evicted_event_redelivered_is_a_no_op() -> None:
    first, applied = apply_events(None, [ev("a", 10), ev("b", 20)], max_len=1)
    assert ids(first) == ["b"]
    assert [e.event_id for e in applied] == ["a", "b"]
    # "a" was applied then evicted; a redelivery must not bring it back
    again, applied = apply_events(first, [ev("a", 10)], max_len=1)
    assert again == first
    assert applied == []


def test_tie_with_the_oldest_entry_of_a_full_window_is_not_applied() -> None:
    # The price of exact dedupe: were "b" applied (evicting "a", its equal in
    # time), a redelivered "a" would tie with "b" and come back, evicting "b".
    first, applied = apply_events(None, [ev("a", 10), ev("b", 10)], max_len=1)
    assert ids(first) == ["a"]
    assert [e.event_id for e in applied] == ["a"]


def test_state_is_not_mutated() -> None:
    state, _ = apply_events(None, [ev("a", 10), ev("c", 30)])
    snapshot = encode_state(state)
    apply_events(state, [ev("b", 20), ev("d", 40)], max_len=2)
    assert encode_state(state) == snapshot


def test_smaller_max_len_truncates_a_stored_state() -> None:
    state, _ = apply_events(None, [ev(f"e{i}", i) for i in range(5)])
    smaller, applied = apply_events(state, [], max_len=2)
    assert ids(smaller) == ["e3", "e4"]
    assert applied == []


def test_max_len_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_len"):
        apply_events(None, [ev("a", 1)], max_len=0)


def test_time_gaps() -> None:
    state, _ = apply_events(None, [ev("a", 0), ev("b", 250), ev("c", 1250)])
    assert state.time_gaps() == [0, 250, 1000]
    assert time_gaps([]) == []


def test_codec_roundtrip_and_compact_layout() -> None:
    state, _ = apply_events(None, [ev("a", 1, kind="cart"), ev("b", 2, item="x")])
    raw = encode_state(state)
    assert decode_state(raw) == state
    assert orjson.loads(raw) == [1, ["a", "b"], ["i-a", "x"], ["cart", "view"], [T0 + 1, T0 + 2]]
    assert decode_state(encode_state(UserSequence())) == UserSequence()


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "not JSON"),
        (b'{"a": 1}', "5-element list"),
        (b"[2, [], [], [], []]", "version"),
        (b"[1, [], [], [], 7]", "not lists"),
        (b'[1, ["a"], [], [], []]', "differ in length"),
    ],
)
def test_codec_rejects_what_it_did_not_write(raw: bytes, message: str) -> None:
    with pytest.raises(StateDecodeError, match=message):
        decode_state(raw)


def test_score_request_is_the_state_oldest_first_with_distinct_excludes() -> None:
    state, applied = apply_events(
        None, [ev("a", 1, item="x"), ev("b", 2, item="y", kind="click"), ev("c", 3, item="x")]
    )
    request = build_score_request(state, applied[-1], ingest_ms=T0 + 99)
    assert request == ScoreRequest(
        user_id="u1",
        items=["x", "y", "x"],
        ts=[T0 + 1, T0 + 2, T0 + 3],
        event_types=["view", "click", "view"],
        exclude=["x", "y"],
        trigger_event_id="c",
        trigger_ts=T0 + 3,
        ingest_ms=T0 + 99,
    )


def test_score_request_json_equals_pydantic_json_and_validates() -> None:
    events = [
        ev(f"e{i}", i, item=f"i{i % 3}", kind=("cart" if i % 4 else "rate")) for i in range(20)
    ]
    events.append(ev("é-ü", 30, item='日本 "quoted" \\ back'))  # escaping and UTF-8 agree too
    state, applied = apply_events(None, events)
    request = build_score_request(state, applied[-1], ingest_ms=T0)
    raw = score_request_json(state, applied[-1], ingest_ms=T0)
    assert raw == request.model_dump_json().encode()
    assert ScoreRequest.model_validate_json(raw) == request


# -- properties -----------------------------------------------------------------

KINDS = ("view", "click", "cart", "purchase", "rate")


def numbered(n: int, seed: int) -> Event:
    """Event number ``n``: the same ``n`` is the same event (a redelivery), as in
    production, where an event id names one immutable event. ``seed`` picks how
    ids map to times, so ties and late arrivals vary between examples."""
    return ev(f"e{n}", (n * seed) % 31, item=f"i{n % 6}", kind=KINDS[n % 5])


seeds = st.integers(1, 30)
# few ids, so duplicates are common; few timestamps, so ties are common
numbers = st.lists(st.lists(st.integers(0, 40), max_size=15), max_size=6)


@st.composite
def batches(draw: st.DrawFn) -> list[list[Event]]:
    seed = draw(seeds)
    return [[numbered(n, seed) for n in batch] for batch in draw(numbers)]


max_lens = st.integers(1, 12)


def fold(batches_: list[list[Event]], max_len: int) -> UserSequence:
    state: UserSequence | None = None
    for batch in batches_:
        state, _ = apply_events(state, batch, max_len)
    return state if state is not None else UserSequence()


@settings(max_examples=300, deadline=None)
@given(batches(), max_lens)
def test_property_applying_a_batch_twice_equals_once(batches_: list[list[Event]], m: int) -> None:
    state = fold(batches_[:-1], m) if batches_ else None
    batch = batches_[-1] if batches_ else []
    once, _ = apply_events(state, batch, m)
    twice, applied_again = apply_events(once, batch, m)
    assert twice == once
    assert applied_again == []


@settings(max_examples=300, deadline=None)
@given(batches(), max_lens, st.data())
def test_property_redelivering_any_earlier_events_is_a_no_op(
    batches_: list[list[Event]], m: int, data: st.DataObject
) -> None:
    state = fold(batches_, m)
    everything = [e for b in batches_ for e in b]
    redelivered = (
        data.draw(st.lists(st.sampled_from(everything), max_size=20)) if everything else []
    )
    after, applied = apply_events(state, redelivered, m)
    assert applied == []
    assert after == state


@settings(max_examples=300, deadline=None)
@given(batches(), max_lens)
def test_property_batch_equals_one_by_one(batches_: list[list[Event]], m: int) -> None:
    flat = [e for b in batches_ for e in b]
    batched = fold(batches_, m)
    single = fold([[e] for e in flat], m)
    assert batched == single


@settings(max_examples=300, deadline=None)
@given(batches(), max_lens)
def test_property_invariants(batches_: list[list[Event]], m: int) -> None:
    state = fold(batches_, m)
    assert len(state) <= m
    assert len(set(state.event_ids)) == len(state.event_ids)
    assert state.ts == sorted(state.ts)
    assert decode_state(encode_state(state)) == state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10_000), unique=True, max_size=40), max_lens, st.randoms())
def test_property_distinct_timestamps_keep_the_newest_whatever_the_order(
    stamps: list[int], m: int, rnd: object
) -> None:
    events = [ev(f"e{t}", t) for t in stamps]
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    state, _ = apply_events(None, shuffled, m)
    expected = sorted(events, key=lambda e: e.ts)[-m:]
    assert state.event_ids == [e.event_id for e in expected]
