"""The real worker process against a real broker (Kafka; Tansu where marked), with RocksDB state.

Each test starts ``python -m recstream.stream.worker`` as a child process, produces with
kafka-python, and checks what the worker left behind: its RocksDB files (after
it stopped), the changelog, the score requests and the DLQ.
"""

from __future__ import annotations

import base64
import logging
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from recstream.schemas import DeadLetter, ScoreRequest
from recstream.schemas.topics import EVENTS_DLQ, SCORE_REQUESTS
from recstream.stream.sequence import UserSequence

from recstream.broker import Broker, EmbeddedBroker
from recstream.processes import (
    WorkerProcess,
    fresh_state_dir,
    recstream_command,
    wait_for,
    worker_env,
)
from recstream.readback import (
    consume_all,
    latest_changelog_states,
    produce,
    read_table,
    wait_committed,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

T0 = 1_700_000_000_000
PARTITIONS = 4
KINDS = ("view", "click", "cart", "purchase", "rate")


def make_event(event_id: str, user: str, ts: int, item: str, kind: str = "view") -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "user_id": user, "item_id": item, "event_type": kind, "ts": ts}
    )


def expected_states(events: dict[str, dict[str, dict]], max_len: int) -> dict[str, UserSequence]:
    """Independent of stream.sequence: distinct events by id, newest ``max_len`` by ts.

    Valid because every user's time stamps are distinct (then arrival order
    cannot matter).
    """
    out = {}
    for user, by_id in events.items():
        kept = sorted(by_id.values(), key=lambda e: e["ts"])[-max_len:]
        out[user] = UserSequence(
            [e["event_id"] for e in kept],
            [e["item_id"] for e in kept],
            [e["event_type"] for e in kept],
            [e["ts"] for e in kept],
        )
    return out


def test_worker_end_to_end(
    broker: EmbeddedBroker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(7)
    max_len, users, per_user = 30, 40, 45
    env = worker_env(recstream_env, tmp_path / "state", RECSTREAM_MAX_SEQ_LEN=str(max_len))
    records: list[tuple[bytes | None, bytes]] = []
    sent: dict[str, dict[str, dict]] = {}

    def add(key: bytes | None, user: str, event_id: str, ts: int) -> None:
        kind = KINDS[rng.randrange(len(KINDS))]
        raw = make_event(event_id, user, ts, f"item-{rng.randrange(60)}", kind)
        records.append((key, raw))
        sent.setdefault(user, {})[event_id] = orjson.loads(raw)

    for u in range(users):
        user = f"user-{u}"
        # distinct time stamps, in a shuffled order: many late events
        stamps = [T0 + 10 * i for i in range(per_user)]
        rng.shuffle(stamps)
        for i, ts in enumerate(stamps):
            add(user.encode(), user, f"{user}-e{i}", ts)
    # keyless events land on random partitions: some must be rerouted. Newer
    # than the rest (so truncation keeps them) and distinct in time.
    for i in range(20):
        user = f"user-{rng.randrange(users)}"
        add(None, user, f"{user}-keyless-{i}", T0 + 10 * per_user + 10 * i)
    rng.shuffle(records)  # users interleave; one user's order is still random
    duplicates = rng.sample(records, 60)  # redelivered by a producer, byte for byte
    bad = [
        (b"user-1", b"{this is not json"),
        (b"user-1", b""),
        (b"user-2", orjson.dumps({"event_id": "x", "user_id": "user-2"})),
        (b"user-3", make_event("bad-kind", "user-3", T0, "item-1", "teleport")),
        (b"user-4", make_event("future", "user-4", T0 * 3, "item-1")),
    ]
    valid_records = len(records) + len(duplicates)

    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        ready_s = worker.wait_ready()
        ends = produce(broker.bootstrap, records + duplicates + bad)

        def settled() -> bool:
            m = worker.metrics()
            done = m.get("recstream_worker_events_applied_total", 0) + m.get(
                "recstream_worker_events_duplicate_total", 0
            )
            return done >= valid_records

        took_s = wait_for(settled, 60, "every valid event applied or deduplicated")
        wait_committed(broker.bootstrap, ends, worker=worker)
        # An operator's SIGUSR1: every thread's and task's stack into the log, and on.
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGUSR1)
        dumped = tmp_path / "worker.log"
        wait_for(lambda: "TASKS" in dumped.read_text(errors="replace"), 20, "a task dump")
        assert "_drain_messages" in dumped.read_text(errors="replace")  # the fetch loop's
        metrics = worker.metrics()
        assert worker.alive
        stop_s = worker.terminate()
    log.warning(
        "worker ready in %.1fs; %d records done %.1fs after they were produced; stopped in %.1fs",
        ready_s,
        valid_records + len(bad),
        took_s,
        stop_s,
    )

    want = expected_states(sent, max_len)
    distinct = sum(len(v) for v in sent.values())
    assert (
        metrics["recstream_worker_events_applied_total"]
        + metrics["recstream_worker_events_duplicate_total"]
        == valid_records
    )
    assert metrics["recstream_worker_events_duplicate_total"] >= valid_records - distinct
    assert metrics["recstream_worker_events_repartitioned_total"] >= 1
    # the keyless events survive truncation, so the state check below covers them
    keyless = {e for ids in sent.values() for e in ids if "keyless" in e}
    assert len(keyless) == 20
    assert keyless <= {e for state in want.values() for e in state.event_ids}
    assert metrics["recstream_worker_ready"] == 1.0

    # state: the RocksDB files, each user on its own partition (read_table checks)
    assert read_table(tmp_path / "state", PARTITIONS) == want
    # and what a restore would give: the last changelog value per user
    assert latest_changelog_states(broker.bootstrap) == want

    # score requests: every user, the last one matching the final state
    last: dict[str, ScoreRequest] = {}
    for record in consume_all(broker.bootstrap, [SCORE_REQUESTS]):
        request = ScoreRequest.model_validate_json(record.value)
        assert record.key == request.user_id.encode()
        last[request.user_id] = request  # one user, one partition: in order
    assert set(last) == set(want)
    for user, request in last.items():
        state = want[user]
        assert (request.items, request.ts, request.event_types) == (
            state.items,
            state.ts,
            state.event_types,
        )
        assert request.exclude == list(dict.fromkeys(state.items))
        assert request.trigger_event_id in sent[user]

    # the DLQ: every bad record with its reason, source offset and original bytes
    letters = [
        DeadLetter.model_validate_json(r.value) for r in consume_all(broker.bootstrap, [EVENTS_DLQ])
    ]
    assert Counter(d.reason for d in letters) == Counter(
        {"bad_json": 1, "empty": 1, "schema": 2, "ts_future": 1}
    )
    assert sorted(base64.b64decode(d.original_b64) for d in letters) == sorted(v for _, v in bad)
    assert all(d.source_topic == "events" and d.source_offset >= 0 for d in letters)


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    broker: EmbeddedBroker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    # Many short sequences: the per-user cost grows with the sequence length,
    # and this test is about delivery, not long windows.
    users, first_wave, second_wave = 300, 40, 5
    env = worker_env(recstream_env, tmp_path / "state")  # max_seq_len 200 > 45 per user
    sent: dict[str, dict[str, dict]] = {}

    def wave(name: str, n: int, offset_ms: int) -> list[tuple[bytes, bytes]]:
        out = []
        for i in range(n):
            for u in range(users):
                user = f"user-{u}"
                raw = make_event(
                    f"{name}-{u}-{i}", user, T0 + offset_ms + i, f"item-{(u + i) % 97}"
                )
                out.append((user.encode(), raw))
                sent.setdefault(user, {})[f"{name}-{u}-{i}"] = orjson.loads(raw)
        return out

    ends1 = produce(broker.bootstrap, wave("w1", first_wave, 0))
    total1 = users * first_wave
    with WorkerProcess(env, tmp_path / "worker-1.log") as worker:
        worker.wait_ready()
        worker.wait_metric("recstream_worker_events_applied_total", 2000, interval_s=0.02)
        applied_at_kill = worker.metric("recstream_worker_events_applied_total")
        worker.kill()  # SIGKILL: no flush, no commit, no goodbye
    assert worker.returncode() == -9
    assert applied_at_kill < total1, "the worker finished before the kill: produce more"

    with WorkerProcess(env, tmp_path / "worker-2.log") as worker:
        worker.wait_ready()
        ends2 = produce(broker.bootstrap, wave("w2", second_wave, 1_000_000))
        ends = {tp: max(ends1.get(tp, 0), ends2.get(tp, 0)) for tp in ends1.keys() | ends2.keys()}
        wait_committed(broker.bootstrap, ends, timeout_s=120, worker=worker)
        redelivered = worker.metric("recstream_worker_events_duplicate_total")
        worker.terminate()
    log.warning(
        "killed with %d of %d events applied; the restarted worker skipped %d redelivered ones",
        applied_at_kill,
        total1,
        redelivered,
    )

    want = expected_states(sent, 200)
    assert read_table(tmp_path / "state", PARTITIONS) == want  # every event once, in order
    assert latest_changelog_states(broker.bootstrap) == want


@pytest.mark.parametrize(
    "argv", [[sys.executable, "-m", "recstream.stream.worker"], recstream_command("worker")],
    ids=["python-m-stream.worker", "recstream-worker"],
)  # fmt: skip
def test_worker_refuses_topics_of_another_partition_count(
    broker: EmbeddedBroker, recstream_env: dict[str, str], tmp_path: Path, argv: list[str]
) -> None:
    # The broker's topics have 4 partitions; a worker told 8 would misplace users.
    env = worker_env(recstream_env, tmp_path / "state", RECSTREAM_PARTITIONS="8")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "RECSTREAM_PARTITIONS=8" in text and "events has 4" in text, text
    assert "score-requests has 4" in text and "user-deletions has 4" in text, text


@pytest.mark.tansu
def test_worker_refuses_state_from_an_earlier_broker_and_starts_on_fresh_state(
    broker: EmbeddedBroker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    """Tansu keeps nothing across restarts: RocksDB state written
    against one is ahead of the next one's changelog. Both entry points refuse
    with what to do (exit 2), and the folder the benches and the demo empty with
    ``fresh_state_dir`` before a run starts the worker cleanly."""
    state = tmp_path / "state"
    with WorkerProcess(worker_env(recstream_env, state), tmp_path / "first.log") as first:
        first.wait_ready()
        sent = [(f"u{i % 7}".encode(), make_event(f"e{i}", f"u{i % 7}", T0 + i, f"i{i}"))
                for i in range(60)]  # fmt: skip
        wait_committed(broker.bootstrap, produce(broker.bootstrap, sent), worker=first)
        first.terminate()
    assert read_table(state, PARTITIONS), "the first worker wrote no state"
    broker.stop()

    with EmbeddedBroker(partitions=PARTITIONS, log_path=tmp_path / "broker-2.log") as fresh:
        env = worker_env(recstream_env, state, RECSTREAM_KAFKA_BOOTSTRAP=fresh.bootstrap)
        for argv in ([sys.executable, "-m", "recstream.stream.worker"], recstream_command("worker")):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            text = done.stdout + done.stderr
            assert done.returncode == 2, text
            assert f"the table state in {state} is ahead of the broker's changelog" in text, text
            assert "ConsistencyError: The persisted offset" in text, text
            assert "remove the folder" in text, text

        assert fresh_state_dir(state) == state and not state.exists()
        with WorkerProcess(env, tmp_path / "second.log") as second:
            second.wait_ready()
            wait_committed(fresh.bootstrap, produce(fresh.bootstrap, sent[:7]), worker=second)
            second.terminate()
    assert set(read_table(state, PARTITIONS)) == {f"u{i}" for i in range(7)}


def test_worker_resumes_after_the_kafka_broker_restarts(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    """Kafka keeps its topics and committed offsets on disk: a worker restarted
    on its state against the restarted broker resumes where it stopped, every
    event applied once."""
    if broker.engine != "kafka":
        pytest.skip("Tansu keeps nothing across a restart: this test is for Kafka")
    state = tmp_path / "state"
    by_user: dict[str, dict[str, dict]] = {}

    def batch(start: int, n: int) -> list[tuple[bytes, bytes]]:
        out = []
        for i in range(start, start + n):
            user, item = f"u{i % 7}", f"i{i}"
            by_user.setdefault(user, {})[f"e{i}"] = {
                "event_id": f"e{i}", "user_id": user, "item_id": item,
                "event_type": "view", "ts": T0 + i,
            }
            out.append((user.encode(), make_event(f"e{i}", user, T0 + i, item)))
        return out

    first_batch = batch(0, 60)
    with WorkerProcess(worker_env(recstream_env, state), tmp_path / "first.log") as first:
        first.wait_ready()
        wait_committed(broker.bootstrap, produce(broker.bootstrap, first_batch), worker=first)
        first.terminate()
    broker.stop()
    broker.start()
    # Redelivered and new events: the old ones are deduplicated, the new applied.
    again = first_batch[-10:] + batch(60, 40)
    with WorkerProcess(worker_env(recstream_env, state), tmp_path / "second.log") as second:
        second.wait_ready()
        wait_committed(broker.bootstrap, produce(broker.bootstrap, again), worker=second)
        second.terminate()
    want = expected_states(by_user, 200)
    assert read_table(state, PARTITIONS) == want
    assert latest_changelog_states(broker.bootstrap) == want


def test_the_worker_makes_its_internal_topics_ready_before_faust_starts(broker: Broker) -> None:
    """Against the real broker: created with the worker's partition count, each
    partition led, within seconds (not the whole wait), and only once."""
    import time

    from recstream.schemas import KafkaSettings
    from recstream.stream.app import internal_topics
    from recstream.stream.kafka_admin import admin_call, ensure_topics, partition_counts

    kafka = KafkaSettings(bootstrap=broker.bootstrap, partitions=4)
    wanted = internal_topics("ready-check")
    started = time.monotonic()
    assert sorted(ensure_topics(kafka, wanted, 1, timeout_s=30)) == sorted(wanted)
    assert time.monotonic() - started < 15
    counts = partition_counts(admin_call(kafka, lambda a: a.describe_topics(list(wanted))))
    assert counts == dict.fromkeys(wanted, 4)
    assert ensure_topics(kafka, wanted, 1, timeout_s=30) == []
