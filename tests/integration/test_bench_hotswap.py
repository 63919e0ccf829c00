"""``recstream bench hotswap`` (README) on tiny settings: a real broker (the test
engine: Kafka unless RECSTREAM_TEST_ENGINE says otherwise) and scorer, two swaps
under a steady stream, nothing lost, every key of the report present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recstream.bench.hotswap import HotswapConfig, TinyModel, format_table, run_hotswap_bench

pytestmark = pytest.mark.integration

KEYS = {"lost", "swaps", "p50_steady_ms", "p99_steady_ms", "p50_swap_ms", "p99_swap_ms",
        "swap_s", "freshness_s", "freshness_kind", "requests", "steady_requests",
        "swap_requests", "duplicates", "versions_in_order", "engine"}


def test_bench_hotswap_tiny(tmp_path: Path) -> None:
    engine = os.environ.get("RECSTREAM_TEST_ENGINE", "kafka")
    # The torch backend: no ONNX export per version (tens of seconds each here).
    cfg = HotswapConfig(swaps=2, rate=40.0, steady_s=3.0, warmup_s=1.0, seq_len=8,
                        backend="torch", batch=32, k=5, engine=engine,
                        shape=TinyModel(n_items=80, max_len=12, d_model=16, n_heads=1,
                                        n_layers=1, text_dim=8))
    report = run_hotswap_bench(cfg, tmp_path)
    assert KEYS <= report.keys(), KEYS - report.keys()
    assert report["engine"] == engine
    assert report["lost"] == 0 and report["duplicates"] == 0
    assert report["swaps"] == report["swaps_counted_by_scorer"] == 2
    assert report["versions_in_order"] is True
    assert report["freshness_kind"] == "publish_to_first_served"
    assert report["freshness_s"] > 0 and report["swap_s"] > 0
    assert report["steady_requests"] > 0 and report["swap_requests"] > 0
    assert report["p99_steady_ms"] >= report["p50_steady_ms"] > 0
    assert format_table(report).row_count == 2
