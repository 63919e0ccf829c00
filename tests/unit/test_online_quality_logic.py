"""Online HR@10 / NDCG@10, the pure part: hand-computed cases, judging rules, rolling window."""

from __future__ import annotations

import math

import orjson
import pytest
from recstream.stream.online_quality import (
    Judgement,
    LastRecommendation,
    RollingQuality,
    hit_and_ndcg,
    judge,
    parse_recommendation,
    rank_of,
)

RANKED = [f"i{n}" for n in range(12)]


def test_hit_and_ndcg_by_rank() -> None:
    assert hit_and_ndcg("i0", RANKED) == (True, 1.0)
    hit, ndcg = hit_and_ndcg("i3", RANKED)
    assert hit and ndcg == pytest.approx(1 / math.log2(5))
    assert hit_and_ndcg("i9", RANKED)[1] == pytest.approx(1 / math.log2(11))
    # Beyond the cut-off and absent items are misses.
    assert hit_and_ndcg("i10", RANKED) == (False, 0.0)
    assert hit_and_ndcg("nope", RANKED) == (False, 0.0)
    assert hit_and_ndcg("i2", RANKED, k=2) == (False, 0.0)
    assert rank_of("i11", RANKED, k=12) == 11
    assert hit_and_ndcg("i0", []) == (False, 0.0)


def _last(**kw: object) -> LastRecommendation:
    base = dict(model_version="v1", trigger_event_id="e1", trigger_ts=1000, items=("a", "b", "c"))
    base.update(kw)
    return LastRecommendation(**base)  # type: ignore[arg-type]


def test_judge_only_later_events() -> None:
    last = _last()
    assert judge(None, "e2", "a", 2000) is None
    assert judge(last, "e1", "a", 1000) is None  # the trigger itself
    assert judge(last, "e0", "a", 999) is None  # older than the trigger
    assert judge(last, "e2", "b", 1000) == Judgement("v1", True, pytest.approx(1 / math.log2(3)))
    assert judge(last, "e2", "z", 5000) == Judgement("v1", False, 0.0)


def test_last_recommendation_round_trip_and_ordering() -> None:
    last = _last(items=("x", "y"))
    assert LastRecommendation.decode(last.encode()) == last
    assert last.newer_than(None)
    assert _last(trigger_ts=2000).newer_than(last)
    assert not _last(trigger_ts=10).newer_than(last)


def test_parse_recommendation_keeps_the_top_k() -> None:
    msg = {
        "schema_version": 1,
        "user_id": "u1",
        "items": [{"item_id": f"i{n}", "score": 1.0 - n / 100} for n in range(15)],
        "model_version": "cooc-1",
        "trigger_event_id": "e9",
        "trigger_ts": 1234,
        "ingest_ms": 5678,
        "emitted_ms": 5680,
    }
    parsed = parse_recommendation(orjson.dumps(msg))
    assert parsed.user_id == "u1" and parsed.ingest_ms == 5678
    assert parsed.last == LastRecommendation("cooc-1", "e9", 1234, tuple(RANKED[:10]))
    for bad in (b"", b"{", orjson.dumps({**msg, "items": None}), orjson.dumps({"user_id": "u"})):
        with pytest.raises(ValueError):
            parse_recommendation(bad)
    with pytest.raises(ValueError):
        parse_recommendation(orjson.dumps({**msg, "user_id": ""}))


def test_rolling_quality_per_version_and_window() -> None:
    rolling = RollingQuality(window=4)
    for hit in (True, False, False, False):
        hr, ndcg = rolling.add(Judgement("v1", hit, 1.0 if hit else 0.0))
    assert (hr, ndcg) == (0.25, 0.25)
    # The hit falls out of the window.
    assert rolling.add(Judgement("v1", False, 0.0)) == (0.0, 0.0)
    # Another version has its own window.
    assert rolling.add(Judgement("v2", True, 0.5)) == (1.0, 0.5)
    with pytest.raises(ValueError):
        RollingQuality(window=0)
