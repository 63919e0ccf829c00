"""The trainer's validation gate (pure logic)."""

from __future__ import annotations

import math

from recstream.trainer.gate import decide


def m(ndcg: float) -> dict[str, float]:
    return {"ndcg@10": ndcg, "hr@10": ndcg * 2}


def test_first_version_is_published() -> None:
    d = decide(m(0.1), None, tolerance=0.0, n_cases=0, min_cases=50)
    assert d.publish and d.reason == "first_version"


def test_not_worse_within_tolerance_is_published() -> None:
    assert decide(m(0.30), m(0.30), tolerance=0.0, n_cases=100).reason == "not_worse"
    d = decide(m(0.295), m(0.30), tolerance=0.01, n_cases=100)
    assert d.publish and "0.2950" in d.detail and "0.3000" in d.detail


def test_worse_beyond_tolerance_is_rejected() -> None:
    d = decide(m(0.25), m(0.30), tolerance=0.01, n_cases=100)
    assert not d.publish and d.reason == "worse_than_current"


def test_too_few_cases_to_compare_is_rejected() -> None:
    d = decide(m(0.9), m(0.1), tolerance=0.0, n_cases=3, min_cases=20)
    assert not d.publish and d.reason == "too_few_holdout"
    assert decide(None, m(0.1), tolerance=0.0, n_cases=0).reason == "too_few_holdout"


def test_diverged_training_is_rejected_even_without_a_current() -> None:
    d = decide(m(0.5), None, tolerance=0.0, n_cases=10, loss=math.nan)
    assert not d.publish and d.reason == "diverged"


def test_a_published_version_without_holdout_cases_is_not_replaced() -> None:
    """No case to measure on (every newest event a repeat) is no first version."""
    d = decide(None, None, tolerance=0.0, n_cases=0, has_current=True)
    assert not d.publish and d.reason == "too_few_holdout"
