"""``recstream bench api`` end to end, short: its keys, no 5xx, no retired item after,
a new item recommended."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from recstream.bench.api import ApiBenchOptions, run_api_bench

pytestmark = pytest.mark.integration


def test_bench_api_reports_latency_and_retirement(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    report = run_api_bench(ApiBenchOptions(json_out=out, run_dir=tmp_path / "run",
                                           engine=os.environ.get("RECSTREAM_TEST_ENGINE", "kafka"), rate=100,
                                           events_rate=100, seconds=4, users=100,
                                           train_budget_s=15))  # fmt: skip
    assert json.loads(out.read_text()) == report and report["command"]
    assert report["requests"] == 400 and report["errors_5xx"] == 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["baseline_healthz_p99_ms"] > 0
    assert report["lists_after_retirement"] > 0 and report["retired_violations"] == 0
    assert report["train_s"] > 0 and report["new_item"] == "bench-new-item"
    # Ranked within seconds; whether a list of this short, small run holds it is
    # the model's choice (null then: none within the wait).
    assert report["new_item_ranked_s"] is not None and 0 <= report["new_item_ranked_s"] < 10
    assert report["new_item_s"] is None or report["new_item_s"] >= 0
