"""``recstream bench stream`` end to end on a tiny replay: real brokers, worker and scorer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from recstream.processes import child_env, recstream_command

pytestmark = pytest.mark.integration

KEYS = (
    "events_per_s",
    "ceiling_events_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "rss_mb_worker",
    "rss_mb_scorer",
    "lost",
    "events",
    "duration_s",
    "engine",
    "p99_ms_per_minute",
    "p99_slope_ms_per_min",
)
#: Where every report came from (recstream.bench.provenance).
PROVENANCE = ("command", "argv", "git_commit", "git_dirty", "machine", "versions")


def _engine() -> str:
    """The engine of the ``broker`` fixture (tests/conftest.py): Kafka unless told."""
    return os.environ.get("RECSTREAM_TEST_ENGINE", "kafka")


def _engine_versions(report: dict, engines: set[str]) -> None:
    versions = report["versions"]
    assert ("kafka" in engines) == (versions.get("kafka") == "4.4.0")
    assert ("tansu" in engines) == (versions.get("tansu") == "0.6.0")
    assert versions["aiokafka"] and versions["faust-streaming"] and versions["python"]
    assert report["machine"]["cpus"] >= 1 and report["command"].startswith("recstream bench stream")


def test_bench_stream_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    # A reused --run-dir: each phase's new broker gets a worker on empty state.
    # ... and each phase's broker its data folder (Kafka's topics of the last run).
    stale = [tmp_path / "run" / name / "left-by-an-earlier-run"
             for name in ("state-1", "state-2", "state-3", "broker-1", "broker-2", "broker-3")]
    for path in stale:
        path.mkdir(parents=True)
    # ... and the served model an earlier run built there, which this run replaces.
    old_model = tmp_path / "run" / "sequence-model"
    old_model.mkdir()
    (old_model / "left-by-an-earlier-run").write_text("")
    cmd = recstream_command(
        "bench", "stream", "--events", "2000", "--latency-seconds", "3", "--latency-rate", "200",
        "--producer-linger-ms", "3", "--fetch-wait-ms", "35",
        "--partitions", "2", "--engine", _engine(),
        "--at-cap", "--at-cap-users", "20", "--at-cap-events", "2000",
        "--json", str(out), "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(KEYS) <= set(report)
    assert set(PROVENANCE) <= set(report)
    assert report["engine"] == _engine()
    _engine_versions(report, {_engine()})
    assert "--at-cap" in report["command"] and "--at-cap" in report["argv"]
    # The p99 of each minute of the replay: 3 s are one partial minute, no slope yet.
    assert report["p99_ms_per_minute"] == [report["p99_ms"]]
    assert report["p99_slope_ms_per_min"] is None
    # At the cap: every user held RECSTREAM_MAX_SEQ_LEN events before the timed replay.
    assert report["max_seq_len"] == 200
    assert report["at_cap_users"] == report["at_cap_users_full"] == 20
    assert report["at_cap_prefill_events"] == 20 * 200 and report["at_cap_events"] == 2000
    assert report["events_per_s_at_cap"] > 0
    # (a tiny backlog may be half done before the first CPU reading: >= 0, not > 0)
    assert report["cpu_us_per_event_at_cap"] is not None and report["cpu_us_per_event_at_cap"] >= 0
    assert report["lost_at_cap"] == 0 and report["duplicates_at_cap"] == 0
    assert report["events"] == 2000
    assert report["lost"] == 0 and report["dlq"] == 0
    assert report["users_without_final_rec"] == 0
    assert report["events_per_s"] > 0 and report["ceiling_events_per_s"] > 0
    assert report["latency_samples"] > 0
    assert report["latency_rate_events_per_s"] == 200.0  # --latency-rate, not half the max
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["rss_mb_worker"] > 0 and report["rss_mb_scorer"] > 0
    # Where the time goes: the three segments add up to the whole, at the median roughly.
    seg = report["latency_segments_ms"]
    assert set(seg) == {"to_worker", "worker_to_scorer_send", "scorer_send_to_reader"}
    assert all(s["p50"] is not None and s["p50"] <= s["p99"] for s in seg.values())
    assert sum(s["p50"] for s in seg.values()) <= 2 * report["p99_ms"]
    # The latency over the replay, and who used the CPU meanwhile (README: Benchmarks).
    by_interval = report["latency_by_interval_ms"]
    assert by_interval and sum(i["samples"] for i in by_interval) == report["latency_samples"]
    assert [i["from_s"] for i in by_interval] == sorted(i["from_s"] for i in by_interval)
    assert all(set(i["segments_p99"]) == set(seg) for i in by_interval)  # which hop, per interval
    # ... and which process's CPU, per interval (the first one is a full one).
    assert all(set(i["cpu_pct"]) == set(report["cpu_pct_latency"]) for i in by_interval)
    assert all(pct is not None and pct > 0 for pct in by_interval[0]["cpu_pct"].values())
    assert set(report["cpu_pct_latency"]) == {"broker", "worker", "scorer", "bench"}
    assert all(pct is not None and pct > 0 for pct in report["cpu_pct_latency"].values())
    # The batches the broker stored in the topics read during the replay: events
    # hold every replayed event (plus the warm-up), and no topic more batches than records.
    assert report["latency_producer_linger_ms"] == 3
    # --fetch-wait-ms reached the consumers on the path: the worker's and the scorer's say so.
    assert report["fetch_wait_ms"] == 35
    run = tmp_path / "run"
    assert "consumer fetch wait 35 ms" in (run / "worker-2.log").read_text()
    scorer_log = (run / "scorer.log").read_text()
    assert "fetch wait 35 ms" in scorer_log
    # The latency is the sequence model's, through ONNX Runtime, not the fallback's.
    assert report["scorer_model"] == "sequence" and report["scorer_ort_spin"] == "0"
    assert "scored by the onnxruntime backend on cpu" in scorer_log
    stored = report["stored_batches"]
    assert set(stored) == {"events", "score-requests", "recommendations"}
    assert stored["events"]["records"] >= report["latency_events"]
    assert all(0 < s["batches"] <= s["records"] for s in stored.values())
    # --partitions made the topics the broker serves, not just the report's field.
    assert report["partitions"] == 2
    assert all(s["partitions"] == 2 for s in stored.values())
    assert "events/s into the table" in done.stdout and "events/s at the cap" in done.stdout
    assert not any(path.exists() for path in stale)
    assert not (old_model / "left-by-an-earlier-run").exists()
    assert (old_model / "config.json").is_file()


def test_bench_stream_on_both_engines(tmp_path: Path) -> None:
    """``--engine both``: the whole benchmark on Tansu, then on Kafka, side by side."""
    out = tmp_path / "both.json"
    cmd = recstream_command(
        "bench", "stream", "--engine", "both", "--events", "1000", "--latency-seconds", "2",
        "--latency-rate", "200", "--partitions", "1", "--scorer-model", "cooccurrence",
        "--json", str(out), "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["engines"]) == {"tansu", "kafka"}
    assert set(PROVENANCE) <= set(report)
    _engine_versions(report, {"tansu", "kafka"})
    for engine, figures in report["engines"].items():
        assert set(KEYS) <= set(figures)
        assert figures["engine"] == engine
        assert figures["events"] == 1000 and figures["lost"] == 0
        assert figures["run_dir"] == str(tmp_path / "run" / engine)
    # One table, a column per engine.
    header = next(line for line in done.stdout.splitlines() if "measure" in line)
    assert header.index("tansu") < header.index("kafka")
