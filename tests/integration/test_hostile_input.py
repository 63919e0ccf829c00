"""Hostile input through the real broker into a real worker process.

Hypothesis generates 10,000 records (broken JSON, wrong types, missing fields,
payloads far beyond the size limit, unknown event types, time stamps in the far
future or negative, junk unicode, duplicate event ids, null keys and values)
mixed with good events. They are produced in bulk into one worker run (a worker
start costs seconds; one per example would take hours), then: the worker never
crashed, every bad record is in the DLQ with the reason its category implies,
and the table equals the pure model (``apply_events``) of the good ones.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from recstream.schemas import DeadLetter, Event
from recstream.schemas.messages import MAX_EVENT_BYTES, MAX_FUTURE_MS, MIN_TS_MS, now_ms
from recstream.schemas.topics import EVENTS_DLQ
from recstream.stream.deadletter import DLQ_MAX_ORIGINAL_BYTES
from recstream.stream.sequence import UserSequence, apply_events

from recstream.broker import Broker
from recstream.processes import WorkerProcess, wait_for, worker_env
from recstream.readback import (
    consume_all,
    latest_changelog_states,
    produce,
    read_table,
    wait_committed,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

TOTAL = 10_000
PARTITIONS = 4
T0 = 1_700_000_000_000
MAX_TS_MS = 32_503_680_000_000  # the schema's upper bound
#: Larger than any user's event count here, so no window truncation: the model
#: then does not depend on where rerouted (keyless) events land in a user's order.
MAX_LEN = 1000
USERS = [f"user-{i}" for i in range(40)] + ["usér-ü", "用户-7", "u\x7f", "😀" * 3]
GIANT_EVERY = 50
GIANT_BYTES = 900_000
KINDS = ("view", "click", "cart", "purchase", "rate")
# Anything that is not JSON at all: a parse error, whatever its bytes are.
BAD_JSON = "bad_json"


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    #: None for a good event; else the DLQ reasons its category may give.
    reasons: frozenset[str] | None
    #: good events: the event, and whether it is keyed by its user (arrival order known)
    event: dict | None = None
    keyed: bool = True


def dumps(value: object) -> bytes:
    """JSON bytes; the stdlib, because orjson refuses integers beyond 64 bits."""
    return json.dumps(value, ensure_ascii=False).encode()


good_fields = st.fixed_dictionaries(
    {
        # A small id pool: duplicates (even with different content) are common.
        "event_id": st.integers(0, 2500).map(lambda n: f"e{n}"),
        "user_id": st.sampled_from(USERS),
        "item_id": st.integers(0, 300).map(lambda n: f"item-{n}"),
        "event_type": st.sampled_from(KINDS),
        # Even offsets; keyless events get odd ones (see keyless below).
        "ts": st.integers(0, 10_000_000).map(lambda n: T0 + 2 * n),
    }
)
optional_fields = st.fixed_dictionaries(
    {},
    optional={
        "value": st.floats(allow_nan=False, allow_infinity=False) | st.none(),
        "session_id": st.text(
            st.characters(min_codepoint=0x20, codec="utf-8"), min_size=1, max_size=20
        ),
        "context": st.dictionaries(
            st.text(max_size=10), st.integers() | st.text(max_size=10) | st.booleans(), max_size=4
        ),
        "schema_version": st.just(1),
    },
)


@st.composite
def good(draw: st.DrawFn) -> Record:
    event = {**draw(good_fields), **draw(optional_fields)}
    raw = dumps(event)
    if len(raw) > MAX_EVENT_BYTES:  # not with these sizes, but the model must not lie
        return Record(event["user_id"].encode(), raw, frozenset({"too_large"}))
    return Record(event["user_id"].encode(), raw, None, event)


@st.composite
def keyless(draw: st.DrawFn) -> Record:
    """A good event with no key or maybe another user's key: the worker reroutes it.

    finish() gives it a unique id and an odd time stamp, so its place in the
    user's sequence does not depend on when the rerouted copy arrives.
    """
    event = draw(good_fields)
    key = draw(st.none() | st.sampled_from(USERS).map(str.encode))
    return Record(key, None, None, event, keyed=False)


def _bad(key: bytes | None, value: bytes | None, *reasons: str) -> Record:
    return Record(key, value, frozenset(reasons))


keys = st.none() | st.sampled_from(USERS).map(str.encode) | st.binary(max_size=20)

broken_json = st.builds(
    lambda e, cut, key: _bad(key, dumps(e)[: max(1, cut)], BAD_JSON),
    good_fields,
    st.integers(1, 60),
    keys,
)
junk_bytes = st.builds(
    lambda b, key: _bad(key, b"\xff" + b, BAD_JSON),  # never valid UTF-8
    st.binary(max_size=300),
    keys,
)
junk_unicode = st.builds(
    # Any text: JSON of some other shape, or not JSON at all.
    lambda t, key: _bad(key, t.encode("utf-8", "surrogatepass") or b" ", BAD_JSON, "schema"),
    st.text(max_size=200).filter(lambda t: not t.strip().startswith("{")),
    keys,
)
lone_surrogate = st.builds(
    # An escaped lone surrogate in an id: valid-looking JSON, no valid string.
    lambda e, cp: _bad(
        None, dumps({**e, "item_id": "X"}).replace(b'"X"', b'"\\u%04x"' % cp), BAD_JSON
    ),
    good_fields,
    st.integers(0xD800, 0xDFFF),
)
wrong_json_type = st.builds(
    lambda v, key: _bad(key, dumps(v), "schema"),
    st.none() | st.integers() | st.lists(st.integers(), max_size=5) | st.text(max_size=20),
    keys,
)


ID_FIELDS = ("event_id", "user_id", "item_id")
wrong_types = {
    **{
        f: st.integers() | st.none() | st.booleans() | st.lists(st.integers(), max_size=2)
        for f in ID_FIELDS
    },
    "event_type": st.integers() | st.none() | st.lists(st.text(max_size=3), max_size=2),
    # Strict: a float is no integer, not even 1.0.
    "ts": st.text(max_size=8)
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False),
}
# Control characters, too long, or empty: not an id.
junk_ids = (
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=5)
    | st.text(min_size=257, max_size=300)
    | st.just("")
)


@st.composite
def wrong_field(draw: st.DrawFn) -> Record:
    """A good event with one field missing, mistyped, junk, or one field too many."""
    event = draw(good_fields)
    how = draw(st.sampled_from(["missing", "type", "junk", "extra"]))
    if how == "missing":
        del event[draw(st.sampled_from(sorted(event)))]
    elif how == "type":
        name = draw(st.sampled_from(sorted(wrong_types)))
        event[name] = draw(wrong_types[name])
    elif how == "junk":
        event[draw(st.sampled_from(ID_FIELDS))] = draw(junk_ids)
    else:
        event[draw(st.sampled_from(["userid", "extra", "__proto__"]))] = 1
    return _bad(draw(keys), dumps(event), "schema")


unknown_type = st.builds(
    lambda e, kind: _bad(e["user_id"].encode(), dumps({**e, "event_type": kind}), "schema"),
    good_fields,
    st.text(max_size=12).filter(lambda k: k not in KINDS),
)
bad_version = st.builds(
    lambda e, v: _bad(None, dumps({**e, "schema_version": v}), "bad_schema_version"),
    good_fields,
    st.integers().filter(lambda v: v != 1) | st.text(max_size=3),
)
bad_ts = st.builds(
    # Negative, before 1990, or beyond the schema's bound (year 3000).
    lambda e, ts: _bad(e["user_id"].encode(), dumps({**e, "ts": ts}), "schema"),
    good_fields,
    st.integers(-(2**70), MIN_TS_MS - 1) | st.integers(MAX_TS_MS + 1, 2**70),
) | st.builds(
    # Ahead of the clock by more than 24 h, but below the schema's bound.
    lambda e, ahead: _bad(None, dumps({**e, "ts": now_ms() + ahead}), "ts_future"),
    good_fields,
    st.integers(MAX_FUTURE_MS + 3_600_000, 10**13),
)
huge = st.builds(
    lambda e, size, key: _bad(key, dumps({**e, "context": {"pad": "x" * size}}), "too_large"),
    good_fields,
    # Just beyond the limit; finish() blows a few up to near 1 MiB.
    st.integers(MAX_EVENT_BYTES, 3 * MAX_EVENT_BYTES),
    keys,
)
empty = st.builds(
    # A Kafka record needs a key or a value: a null value gets a key (maybe b"").
    lambda key, v: _bad(b"" if key is None and v is None else key, v, "empty"),
    keys,
    st.sampled_from([None, b""]),
)

records = st.one_of(
    good(),
    good(),
    good(),
    keyless(),
    broken_json,
    junk_bytes,
    junk_unicode,
    lone_surrogate,
    wrong_json_type,
    wrong_field(),
    unknown_type,
    bad_version,
    bad_ts,
    huge,
    empty,
)


def generate(total: int) -> list[Record]:
    """``total`` records from the strategies, drawn in chunks (one chunk per example)."""
    out: list[Record] = []

    @settings(
        max_examples=total // 40 + 50,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(records, min_size=40, max_size=40))
    def collect(chunk: list[Record]) -> None:
        out.extend(chunk)

    while len(out) < total:
        collect()
    return out[:total]


def finish(generated: list[Record]) -> list[Record]:
    """Give keyless events unique ids and odd, unique time stamps; make a few huge records giant.

    Giants (near the producer's 1 MiB request cap) are set here rather than
    drawn: hundreds of them would only fill the broker's memory.
    """
    out = []
    huge_seen = 0
    for n, r in enumerate(generated):
        if r.event is not None and not r.keyed:
            event = {**r.event, "event_id": f"keyless-{n}", "ts": T0 + 2 * n + 1}
            out.append(Record(r.key, dumps(event), None, event, keyed=False))
        elif r.reasons == {"too_large"}:
            if huge_seen % GIANT_EVERY == 0:
                r = Record(r.key, (r.value or b"") + b" " * GIANT_BYTES, r.reasons)
            huge_seen += 1
            out.append(r)
        else:
            out.append(r)
    return out


def model(sent: list[Record]) -> dict[str, UserSequence]:
    """The pure logic over the good events: per user, keyed ones in send order, then the rest."""
    by_user: dict[str, list[Event]] = {}
    for keyed in (True, False):
        for r in sent:
            if r.event is not None and r.keyed is keyed:
                by_user.setdefault(r.event["user_id"], []).append(Event.model_validate(r.event))
    return {user: apply_events(None, events, MAX_LEN)[0] for user, events in by_user.items()}


def test_hostile_input_never_crashes_the_worker(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    sent = finish(generate(TOTAL))
    bad = [r for r in sent if r.reasons is not None]
    goods = [r for r in sent if r.reasons is None]
    categories = Counter("good" if r.reasons is None else "/".join(sorted(r.reasons)) for r in sent)
    log.warning("generated %d records: %s", len(sent), dict(categories))
    assert len(sent) == TOTAL
    assert len(bad) > 1000 and len(goods) > 1000
    assert any(r.value and len(r.value) > GIANT_BYTES for r in bad)
    assert any(r.key is None for r in goods) and any(r.value is None for r in bad)

    env = worker_env(recstream_env, tmp_path / "state", RECSTREAM_MAX_SEQ_LEN=str(MAX_LEN))
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        ends = produce(broker.bootstrap, [(r.key, r.value) for r in sent])  # type: ignore[misc]
        wait_committed(broker.bootstrap, ends, timeout_s=150, worker=worker)
        # Rerouted events are committed on the repartition topic, after ``ends``.
        wait_for(
            lambda: worker.alive and done_count(worker.metrics()) >= len(goods),
            120,
            "every good event applied or deduplicated",
        )
        metrics = worker.metrics()
        worker.terminate()  # exit 0: it never crashed (a crash also fails the waits above)

    want = model(sent)
    assert done_count(metrics) == len(goods)
    dlq = sum(v for k, v in metrics.items() if k.startswith("recstream_worker_events_dlq_total"))
    assert dlq == len(bad)
    assert read_table(tmp_path / "state", PARTITIONS) == want
    assert latest_changelog_states(broker.bootstrap) == want

    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in consume_all(broker.bootstrap, [EVENTS_DLQ], timeout_s=60)
    ]
    assert len(letters) == len(bad)
    # Each letter's reason is one its record's category allows; match by bytes.
    allowed: dict[bytes, frozenset[str]] = {}
    for r in bad:
        original = (r.value or b"")[:DLQ_MAX_ORIGINAL_BYTES]
        allowed[original] = allowed.get(original, frozenset()) | r.reasons  # type: ignore[operator]
    by_reason = Counter(d.reason for d in letters)
    log.warning("DLQ by reason: %s", dict(by_reason))
    for d in letters:
        original = base64.b64decode(d.original_b64)
        assert original in allowed, f"unexpected DLQ record {original[:80]!r}"
        assert d.reason in allowed[original], (d.reason, d.detail, original[:120])
        assert d.source_topic == "events" and d.source_offset >= 0
    # Count by reason: exact for reasons no ambiguous category (junk text: not
    # JSON, or JSON of another shape) can give; at least as many for the others.
    fixed = Counter(next(iter(r.reasons)) for r in bad if r.reasons and len(r.reasons) == 1)
    ambiguous = frozenset().union(*(r.reasons for r in bad if r.reasons and len(r.reasons) > 1))
    for reason in fixed.keys() | by_reason.keys():
        if reason in ambiguous:
            assert by_reason[reason] >= fixed[reason], reason
        else:
            assert by_reason[reason] == fixed[reason], reason
    # Letters of giant records keep the head only, and say so.
    giants = sum(1 for r in bad if r.value and len(r.value) > DLQ_MAX_ORIGINAL_BYTES)
    assert giants and sum("kept)" in d.detail for d in letters) == giants


def done_count(metrics: dict[str, float]) -> float:
    return metrics.get("recstream_worker_events_applied_total", 0) + metrics.get(
        "recstream_worker_events_duplicate_total", 0
    )
