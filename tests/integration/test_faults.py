"""Faults under load against the test broker: SIGKILL the scorer, pause the broker.

The worker's SIGKILL is covered in test_worker.py (and here with static group
membership). The scenarios run through
``bench.faults.run_fault``, the code ``recstream bench faults`` runs: a real
worker and scorer process, events produced before, during and after the fault.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from recstream.bench.faults import FaultLoad, run_fault

from recstream.broker import Broker

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

LOAD = FaultLoad(users=50, rate=100.0, before_s=3.0, after_s=3.0, pause_s=5.0)


@pytest.mark.parametrize("kind", ["scorer_kill", "broker_pause"])
def test_fault_loses_nothing_and_applies_nothing_twice(
    kind: str, broker: Broker, tmp_path: Path
) -> None:
    result = run_fault(kind, broker, tmp_path / kind, LOAD)
    log.warning("%s: %s", kind, result)
    assert result["events"] >= LOAD.rate * (LOAD.before_s + LOAD.after_s) * 0.5
    assert result["lost"] == 0
    assert result["double_applied"] == 0
    assert result["users_without_final_rec"] == 0  # every user's last event answered
    assert result["changelog_matches_table"]
    assert result["recovered_s"] is not None
    if kind in ("scorer_kill", "broker_pause"):
        # Only the one kill; and a paused broker is retried through, not a crash.
        assert result["crashes"] == []


@pytest.mark.parametrize("kind", ["worker_kill", "scorer_kill"])
def test_a_killed_static_member_comes_back_as_itself_and_loses_nothing(
    kind: str, broker: Broker, tmp_path: Path
) -> None:
    """RECSTREAM_GROUP_INSTANCE_ID reaches the broker: the restarted process joins
    under that name (Tansu makes the member id from it), and the fault's
    guarantees hold as with dynamic membership."""
    from dataclasses import replace

    result = run_fault(kind, broker, tmp_path / kind, replace(LOAD, static_membership=True))
    log.warning("%s static: %s", kind, result)
    assert result["restarts"] == 1
    assert result["lost"] == 0
    assert result["double_applied"] == 0
    assert result["users_without_final_rec"] == 0
    assert result["changelog_matches_table"]
    assert result["recovered_s"] is not None
    process = "worker" if kind == "worker_kill" else "scorer"
    restarted = (tmp_path / kind / f"{process}-1.log").read_text()
    assert "with member_id bench-faults-0-" in restarted, restarted[-3000:]
