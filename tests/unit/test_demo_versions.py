"""The demo's per-version figures: online judgement, swaps and the summary keys."""

from __future__ import annotations

import math

from recstream.schemas.messages import RankedItem, Recommendation

from recstream.demo_versions import VersionTally, model_kind, summary_keys


def rec(version: str, items: list[str], trigger: str = "e1") -> Recommendation:
    return Recommendation(
        user_id="u1", items=[RankedItem(item_id=i, score=1.0) for i in items],
        model_version=version, trigger_event_id=trigger, trigger_ts=1, ingest_ms=1, emitted_ms=1,
    )


def test_tally_judges_each_list_by_its_version_and_sees_the_swap() -> None:
    tally = VersionTally(t0=100.0)
    first = rec("cooccurrence-v1", ["a", "b", "c"])
    tally.received(first, 101.0, 12.0)
    tally.judge("b", first)  # hit at rank 1
    tally.judge("z", first)  # miss
    second = rec("v000001-abc", ["z", "a"])
    tally.received(second, 101.5, 30.0)
    tally.judge("z", second)
    tally.judge("q", None)  # no list yet: not judged
    rows = {r["version"]: r for r in tally.rows()}
    assert rows["cooccurrence-v1"]["online_hr10"] == 0.5
    assert math.isclose(rows["cooccurrence-v1"]["online_ndcg10"], round(0.5 / math.log2(3), 4))
    assert rows["v000001-abc"] == {**rows["v000001-abc"], "model": "sequence", "judged": 1,
                                   "online_hr10": 1.0, "served_from_s": 1.5}
    assert tally.changes == [(1.5, "cooccurrence-v1", "v000001-abc", 500.0)]
    keys = summary_keys(tally, None, {"recstream_scorer_model_swaps_total": 1.0})
    assert keys["swaps"] == 1 and keys["refused"] == 0
    assert keys["first_sequence_served_s"] == 1.5
    assert keys["hr10_ratio_sequence_vs_cooccurrence"] == 2.0
    assert keys["by_model"]["sequence"]["p99_ms"] == 30.0


def test_model_kind() -> None:
    assert model_kind("cooccurrence-v1") == "cooccurrence"
    assert model_kind("v000003-1a2b3c4d5e6f") == "sequence"
