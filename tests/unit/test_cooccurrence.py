"""The online co-occurrence baseline: exclusions, fallback, what it learns."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from recstream.inference.cooccurrence import CooccurrenceConfig, CooccurrenceRecommender
from recstream.inference.recommender import Recommender, load_recommender
from recstream.schemas import ScoreRequest

T0 = 1_700_000_000_000


def req(user: str, items: Sequence[str], exclude: Sequence[str] = (), t0: int = T0) -> ScoreRequest:
    ts = [t0 + 1000 * i for i in range(len(items))]
    return ScoreRequest(
        user_id=user,
        items=list(items),
        ts=ts,
        event_types=["view"] * len(items),
        exclude=list(exclude),
        trigger_event_id=f"{user}-{len(items)}",
        trigger_ts=ts[-1] if ts else t0,
        ingest_ms=t0,
    )


def ids(model: CooccurrenceRecommender, r: ScoreRequest, k: int = 10) -> list[str]:
    return [x.item_id for x in model.recommend([r], k)[0]]


def trained(sequences: Sequence[Sequence[str]]) -> CooccurrenceRecommender:
    model = CooccurrenceRecommender()
    model.observe([req(f"u{n}", seq) for n, seq in enumerate(sequences)])
    return model


def test_implements_the_recommender_protocol_and_is_the_default() -> None:
    model = load_recommender(None)
    assert isinstance(model, CooccurrenceRecommender) and isinstance(model, Recommender)
    assert model.version == "cooccurrence-v1"


def test_learned_transition_ranks_first() -> None:
    model = trained([["a", "b"]] * 20 + [["a", "c"]] * 5 + [["x", "y"]] * 50)
    assert ids(model, req("new", ["a"]))[:2] == ["b", "c"]


def test_history_and_exclude_are_never_recommended() -> None:
    model = trained([["a", "b", "c", "d", "e"]] * 10 + [["p", "q"]] * 3)
    got = ids(model, req("u", ["a", "b"], exclude=["c"]), k=10)
    assert got and not {"a", "b", "c"} & set(got)
    assert got[0] == "d"  # the strongest allowed follower of the recent items


def test_unavailable_items_are_never_recommended_nor_used_as_popular_fill() -> None:
    model = trained([["a", "b", "c", "d", "e"]] * 10 + [["p", "q"]] * 3)
    got = ids(model, req("u", ["a"]), k=10)
    assert {"b", "c"} <= set(got)
    gone = frozenset({"b", "c", "p"})
    for user, history in (("u", ["a"]), ("cold", [])):
        (row,) = model.recommend([req(user, history)], 10, unavailable=gone)
        kept = [r.item_id for r in row]
        assert kept and not gone & set(kept), kept
    (row,) = model.recommend([req("u", ["a"])], 4, unavailable=gone)
    assert [r.item_id for r in row][:2] == ["d", "e"]


def test_cold_user_gets_popular_items() -> None:
    model = trained([["pop", "mid"]] * 10 + [["pop", "rare"]])
    assert ids(model, req("cold", []), k=3) == ["pop", "mid", "rare"]


def test_popularity_fills_up_to_k_when_neighbours_run_out() -> None:
    model = trained([["a", "b"]] + [["p1", "p2", "p3", "p4"]] * 5)
    got = ids(model, req("u", ["a"]), k=4)
    assert got[0] == "b" and len(got) == 4 and "a" not in got


def test_recent_items_weigh_more_than_old_ones() -> None:
    model = trained([["old", "after_old"]] * 10 + [["new", "after_new"]] * 10)
    assert ids(model, req("u", ["old", "new"]))[0] == "after_new"


def test_redelivered_request_is_not_counted_twice() -> None:
    once, twice = CooccurrenceRecommender(), CooccurrenceRecommender()
    r = req("u", ["a", "b", "c"])
    once.observe([r])
    twice.observe([r, r])
    twice.observe([r])
    assert twice.observed_events == once.observed_events == 3
    assert twice.recommend([req("v", ["a"])], 5) == once.recommend([req("v", ["a"])], 5)


def test_growing_sequence_counts_only_the_new_item() -> None:
    model = CooccurrenceRecommender()
    model.observe([req("u", ["a", "b"])])
    model.observe([req("u", ["a", "b", "c"])])  # the worker's next request for u
    assert model.observed_events == 3


def test_equal_timestamps_are_counted_once_each() -> None:
    model = CooccurrenceRecommender()
    same = ScoreRequest(
        user_id="u",
        items=["a", "b"],
        ts=[T0, T0],
        event_types=["view", "view"],
        trigger_event_id="e",
        trigger_ts=T0,
        ingest_ms=T0,
    )
    model.observe([same])
    more = same.model_copy(
        update={"items": ["a", "b", "c"], "ts": [T0, T0, T0], "event_types": ["view"] * 3}
    )
    model.observe([more])
    assert model.observed_events == 3


def test_popularity_decays_so_recent_hits_win() -> None:
    model = CooccurrenceRecommender(CooccurrenceConfig(popularity_half_life=10))
    model.observe([req(f"a{n}", ["old_hit"]) for n in range(30)])
    model.observe([req(f"b{n}", ["new_hit"]) for n in range(20)])
    assert ids(model, req("cold", []), k=2) == ["new_hit", "old_hit"]


def test_rows_stay_bounded() -> None:
    model = CooccurrenceRecommender(CooccurrenceConfig(max_neighbors=5))
    model.observe([req(f"u{n}", ["hub", f"x{n}"]) for n in range(100)])
    assert len(model._rows["hub"]) < 10


def test_batch_gives_one_list_per_request_with_at_most_k() -> None:
    model = trained([[f"i{j}" for j in range(30)]] * 2)
    requests = [req("a", ["i1"]), req("b", []), req("c", ["i5", "i6"])]
    out = model.recommend(requests, 7)
    assert len(out) == 3 and all(len(r) == 7 for r in out)
    assert all(x.score >= y.score for r in out for x, y in itertools.pairwise(r))


@pytest.mark.parametrize("k", [0, -1])
def test_non_positive_k_gives_empty_lists(k: int) -> None:
    assert trained([["a", "b"]]).recommend([req("u", ["a"])], k) == [[]]


def test_empty_model_returns_empty_lists() -> None:
    assert CooccurrenceRecommender().recommend([req("u", ["a"])], 5) == [[]]
