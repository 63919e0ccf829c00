"""How ``bench stream`` turns the worker's counter samples into a sustained rate."""

from __future__ import annotations

import os
import time

import pytest
from recstream.bench.stream import _batch_figures, sustained_rate
from recstream.bench.stream_io import CpuSampler, cpu_seconds


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


def test_cpu_sampler_cuts_cpu_into_intervals() -> None:
    sampler = CpuSampler({"a": 1, "b": 2})
    # a: one core busy from 1 s on; b: idle, then unreadable (exited) at 3 s
    sampler.samples = [
        (0.0, {"a": 0.0, "b": 5.0}),
        (1.0, {"a": 0.0, "b": 5.0}),
        (2.0, {"a": 1.0, "b": 5.0}),
        (3.0, {"a": 2.0, "b": None}),
    ]
    assert sampler.pct_between(0.0, 1.0) == {"a": 0.0, "b": 0.0}
    assert sampler.pct_between(1.0, 3.0) == {"a": 100.0, "b": None}
    # between samples: from the one before the start to the one after the end
    assert sampler.pct_between(0.5, 1.5) == {"a": 50.0, "b": 0.0}
    # past the last sample: nothing to measure
    assert sampler.pct_between(3.5, 4.0) == {"a": None, "b": None}
    # the whole replay: first sample to last
    assert sampler.pct_overall() == {"a": pytest.approx(66.7), "b": None}


def test_cpu_sampler_samples_a_live_process() -> None:
    with CpuSampler({"me": os.getpid()}, every_s=0.05) as sampler:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # busy: this process uses CPU meanwhile
            pass
    assert len(sampler.samples) >= 3  # the first, some in the thread, the last
    first, last = sampler.samples[0][0], sampler.samples[-1][0]
    pct = sampler.pct_between(first, last)["me"]
    assert pct is not None and pct > 0


def test_scorer_model_is_a_keyword_or_a_model_folder(tmp_path) -> None:
    from recstream.bench.stream import StreamBenchConfig

    assert StreamBenchConfig().scorer_model == "sequence"
    assert StreamBenchConfig(scorer_model="cooccurrence").scorer_model == "cooccurrence"
    assert StreamBenchConfig(scorer_model=str(tmp_path)).scorer_model == str(tmp_path)
    with pytest.raises(ValueError, match="--scorer-model must be sequence or cooccurrence"):
        StreamBenchConfig(scorer_model=str(tmp_path / "missing"))
