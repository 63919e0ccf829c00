"""Run a real worker process and read back what it did: for integration tests and ops.

Everything here waits by polling with a deadline (never a bare sleep), because
the tests run on loaded two-core machines.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from recstream.stream.agents import user_partition
from recstream.stream.sequence import UserSequence, decode_state
from recstream.stream.settings import APP_ID
from recstream.stream.tables import USER_SEQUENCES

#: Faust keeps its own bookkeeping (the changelog offset) in every table DB.
FAUST_OFFSET_KEY = b"__faust\0offset__"


class WorkerFailed(AssertionError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str) -> int:
    """The HTTP status of ``GET 127.0.0.1:port/path`` (an error status included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1
) -> float:
    """Poll until ``condition()``; return the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(interval_s)
    return time.monotonic() - start


@dataclass
class WorkerProcess:
    """``python -m recstream.stream.worker`` with a metrics port, started and stopped by a test."""

    env: Mapping[str, str]
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**self.env, "RECSTREAM_METRICS_PORT": str(self.metrics_port)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recstream.stream.worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def metrics(self) -> dict[str, float]:
        """Samples by name (labels folded into the name, ``name{k="v"}``); {} if not serving."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
            ) as response:
                text = response.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        def ready() -> bool:
            if not self.alive:
                raise WorkerFailed(f"worker exited with {self.returncode()}:\n{self.log_tail()}")
            return self.metric("recstream_worker_ready") == 1.0

        return wait_for(ready, timeout_s, f"worker ready\n{self.log_tail()}")

    def wait_metric(
        self, name: str, at_least: float, timeout_s: float = 60.0, interval_s: float = 0.1
    ) -> float:
        def reached() -> bool:
            if not self.alive:
                raise WorkerFailed(f"worker exited with {self.returncode()}:\n{self.log_tail()}")
            return self.metric(name) >= at_least

        return wait_for(reached, timeout_s, f"{name} >= {at_least}", interval_s)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"worker still running after {timeout_s}s\n{self.log_tail()}"
            ) from None

    def terminate(self, timeout_s: float = 30.0) -> float:
        """SIGTERM, wait; the worker must exit 0. Returns the seconds it took."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout_s)
        if rc != 0:
            raise WorkerFailed(f"worker exited with {rc} on SIGTERM:\n{self.log_tail()}")
        return time.monotonic() - start

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def worker_env(base: Mapping[str, str], state_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(base)
    env["RECSTREAM_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


# -- reading the results back ---------------------------------------------------


def table_dbs(state_dir: Path) -> dict[int, Path]:
    """Partition -> RocksDB folder of the ``user_sequences`` table below ``state_dir``."""
    out = {}
    for path in state_dir.glob(f"**/{USER_SEQUENCES}-*.db"):
        out[int(path.name.removesuffix(".db").rsplit("-", 1)[1])] = path
    return out


def read_table(state_dir: Path, partitions: int) -> dict[str, UserSequence]:
    """Every user's state from the worker's RocksDB files (the worker must be stopped).

    Also checks co-partitioning: each user must be stored in the partition
    its key hashes to, and nowhere else.
    """
    from rocksdict import AccessType, Options, Rdict

    states: dict[str, UserSequence] = {}
    for partition, path in sorted(table_dbs(state_dir).items()):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if key == FAUST_OFFSET_KEY:
                    continue
                user = key.decode()
                expected = user_partition(key, partitions)
                if partition != expected:
                    raise AssertionError(
                        f"user {user!r} stored in partition {partition}, its key hashes to {expected}"
                    )
                if user in states:
                    raise AssertionError(f"user {user!r} stored in two partitions")
                states[user] = decode_state(value)
        finally:
            db.close()
    return states


def consume_all(bootstrap: str, topics: Iterable[str], timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topics``, read from the beginning up to the fetch high watermark.

    Not ``end_offsets()``: Tansu answers ListOffsets(latest) wrongly (docs/embedded-broker.md
    defect 1); the high watermark in fetch responses is right.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            done = all(
                consumer.highwater(tp) is not None
                and consumer.position(tp) >= consumer.highwater(tp)
                for tp in tps
            )
            if done:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topics} to the end within {timeout_s}s")
    finally:
        consumer.close()


def changelog_topic(app_id: str = APP_ID) -> str:
    return f"{app_id}-{USER_SEQUENCES}-changelog"


def latest_changelog_states(bootstrap: str, app_id: str = APP_ID) -> dict[str, UserSequence]:
    """The last changelog value of every user: what a restore from the changelog gives.

    A tombstone (``None`` value, written by a user deletion) removes the user.
    """
    latest: dict[str, UserSequence] = {}
    for record in consume_all(bootstrap, [changelog_topic(app_id)]):
        if record.value is None:
            latest.pop(record.key.decode(), None)
        else:
            latest[record.key.decode()] = decode_state(record.value)
    return latest


def committed_offsets(bootstrap: str, group: str = APP_ID) -> dict[tuple[str, int], int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def wait_committed(
    bootstrap: str,
    ends: Mapping[tuple[str, int], int],
    timeout_s: float = 60.0,
    worker: WorkerProcess | None = None,
) -> float:
    """Wait until the worker's group committed every ``(topic, partition) -> end``."""

    def done() -> bool:
        if worker is not None and not worker.alive:
            raise WorkerFailed(f"worker exited with {worker.returncode()}:\n{worker.log_tail()}")
        committed = committed_offsets(bootstrap)
        return all(committed.get(tp, -1) >= end for tp, end in ends.items())

    return wait_for(done, timeout_s, f"committed offsets reach {dict(ends)}", interval_s=0.25)


def produce(
    bootstrap: str,
    records: Iterable[tuple[bytes | None, bytes]],
    topic: str = "events",
    linger_ms: int = 20,
) -> dict[tuple[str, int], int]:
    """Produce keyed records in multi-record batches; return the end offset per partition."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, batch_size=256 * 1024, acks="all"
    )
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(60)
        ends: dict[tuple[str, int], int] = {}
        for future in futures:
            meta = future.get(timeout=60)
            tp = (meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        return ends
    finally:
        producer.close()
