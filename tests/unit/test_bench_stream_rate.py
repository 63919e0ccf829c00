"""How ``bench stream`` turns the worker's counter samples into a sustained rate."""

from __future__ import annotations

import os

import pytest

from bench.stream import _batch_figures, sustained_rate
from bench.stream_io import cpu_seconds


def test_sustained_rate_excludes_start_up_and_tail() -> None:
    # idle for 10 s (start-up), then 1000 events/s for 10 s, then a slow tail
    samples = [(float(t), 0.0) for t in range(11)]
    samples += [(10.0 + t, 1000.0 * t) for t in range(1, 11)]
    samples += [(25.0, 10_000.0)]
    rate, overall = sustained_rate(samples, 10_000)
    assert rate == pytest.approx(1000.0)
    assert overall == pytest.approx(1000.0)  # first batch began after the last 0 sample


def test_sustained_rate_of_a_tiny_run_is_the_overall_rate() -> None:
    rate, overall = sustained_rate([(0.0, 0.0), (0.5, 2000.0)], 2000)
    assert rate == overall == pytest.approx(4000.0)


def test_batch_figures_are_means_of_the_worker_histograms() -> None:
    metrics = {
        "recstream_worker_batch_size_count": 4.0,
        "recstream_worker_batch_size_sum": 2000.0,
        "recstream_worker_batch_seconds_sum": 0.1,
    }
    assert _batch_figures(metrics) == {
        "batches": 4,
        "batch_events_mean": 500,
        "batch_ms_mean": 25.0,
    }
    assert _batch_figures({})["batch_ms_mean"] is None


def test_cpu_seconds_of_this_process() -> None:
    used = cpu_seconds(os.getpid())
    assert used is not None and used > 0
    assert cpu_seconds(2**22 + 12345) is None  # no such process


def test_scorer_model_is_a_keyword_or_a_model_folder(tmp_path) -> None:
    from bench.stream import StreamBenchConfig

    assert StreamBenchConfig().scorer_model == "sequence"
    assert StreamBenchConfig(scorer_model="cooccurrence").scorer_model == "cooccurrence"
    assert StreamBenchConfig(scorer_model=str(tmp_path)).scorer_model == str(tmp_path)
    with pytest.raises(ValueError, match="--scorer-model must be sequence or cooccurrence"):
        StreamBenchConfig(scorer_model=str(tmp_path / "missing"))
