"""Faults under load against the test broker: SIGKILL the scorer, pause the broker,
SIGKILL a Kafka node (the single node, or a cluster's busiest leader of ``events``).

The worker's SIGKILL is covered in test_worker.py (and here with static group
membership). The scenarios run through
``bench.faults.run_fault``, the code ``recstream bench faults`` runs: a real
worker and scorer process, events produced before, during and after the fault;
afterwards the worker's table and changelog are compared with what was sent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import KafkaAdminClient
from recstream.bench.faults import FaultBenchError, FaultLoad, out_of_sync, run_fault

from recstream.broker import Broker

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

LOAD = FaultLoad(users=50, rate=100.0, before_s=3.0, after_s=3.0, pause_s=5.0)
#: A node is down 3 s, then restarts on its data (~10-20 s for a JVM on two cores).
NODE_LOAD = replace(LOAD, down_s=3.0, recover_timeout_s=90.0, startup_timeout_s=90.0)


def _nothing_lost_nothing_twice(result: dict[str, Any]) -> None:
    assert result["events"] >= LOAD.rate * (LOAD.before_s + LOAD.after_s) * 0.5
    assert result["lost"] == 0
    assert result["double_applied"] == 0
    assert result["users_without_final_rec"] == 0  # every user's last event answered
    assert result["changelog_matches_table"]
    assert result["recovered_s"] is not None


# On Kafka only: the Tansu tier stays small (issue #29); `recstream bench faults
# --engine tansu` still runs the pause on Tansu.
@pytest.mark.parametrize("kind", ["scorer_kill", "broker_pause"])
def test_fault_loses_nothing_and_applies_nothing_twice(
    kind: str, broker: Broker, tmp_path: Path
) -> None:
    result = run_fault(kind, broker, tmp_path / kind, LOAD)
    log.warning("%s on %s: %s", kind, broker.engine, result)
    assert result["engine"] == broker.engine
    _nothing_lost_nothing_twice(result)
    # Only the one kill; and a paused broker is retried through, not a crash.
    assert result["crashes"] == []


@pytest.mark.parametrize("kind", ["worker_kill", "scorer_kill"])
def test_a_killed_static_member_comes_back_as_itself_and_loses_nothing(
    kind: str, broker: Broker, tmp_path: Path
) -> None:
    """RECSTREAM_GROUP_INSTANCE_ID reaches the broker: the restarted process joins
    under that name (Tansu makes the member id from it), and the fault's
    guarantees hold as with dynamic membership."""
    result = run_fault(kind, broker, tmp_path / kind, replace(LOAD, static_membership=True))
    log.warning("%s static: %s", kind, result)
    assert result["restarts"] == 1
    _nothing_lost_nothing_twice(result)
    process = "worker" if kind == "worker_kill" else "scorer"
    restarted = (tmp_path / kind / f"{process}-1.log").read_text()
    assert "with member_id bench-faults-0-" in restarted, restarted[-3000:]


def test_a_killed_kafka_broker_restarts_on_its_data_and_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    """broker_kill: SIGKILL the single Kafka node under load, start it again on its
    data; the worker and the scorer reconnect without crashing."""
    result = run_fault("broker_kill", broker, tmp_path / "broker_kill", NODE_LOAD)
    log.warning("broker_kill: %s", result)
    _nothing_lost_nothing_twice(result)
    assert result["crashes"] == [] and result["restarts"] == 0
    assert result["killed_node"] == 1 and result["restart_s"] > 0


def test_a_killed_leader_of_a_cluster_catches_up_and_nothing_is_lost(
    cluster: Broker, tmp_path: Path
) -> None:
    """leader_kill on three Kafka nodes: SIGKILL the node leading the most partitions
    of ``events`` under load (acks=all), restart it after 3 s. The worker and the
    scorer carry on, the node is back in every ISR, and every event sent is in the
    worker's table and changelog exactly once."""
    result = run_fault("leader_kill", cluster, tmp_path / "leader_kill", NODE_LOAD)
    log.warning("leader_kill: %s", result)
    _nothing_lost_nothing_twice(result)
    assert result["crashes"] == [] and result["restarts"] == 0
    killed = result["killed_node"]
    led = list(result["leaders_before"].values())
    assert led.count(killed) == max(led.count(n) for n in set(led))  # the busiest leader
    assert out_of_sync(cluster.bootstrap, killed) == []
    assert set(result["leaders_after"].values()) <= {1, 2, 3}  # every partition led
    # The worker's changelogs are replicated like the topics (not Faust's default of 1).
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        changelogs = [t for t in admin.describe_topics() if t["name"].endswith("-changelog")]
    finally:
        admin.close()
    assert changelogs
    assert {len(p["replica_nodes"]) for t in changelogs for p in t["partitions"]} == {3}


@pytest.mark.parametrize("kind", ["broker_kill", "leader_kill"])
def test_node_faults_are_refused_on_tansu_before_anything_starts(
    kind: str, tmp_path: Path
) -> None:
    tansu = SimpleNamespace(engine="tansu", bootstrap="127.0.0.1:1", partitions=4)
    with pytest.raises(FaultBenchError, match="needs --engine kafka: the Tansu broker keeps"):
        run_fault(kind, tansu, tmp_path, LOAD)  # type: ignore[arg-type]
    assert not (tmp_path / "worker-0.log").exists()
