"""``recstream bench stream --soak-s``: a short memory soak writes its figures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from recstream.processes import child_env, recstream_command

pytestmark = pytest.mark.integration


def test_bench_soak_reports_the_rss_slope(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # A reused --run-dir: the new broker's worker must not start on old state.
    # ... nor its broker on the last run's data (Kafka's topics).
    stale = tmp_path / "run" / "state" / "left-by-an-earlier-run"
    stale.mkdir(parents=True)
    stale_broker = tmp_path / "run" / "broker" / "left-by-an-earlier-run"
    stale_broker.mkdir(parents=True)
    engine = os.environ.get("RECSTREAM_TEST_ENGINE", "kafka")  # the broker fixture's
    cmd = recstream_command(
        "bench", "stream", "--soak-s", "20", "--soak-rate", "200", "--soak-sample-s", "2",
        "--partitions", "1", "--engine", engine, "--scorer-model", "cooccurrence",
        "--json", str(out), "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert isinstance(report["rss_slope_mb_per_min_worker"], float)
    assert isinstance(report["rss_slope_mb_per_min_worker_all"], float)
    # ... and the scorer's, sampled beside the worker's.
    assert report["scorer_model"] == "cooccurrence"
    assert isinstance(report["rss_slope_mb_per_min_scorer_last_half"], float)
    assert len(report["rss_samples_scorer"]) == len(report["rss_samples"])
    assert all(mb > 0 for _, mb in report["rss_samples_scorer"])
    assert "scorer RSS slope, last half" in done.stdout
    samples = report["rss_samples"]
    assert len(samples) >= 8  # one every 2 s over 20 s
    assert all(mb > 0 for _, mb in samples)
    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert report["soak_events"] == 4000 and report["backlog_at_end"] == 0
    assert report["soak_done_events_per_s"] > 0
    assert report["partitions"] == 1
    assert "RSS slope after warm-up" in done.stdout
    assert not stale.exists() and not stale_broker.exists()
    assert report["engine"] == engine
    # Where the figures came from, the engine's version among the versions.
    assert report["command"].startswith("recstream bench stream --soak-s 20")
    assert report["git_commit"] is None or len(report["git_commit"]) == 40
    assert report["machine"]["cpus"] >= 1
    assert report["versions"][engine] == {"kafka": "4.4.0", "tansu": "0.6.0"}[engine]


def test_bench_soak_refuses_both_engines(tmp_path: Path) -> None:
    cmd = recstream_command("bench", "stream", "--soak-s", "5", "--engine", "both",
                            "--run-dir", str(tmp_path / "run"))  # fmt: skip
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--engine both is for the stream benchmark" in done.stderr
    assert not (tmp_path / "run").exists()
