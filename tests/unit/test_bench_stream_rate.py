"""How ``bench stream`` turns the worker's counter samples into a sustained rate."""

from __future__ import annotations

import pytest

from bench.stream import sustained_rate


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
