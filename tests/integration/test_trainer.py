"""``recstream trainer`` as a real process against the real embedded broker.

While events stream continuously it publishes versions; each announcement on
``model-updates`` comes in order and verifies against the registry folder; a
restarted trainer resumes from its on-disk window and committed offsets (no
re-read of the topic), and goes on publishing.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from recstream.inference.registry import Registry, verify_version_dir
from recstream.schemas.messages import Event, ModelUpdate, UserDeletion, now_ms
from recstream.schemas.topics import EVENTS, MODEL_UPDATES, USER_DELETIONS
from recstream.trainer.window import TrainingWindow, WindowBounds

from recstream.broker import Broker
from recstream.processes import Child, free_port, http_status, recstream_command
from recstream.synthetic import generate

pytestmark = pytest.mark.integration

EVERY_EVENTS = 1500


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, child: Child | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None:
            child.check_alive()
        if check():
            return
        time.sleep(0.25)
    log = child.describe_log() if child is not None else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{log}")


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class Streamer(threading.Thread):
    """Sends events at a steady rate until told to stop (or out of events)."""

    def __init__(self, bootstrap: str, events: list[Event], rate: float) -> None:
        super().__init__(daemon=True)
        self.events, self.rate, self.sent = events, rate, 0
        self.halt = threading.Event()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    def run(self) -> None:
        start = time.monotonic()
        for e in self.events:
            if self.halt.is_set():
                break
            self.producer.send(EVENTS, key=e.user_id.encode(), value=e.model_dump_json().encode())
            self.sent += 1
            ahead = self.sent / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        self.producer.flush()

    def stop_when_done(self) -> int:
        self.join(timeout=60)
        return self.stop()

    def stop(self) -> int:
        self.halt.set()
        self.join(timeout=30)
        self.producer.close()
        return self.sent


class Updates:
    """Reads model-updates from the start, keeping (key, message) in arrival order."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = [TopicPartition(MODEL_UPDATES, p)
                 for p in self.consumer.partitions_for_topic(MODEL_UPDATES) or []]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.seen: list[tuple[bytes, ModelUpdate]] = []

    def poll(self) -> list[ModelUpdate]:
        new = []
        for records in self.consumer.poll(timeout_ms=200).values():
            for r in records:
                update = ModelUpdate.model_validate_json(r.value)
                # Check on arrival, as a scorer would: the folder may be pruned later.
                verify_version_dir(Path(update.uri), update.sha256)
                self.seen.append((r.key, update))
                new.append(update)
        return new

    def wait(self, n: int, timeout_s: float, child: Child | None) -> None:
        def enough() -> bool:
            self.poll()
            return len(self.seen) >= n

        wait_for(f"{n} model updates", enough, timeout_s, child)


def test_trainer_publishes_while_streaming_and_resumes(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    registry = tmp_path / "models"
    env = dict(
        recstream_env,
        RECSTREAM_MODEL_REGISTRY=str(registry),
        RECSTREAM_TRAINER_DIR=str(tmp_path / "trainer"),
        RECSTREAM_TRAINER_EVERY_EVENTS=str(EVERY_EVENTS),
        RECSTREAM_TRAINER_EVERY_MINUTES="10",
        RECSTREAM_TRAINER_BUDGET_S="2",
        RECSTREAM_TRAINER_EPOCHS="2",
        RECSTREAM_TRAINER_MIN_HOLDOUT="1",
        # The gate is tested on its own; here every candidate should go out.
        RECSTREAM_TRAINER_TOLERANCE="1.0",
        RECSTREAM_TRAINER_KEEP="3",
        RECSTREAM_TRAINER_MAX_LEN="20",
        RECSTREAM_TRAINER_D_MODEL="16",
        RECSTREAM_TRAINER_LAYERS="1",
        RECSTREAM_TRAINER_HEADS="1",
        RECSTREAM_TORCH_THREADS="1",
        RECSTREAM_METRICS_PORT=str(port),
    )
    # Enough for minutes of streaming: rounds are slow on a loaded machine, and
    # each needs EVERY_EVENTS new events to start.
    stream = generate(60_000, n_users=300, n_items=200, seed=5).events
    log = tmp_path / "trainer.log"
    trainer = Child("trainer", recstream_command("trainer"), env, log).start()
    updates = Updates(broker.bootstrap)
    streamer = Streamer(broker.bootstrap, stream, rate=250)
    try:
        streamer.start()
        updates.wait(3, timeout_s=300, child=trainer)
        sent = streamer.stop()
        later = stream[sent : sent + 2000]

        keys = {k for k, _ in updates.seen}
        versions = [u.version for _, u in updates.seen]
        assert keys == {b"recstream"}
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        times = [u.published_ms for _, u in updates.seen]
        assert times == sorted(times)
        first_update = updates.seen[0][1]
        assert first_update.metrics["train_events"] > 0 and "ndcg@10" in first_update.metrics
        assert updates.seen[1][1].metrics.get("current_ndcg@10") is not None  # gated vs v1

        # Everything sent is in the window and committed; then a clean stop.
        wait_for("all events consumed",
                 lambda: metrics(port).get("recstream_trainer_events_consumed_total") == sent,
                 60, trainer)
        m = metrics(port)
        assert m["recstream_trainer_versions_published_total"] >= 3
        # The probe server's own checks (prometheus_client's server, used before,
        # answered every path with the metrics page and 200).
        assert [http_status(port, p) for p in ("/healthz", "/readyz", "/nope")] == [200, 200, 404]
        trainer.terminate()
        assert trainer.wait(60) == 0, trainer.describe_log()

        with TrainingWindow(tmp_path / "trainer" / "window", WindowBounds(), read_only=True) as w:
            kept_events, kept_users = w.n_events, w.n_users
            window_users = {u.user for u in w.snapshot()}
            assert kept_events == m["recstream_trainer_window_events"] > 0
        # A round that was past training when the stop came published and announced.
        last_version = Registry(registry).current().version
        wait_for(f"the announcement of {last_version}",
                 lambda: (updates.poll(), updates.seen[-1][1].version == last_version)[1],
                 30, None)
        assert len(Registry(registry).versions()) <= 3  # pruned to KEEP

        # Restart: the window is back before anything is read, nothing is re-read,
        # and the next round warm-starts from the last version on the kept window.
        restart_at = len(log.read_text())
        trainer = Child("trainer", recstream_command("trainer"), env, log).start()
        wait_for("the restarted trainer's metrics",
                 lambda: metrics(port).get("recstream_trainer_window_events") == kept_events,
                 60, trainer)
        assert metrics(port)["recstream_trainer_window_users"] == kept_users

        # A deletion empties a user from the window; malformed events are counted, skipped.
        gone = next(u for u in sorted(window_users) if u not in {e.user_id for e in later})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send(USER_DELETIONS, key=gone.encode(),
                      value=UserDeletion(user_id=gone, requested_ms=now_ms()).model_dump_json()
                      .encode())
        for bad in (b'{"event_id": "x"', b'{"event_id": "x", "user_id": "u"}'):
            producer.send(EVENTS, key=b"u", value=bad)
        producer.flush()
        producer.close()
        wait_for("the deletion applied",
                 lambda: metrics(port).get("recstream_trainer_users_deleted_total") == 1,
                 60, trainer)
        assert metrics(port)["recstream_trainer_window_users"] == kept_users - 1

        streamer = Streamer(broker.bootstrap, later, rate=2000)
        streamer.start()
        sent_later = streamer.stop_when_done()
        wait_for("the new events consumed",
                 lambda: metrics(port).get("recstream_trainer_events_consumed_total")
                 == sent_later + 2, 60, trainer)
        wait_for("a warm-started round on the resumed window",
                 lambda: f"fine-tuning from {last_version}" in log.read_text()[restart_at:],
                 60, trainer)
        time.sleep(1.0)  # a re-read of the topic start would show up as more records
        m = metrics(port)
        assert m["recstream_trainer_events_consumed_total"] == sent_later + 2
        assert sent_later == len(later)
        assert m['recstream_trainer_events_malformed_total{reason="bad_json"}'] == 1
        assert m['recstream_trainer_events_malformed_total{reason="schema"}'] == 1
        assert m["recstream_trainer_window_events"] > kept_events
        assert m["recstream_trainer_window_users"] == len(
            (window_users - {gone}) | {e.user_id for e in later})
        # ... and that round publishes the next version, announced after the others.
        before = len(updates.seen)
        updates.wait(before + 1, timeout_s=120, child=trainer)
        assert updates.seen[before][1].version > last_version
    finally:
        streamer.halt.set()
        trainer.terminate()
        if trainer.wait(30) is None:
            trainer.kill()
        updates.consumer.close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
