"""The dashboard's figures without a broker: topic records in, snapshot out; metric
scrapes to figures; ``top`` rendering them."""

from __future__ import annotations

import orjson
import pytest
from rich.console import Console

from recstream.live_state import WINDOW_S, LiveState
from recstream.metrics_scrape import Scrape, histogram_quantile, parse, summarize
from recstream.top import render


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def _event(n: int, user: str = "u1", item: str = "i1") -> bytes:
    return orjson.dumps(
        {"event_id": f"e{n}", "user_id": user, "item_id": item, "event_type": "view", "ts": n}
    )


def _rec(trigger: str, items: list[str], ingest_ms: float, user: str = "u1") -> bytes:
    return orjson.dumps(
        {
            "user_id": user,
            "items": [{"item_id": i, "score": 1.0} for i in items],
            "model_version": "v1",
            "trigger_event_id": trigger,
            "trigger_ts": 0,
            "ingest_ms": ingest_ms,
            "emitted_ms": ingest_ms,
        }
    )


def test_rates_latency_and_user_timeline() -> None:
    clock = Clock()
    state = LiveState(clock)
    state.add_event(_event(1, item="a"))
    state.add_recommendation(_rec("e1", ["b", "c", "d"], ingest_ms=clock.t * 1000 - 40))
    state.add_event(_event(2, item="c"))  # in the last list, at rank 2
    state.add_event(b"{broken")
    state.add_dead_letter(orjson.dumps({"reason": "bad_json"}))
    state.add_recommendation(b"nope")
    snap = state.snapshot()
    assert snap["events_total"] == 3 and snap["recs_total"] == 1 and state.unreadable == 1
    assert snap["events_per_s"] == pytest.approx(3 / WINDOW_S)
    assert snap["latency_ms"]["p50"] == pytest.approx(40.0)
    assert snap["dlq_by_reason"] == {"bad_json": 1}
    assert snap["busiest_users"] == ["u1"]
    view = state.user_view(None)  # the busiest user
    assert view is not None and view["user_id"] == "u1"
    newest, oldest = view["events"]
    assert newest["item_id"] == "c" and newest["hit_rank"] == 1
    assert oldest["recommendation"]["items"] == ["b", "c", "d"]
    assert state.user_view("stranger") == {"user_id": "stranger", "events": [], "found": False}
    clock.t += WINDOW_S + 1
    later = state.snapshot()
    assert later["events_per_s"] == 0 and later["latency_ms"]["p50"] is None


WORKER = """
# TYPE recstream_worker_online_trials counter
recstream_worker_online_trials_total{model_version="v1"} 10.0
recstream_worker_online_hits_total{model_version="v1"} 3.0
recstream_worker_online_ndcg_sum_total{model_version="v1"} 1.5
recstream_worker_online_hr_at_10{model_version="v1"} 0.25
recstream_worker_consumer_lag{partition="0",topic="events"} 5.0
recstream_worker_consumer_lag{partition="1",topic="events"} 2.0
recstream_worker_table_keys{table="user_sequences"} 42.0
recstream_worker_ready 1.0
recstream_worker_events_in_total 100.0
"""
SCORER = """
recstream_scorer_model_info{model_version="v1"} 1.0
recstream_scorer_model_loaded_timestamp_seconds 900.0
recstream_scorer_ready 1.0
recstream_scorer_batch_size_count 4.0
recstream_scorer_batch_size_sum 40.0
recstream_scorer_batch_seconds_bucket{le="0.01"} 2.0
recstream_scorer_batch_seconds_bucket{le="0.02"} 4.0
recstream_scorer_batch_seconds_bucket{le="+Inf"} 4.0
recstream_scorer_batch_seconds_count 4.0
recstream_scorer_batch_seconds_sum 0.05
"""


def test_summarize_scrapes() -> None:
    figures = summarize(Scrape(1000.0, parse(WORKER), parse(SCORER)), None)
    assert figures["lag_total"] == 7 and figures["lag"]["events[0]"] == 5
    online = figures["online"]["v1"]
    assert online["hr_at_10"] == pytest.approx(0.3) and online["ndcg_at_10"] == pytest.approx(0.15)
    assert online["rolling_hr_at_10"] == 0.25
    assert figures["model_version"] == "v1" and figures["model_age_s"] == 100.0
    assert figures["scorer_batch_mean"] == 10.0
    assert figures["scorer_batch_ms"]["p50"] == pytest.approx(10.0)
    assert figures["worker_ready"] and figures["scorer_ready"]
    down = summarize(Scrape(1000.0, None, None), None)
    assert down == {"worker_up": False, "scorer_up": False}


def test_histogram_quantile_between_scrapes() -> None:
    before = parse(SCORER)
    now = parse(
        SCORER.replace('le="0.02"} 4.0', 'le="0.02"} 8.0').replace('"+Inf"} 4.0', '"+Inf"} 8.0')
    )
    # Only the 4 new observations, all in (0.01, 0.02]: the median is mid-bucket.
    assert histogram_quantile(now, before, "recstream_scorer_batch_seconds", 0.5) == pytest.approx(
        0.015
    )
    assert histogram_quantile(before, before, "recstream_scorer_batch_seconds", 0.5) is None


def test_top_renders_a_full_snapshot() -> None:
    state = LiveState(Clock())
    state.add_event(_event(1))
    snap = {
        "live": state.snapshot(),
        "metrics": summarize(Scrape(1000.0, parse(WORKER), parse(SCORER)), None),
        "metrics_configured": True,
    }
    console = Console(width=140, record=True)
    console.print(render(snap, "http://dash"))
    text = console.export_text()
    assert "events in" in text and "v1" in text and "0.300" in text and "worker ready" in text
