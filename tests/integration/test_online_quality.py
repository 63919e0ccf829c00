"""Online HR@10 / NDCG@10 computed by the worker from the real loop.

Real broker, real worker and scorer processes. Each test user sends one event,
gets a recommendation back, and the worker reads that list back; then the
user's next event picks an item at a known rank of that list (or one outside
it). The worker's counters must then say exactly how many lists were judged,
how many were hits and the NDCG sum, labelled with the scorer's model version.
"""

from __future__ import annotations

import math
import urllib.request
from pathlib import Path

import orjson
import pytest
from recstream.schemas import Recommendation
from recstream.schemas.topics import RECOMMENDATIONS

from recstream.processes import (
    Child,
    WorkerProcess,
    free_port,
    recstream_command,
    wait_for,
    worker_env,
)
from recstream.readback import consume_all, produce

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
#: Generous: group joins take seconds, and this machine is shared and slow.
TIMEOUT_S = 180.0
USERS = [f"oq-user-{n}" for n in range(8)]
#: Rank of the next item in the user's list; None: an item outside the list.
RANKS: list[int | None] = [0, 3, 9, None, 1, None, None, 5]


def event(user: str, event_id: str, item: str, ts: int) -> tuple[bytes, bytes]:
    value = {"event_id": event_id, "user_id": user, "item_id": item, "event_type": "view", "ts": ts}
    return user.encode(), orjson.dumps(value)


def labelled_sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def latest_recommendations(bootstrap: str) -> dict[str, Recommendation]:
    latest: dict[str, Recommendation] = {}
    for record in consume_all(bootstrap, [RECOMMENDATIONS]):
        rec = Recommendation.model_validate_json(record.value)
        latest[rec.user_id] = rec
    return latest


def settle(worker: WorkerProcess, bootstrap: str, events: int) -> int:
    """Wait until the worker applied ``events`` and read back every list written; return that count.

    The list count must also hold still for a poll: the scorer may still be writing.
    """
    worker.wait_metric("recstream_worker_events_applied_total", events, TIMEOUT_S)
    written = -1

    def all_read_back() -> bool:
        nonlocal written
        seen = labelled_sum(worker.metrics(), "recstream_worker_recommendations_in_total")
        now_written = len(consume_all(bootstrap, [RECOMMENDATIONS]))
        stable, written = now_written == written, now_written
        return stable and seen >= written

    wait_for(all_read_back, TIMEOUT_S, f"worker read back the lists\n{worker.log_tail()}", 1)
    return written


def test_worker_judges_each_list_against_the_next_event(
    broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    env = worker_env(recstream_env, tmp_path / "state")
    scorer_port = free_port()
    scorer = Child(
        "scorer",
        recstream_command("scorer"),
        {**env, "RECSTREAM_METRICS_PORT": str(scorer_port)},
        tmp_path / "scorer.log",
    ).start()
    try:
        with WorkerProcess(env, tmp_path / "worker.log") as worker:
            worker.wait_ready(TIMEOUT_S)
            # Background traffic so the online co-occurrence model knows a catalogue.
            background = [
                event(f"bg-{u}", f"bg-{u}-{n}", f"item-{(u * 7 + n) % 40}", T0 + n * 1000)
                for u in range(30)
                for n in range(6)
            ]
            produce(broker.bootstrap, background)
            # Let the background settle first: its own later events judge its own
            # lists (same model version), and that must be over before the
            # counters are read as a baseline.
            settle(worker, broker.bootstrap, len(background))
            # The first event of each test user, and the list it leads to.
            produce(broker.bootstrap, [event(u, f"{u}-e1", "item-1", T0) for u in USERS])

            def lists_arrived() -> bool:
                scorer.check_alive()
                return set(USERS) <= latest_recommendations(broker.bootstrap).keys()

            wait_for(lists_arrived, TIMEOUT_S, "a recommendation for every test user", 0.5)
            written = settle(worker, broker.bootstrap, len(background) + len(USERS))
            latest = latest_recommendations(broker.bootstrap)

            version = latest[USERS[0]].model_version
            label = f'{{model_version="{version}"}}'
            trials = f"recstream_worker_online_trials_total{label}"
            hits = f"recstream_worker_online_hits_total{label}"
            ndcg_sum = f"recstream_worker_online_ndcg_sum_total{label}"
            before = worker.metrics()
            t0, h0, n0 = before.get(trials, 0.0), before.get(hits, 0.0), before.get(ndcg_sum, 0.0)
            expected_hits, expected_ndcg, nexts = 0, 0.0, []
            for user, rank in zip(USERS, RANKS, strict=True):
                ranked = [r.item_id for r in latest[user].items]
                assert len(ranked) == 10, ranked
                if rank is None:
                    item = "item-never-recommended"
                else:
                    item = ranked[rank]
                    expected_hits += 1
                    expected_ndcg += 1 / math.log2(rank + 2)
                nexts.append(event(user, f"{user}-e2", item, T0 + 60_000))
            produce(broker.bootstrap, nexts)

            worker.wait_metric(trials, t0 + len(USERS), TIMEOUT_S)
            worker.wait_metric(
                "recstream_worker_events_applied_total",
                len(background) + 2 * len(USERS),
                TIMEOUT_S,
            )
            m = worker.metrics()
            # Exactly one judgement per test user, each against the list it got.
            assert m[trials] - t0 == len(USERS)
            assert m[hits] - h0 == expected_hits
            assert m[ndcg_sum] - n0 == pytest.approx(expected_ndcg)
            # The rolling gauges (window 1000) cover the background's judgements too.
            assert m[f"recstream_worker_online_hr_at_10{label}"] == pytest.approx(
                (h0 + expected_hits) / (t0 + len(USERS))
            )
            assert m[f"recstream_worker_online_ndcg_at_10{label}"] == pytest.approx(
                (n0 + expected_ndcg) / (t0 + len(USERS))
            )
            # The loop's latency and the monitoring gauges are exported too.
            assert m["recstream_worker_event_to_recommendation_seconds_count"] >= written
            assert m['recstream_worker_table_keys{table="user_sequences"}'] > 0
            assert any(k.startswith("recstream_worker_consumer_lag{") for k in m), sorted(m)
            # Both processes answer their probes.
            for port in (worker.metrics_port, scorer_port):
                for path in ("/healthz", "/readyz"):
                    url = f"http://127.0.0.1:{port}{path}"
                    with urllib.request.urlopen(url, timeout=5) as response:
                        assert response.status == 200, url
            url = f"http://127.0.0.1:{scorer_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                scorer_metrics = response.read().decode()
            assert f'recstream_scorer_model_info{{model_version="{version}"}} 1.0' in scorer_metrics
            assert "recstream_scorer_model_loaded_timestamp_seconds" in scorer_metrics
            worker.terminate()
    finally:
        scorer.terminate()
        if scorer.wait(30) is None:
            scorer.kill()
