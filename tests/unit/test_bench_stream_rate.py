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


def _latency(points: list[tuple[float, float]]):
    """A replay's samples: (seconds after the first send, latency ms)."""
    from recstream.harness import Latency as _Latency

    lat = _Latency()
    for at_s, ms in points:
        lat.sample_sent_ms.append(1e12 + 1000 * at_s)
        lat.samples_ms.append(ms)
    return lat


def test_p99_per_minute_and_its_slope() -> None:
    from recstream.bench.stream import _p99_trend

    # 100 samples a minute at 10, 20, 30 ms; the last minute partial (5 samples)
    points = [(60 * m + 0.5 * i, 10.0 * (m + 1)) for m in range(3) for i in range(100)]
    points += [(180 + i, 40.0) for i in range(5)]
    trend = _p99_trend(_latency(points))
    assert trend["p99_ms_per_minute"] == [10.0, 20.0, 30.0, 40.0]
    assert trend["p99_slope_ms_per_min"] == pytest.approx(10.0)


def test_p99_trend_of_one_minute_or_none() -> None:
    from recstream.bench.stream import _p99_trend

    assert _p99_trend(_latency([(0.0, 5.0), (30.0, 7.0)])) == {
        "p99_ms_per_minute": [7.0], "p99_slope_ms_per_min": None,
    }  # fmt: skip
    assert _p99_trend(_latency([])) == {"p99_ms_per_minute": [], "p99_slope_ms_per_min": None}
    # a minute without samples in between is None, and left out of the slope
    trend = _p99_trend(_latency([(0.0, 10.0), (130.0, 30.0), (175.0, 30.0)]))
    assert trend["p99_ms_per_minute"] == [10.0, None, 30.0]
    assert trend["p99_slope_ms_per_min"] == pytest.approx(10.0)


def test_a_short_last_minute_is_listed_but_not_in_the_slope() -> None:
    from recstream.bench.stream import _p99_trend

    # Ten flat minutes, then 2 stragglers sent 0.5 s into an eleventh.
    points = [(6.0 * i, 100.0) for i in range(100)] + [(600.0, 5000.0), (600.5, 5000.0)]
    trend = _p99_trend(_latency(points))
    assert trend["p99_ms_per_minute"] == [100.0] * 10 + [5000.0]
    assert trend["p99_slope_ms_per_min"] == pytest.approx(0.0)


def test_at_cap_records_fill_every_user_then_go_on_in_time_order() -> None:
    import orjson
    from recstream.bench.stream_at_cap import at_cap_records

    prefill, timed = at_cap_records(users=7, cap=5, events=20, seed=3)
    assert len(prefill) == 35 and len(timed) == 20
    before = [orjson.loads(v) for _, v in prefill]
    after = [orjson.loads(v) for _, v in timed]
    assert all(k.decode() == e["user_id"] for (k, _), e in zip(prefill + timed, before + after, strict=True))
    per_user: dict[str, list[int]] = {}
    for e in before:
        per_user.setdefault(e["user_id"], []).append(e["ts"])
    assert len(per_user) == 7 and all(len(ts) == 5 for ts in per_user.values())
    for e in after:  # every timed event is newer than its user's whole prefill
        assert e["ts"] >= max(per_user[e["user_id"]])
    ids = [e["event_id"] for e in before + after]
    assert len(set(ids)) == len(ids)


def test_engine_and_at_cap_settings_are_checked() -> None:
    from recstream.bench.soak import SoakConfig
    from recstream.bench.stream import StreamBenchConfig

    assert StreamBenchConfig().engine == "auto"
    with pytest.raises(ValueError, match="--engine"):
        StreamBenchConfig(engine="both")  # the CLI runs each engine's config in turn
    with pytest.raises(ValueError, match="--at-cap-users"):
        StreamBenchConfig(at_cap_users=0)
    with pytest.raises(ValueError, match="--engine"):
        SoakConfig(seconds=1, engine="redpanda")


def test_provenance_names_the_command_code_machine_and_engines() -> None:
    from recstream.bench.provenance import provenance

    found = provenance(["kafka", "tansu"])
    assert found["command"].startswith("recstream")
    assert found["argv"]
    assert found["git_commit"] is None or len(found["git_commit"]) == 40
    assert found["machine"]["cpus"] and found["machine"]["cpu"]
    versions = found["versions"]
    assert versions["kafka"] == "4.4.0" and versions["tansu"] == "0.6.0"
    assert versions["aiokafka"] and versions["faust-streaming"] and versions["python"]
    assert "kafka" not in provenance(["tansu"])["versions"]
