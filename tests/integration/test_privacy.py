"""User deletion through the real worker process: the user is gone from RocksDB and
the changelog, later events start from empty, bad deletion records go to the DLQ."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from pathlib import Path

import orjson
import pytest
from recstream.schemas import DeadLetter, ScoreRequest
from recstream.schemas.topics import EVENTS_DLQ, SCORE_REQUESTS, USER_DELETIONS
from recstream.stream.agents import user_partition
from test_worker import T0, expected_states, make_event

from recstream.broker import Broker
from recstream.processes import WorkerProcess, worker_env
from recstream.readback import (
    consume_all,
    latest_changelog_states,
    produce,
    read_table,
    wait_committed,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PARTITIONS = 4


def deletion(user: str) -> bytes:
    return orjson.dumps({"user_id": user, "requested_ms": T0})


def wrong_key_for(user: str) -> bytes:
    """A key that places a record on another partition than ``user``'s."""
    mine = user_partition(user.encode(), PARTITIONS)
    return next(
        k
        for k in (f"other-{i}".encode() for i in range(100))
        if user_partition(k, PARTITIONS) != mine
    )


def test_user_deletion_forgets_the_user(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    users = [f"user-{u}" for u in range(12)]
    deleted = users[:4]  # users[3] is deleted through a wrongly keyed record
    sent: dict[str, dict[str, dict]] = {}

    def events(tag: str, who: list[str], n: int, t: int) -> list[tuple[bytes, bytes]]:
        out = []
        for user in who:
            for i in range(n):
                raw = make_event(f"{tag}-{user}-{i}", user, t + i, f"item-{i % 7}")
                out.append((user.encode(), raw))
                sent.setdefault(user, {})[f"{tag}-{user}-{i}"] = orjson.loads(raw)
        return out

    first = events("before", users, 8, T0)
    bad = [
        (b"user-5", b'{"user_id": "user-5"'),  # broken JSON
        (b"user-5", orjson.dumps({"requested_ms": T0})),  # no user_id
        (b"user-5", orjson.dumps({"user_id": 5, "requested_ms": T0})),  # wrong type
        (b"user-5", b""),  # empty
    ]
    env = worker_env(recstream_env, tmp_path / "state")
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        ends = produce(broker.bootstrap, first)
        worker.wait_metric("recstream_worker_events_applied_total", len(first), timeout_s=90)

        requests = [(u.encode(), deletion(u)) for u in deleted[:3]]
        requests.append((wrong_key_for(deleted[3]), deletion(deleted[3])))
        del_ends = produce(broker.bootstrap, requests + bad, topic=USER_DELETIONS)
        worker.wait_metric("recstream_worker_users_deleted_total", len(deleted), timeout_s=90)
        for user in deleted:
            sent.pop(user)  # forgotten: the model starts them over

        second = events("after", deleted + users[-2:], 3, T0 + 1000)
        ends2 = produce(broker.bootstrap, second)
        all_ends = {**del_ends}
        for tp in ends.keys() | ends2.keys():
            all_ends[tp] = max(ends.get(tp, 0), ends2.get(tp, 0))
        wait_committed(broker.bootstrap, all_ends, timeout_s=120, worker=worker)
        metrics = worker.metrics()
        worker.terminate()

    assert metrics["recstream_worker_users_deleted_total"] == len(deleted)
    assert metrics["recstream_worker_events_repartitioned_total"] >= 1

    want = expected_states(sent, 200)
    for user in deleted:  # only what came after the deletion
        assert want[user].event_ids == [f"after-{user}-{i}" for i in range(3)]
    assert read_table(tmp_path / "state", PARTITIONS) == want
    # a restore from the changelog does not bring the old events back
    assert latest_changelog_states(broker.bootstrap) == want

    # the score request of a deleted user's next event holds nothing from before
    last: dict[str, ScoreRequest] = {}
    for record in consume_all(broker.bootstrap, [SCORE_REQUESTS]):
        request = ScoreRequest.model_validate_json(record.value)
        last[request.user_id] = request
    for user in deleted:
        assert last[user].items == want[user].items
        assert set(last[user].exclude) <= {f"item-{i}" for i in range(3)}

    letters = [
        DeadLetter.model_validate_json(r.value) for r in consume_all(broker.bootstrap, [EVENTS_DLQ])
    ]
    assert Counter(d.reason for d in letters) == Counter(
        {"deletion_bad_json": 1, "deletion_schema": 2, "deletion_empty": 1}
    )
    assert all(d.source_topic == USER_DELETIONS for d in letters)
    assert sorted(base64.b64decode(d.original_b64) for d in letters) == sorted(v for _, v in bad)
