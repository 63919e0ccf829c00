"""``bench.drift.run_drift`` on a tiny stream: the keys the hot-swap bench reads."""

from __future__ import annotations

import pytest
from recstream.bench.drift import run_drift

pytestmark = pytest.mark.slow


def test_run_drift_reports_both_models() -> None:
    r = run_drift(n_events=2000, n_users=100, n_items=80, n_chunks=2, warmup_epochs=2,
                  warmup_budget_s=2, chunk_epochs=1, chunk_budget_s=1)
    for key in ("online_hr10_finetuned", "online_hr10_frozen"):
        assert 0.0 <= r[key] <= 1.0
    assert len(r["chunks"]) == 2 and r["scored_events"] == sum(c["scored"] for c in r["chunks"])
    # Both start from one model: the first chunk is scored before any fine-tuning.
    assert r["chunks"][0]["hits_finetuned"] == r["chunks"][0]["hits_frozen"]
    assert r["items_finetuned"] >= r["items_frozen"]
