"""Apache Kafka in KRaft mode on loopback, from the jars on Maven Central.

``recstream broker --engine kafka``, the demo, the benchmarks and the
integration tests start it. The jars of one pinned Kafka version are fetched
once with Maven into a cache folder outside the repository; each node is one
JVM running ``kafka.Kafka`` with properties written here. One node is a combined
broker and controller; ``nodes=3`` is a three-node quorum with replication
factor 3 and ``min.insync.replicas=2``. Data lives in ``data_dir``: a restart
keeps every topic and committed offset.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from recstream.broker import (
    BrokerError,
    StartedBroker,
    create_topics,
    free_port,
    wait_until_serving,
)
from recstream.schemas.topics import ALL_TOPIC_NAMES

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
#: Kafka's own log4j2 version; the published POMs carry no SLF4J binding.
LOG4J_VERSION = "2.25.5"
MIN_JAVA = 17

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.recstream</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids ids that read as a flag
            return text


def cache_root() -> Path:
    """Where the jars and the formatted template live (``RECSTREAM_KAFKA_HOME`` overrides)."""
    override = os.environ.get("RECSTREAM_KAFKA_HOME")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recstream" / f"kafka-{KAFKA_VERSION}"


def java_binary() -> str | None:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on the PATH, else None."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


def java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"cannot read the version of {java}: {out.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """The java binary to run Kafka with; BrokerError when none or too old."""
    java = java_binary()
    if java is None:
        raise BrokerError(f"the kafka engine needs Java {MIN_JAVA}+: no java on the PATH or JAVA_HOME")
    major = java_major(java)
    if major < MIN_JAVA:
        raise BrokerError(f"the kafka engine needs Java {MIN_JAVA}+; {java} is Java {major}")
    return java


def java_tag() -> str:
    """A name for the running Java (archives of classes are only valid for it)."""
    java = java_binary() or "java"
    return hashlib.sha256(os.path.realpath(java).encode()).hexdigest()[:12]


def kafka_libs() -> Path:
    """The classpath folder of Kafka's jars, fetched with Maven on first use."""
    root = cache_root()
    libs = root / "libs"
    if (root / "libs.complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"Kafka {KAFKA_VERSION}'s jars are not in {libs} and Maven (mvn) is not on the "
            "PATH to fetch them: install Maven, or use --engine tansu"
        )
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".fetch.lock"):
        if (root / "libs.complete").exists():  # fetched by another process meanwhile
            return libs
        (root / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        shutil.rmtree(libs, ignore_errors=True)
        log.info("fetching Apache Kafka %s jars with Maven into %s (once)", KAFKA_VERSION, libs)
        done = subprocess.run(
            [mvn, "-q", "-B", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise BrokerError(f"Maven could not fetch Kafka {KAFKA_VERSION}: " + " | ".join(tail))
        (root / "libs.complete").write_text(KAFKA_VERSION + "\n")
    return libs


class _locked:
    """An exclusive flock on ``path`` for the ``with`` block (one fetch at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: A class-data-sharing archive this node writes when it exits, if any.
    archive: Path | None = None


class KafkaBroker(StartedBroker):
    """One or more Kafka nodes on loopback; the same interface as the Tansu broker."""

    engine = "kafka"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        partitions: int = 4,
        topics: Iterable[str] = ALL_TOPIC_NAMES,
        log_path: Path | None = None,
        nodes: int = 1,
        heap_mb: int = 512,
    ) -> None:
        if nodes not in (1, 3):
            raise BrokerError("a Kafka broker here has 1 node or 3")
        self.host = host
        self.partitions = partitions
        self.topics = tuple(topics)
        self.log_path = log_path
        self.heap_mb = heap_mb
        self.data_dir = Path(data_dir)
        ports = [port or free_port(host)] + [free_port(host) for _ in range(nodes - 1)]
        self.nodes = [
            _Node(i + 1, ports[i], free_port(host), self.data_dir / f"node-{i + 1}")
            for i in range(nodes)
        ]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes)

    @property
    def replication(self) -> int:
        return len(self.nodes)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.nodes[0].proc

    def node(self, node_id: int) -> _Node:
        return self.nodes[node_id - 1]

    # -- configuration ------------------------------------------------------

    def properties(self, node: _Node) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes)
        rf = str(self.replication)
        min_isr = "2" if self.replication >= 3 else "1"
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{node.port},CONTROLLER://{self.host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": str(self.partitions),
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            # Its 128 MiB default would sit on a 512 MiB heap.
            "log.cleaner.dedupe.buffer.size": "2097152",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.replica.fetchers": "1",
            # A killed node is fenced (its partitions led elsewhere) after 3 s, not 9.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "1000",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }

    def _write_config(self, node: _Node) -> Path:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / f"server-{node.node_id}.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))
        log4j = self.data_dir / "log4j2.properties"
        level = os.environ.get("RECSTREAM_KAFKA_LOG_LEVEL", "INFO").upper()
        log4j.write_text(_LOG4J2.format(level=level))
        return path

    def _java(self, java: str, libs: Path, *args: str, heap_mb: int = 256) -> list[str]:
        """``java`` with our heap, GC and logging flags, then ``args`` (flags, main class, ...)."""
        return [
            java, f"-Xmx{heap_mb}m", f"-Xms{min(heap_mb, 128)}m", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", f"{libs}/*", *args,
        ]

    def _format(self, java: str, libs: Path, node: _Node, config: Path) -> None:
        """Format a node's log folder once; a formatted one (a restart) is kept.

        A single node copies a folder formatted once per Kafka version: the
        storage tool is a JVM start of ~3 s, paid once instead of per broker.
        """
        if (node.data_dir / "meta.properties").exists():
            return
        if len(self.nodes) > 1:
            self._storage_format(java, libs, node.data_dir, config, self._cluster_id())
            return
        template = cache_root() / "formatted-single-node"
        with _locked(cache_root() / ".format.lock"):
            if not (template / "meta.properties").exists():
                scratch = Path(str(template) + ".tmp")
                shutil.rmtree(scratch, ignore_errors=True)
                props = config.read_text().replace(str(node.data_dir), str(scratch))
                scratch_config = cache_root() / "format.properties"
                scratch_config.write_text(props)
                self._storage_format(java, libs, scratch, scratch_config, new_cluster_id())
                scratch.rename(template)
        shutil.copytree(template, node.data_dir, dirs_exist_ok=True)

    def _storage_format(
        self, java: str, libs: Path, data_dir: Path, config: Path, cluster_id: str
    ) -> None:
        done = subprocess.run(
            self._java(java, libs, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(config)),
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise BrokerError(f"Kafka's storage tool could not format {data_dir}: "
                              + (done.stdout + done.stderr).strip()[-400:])

    def _cluster_id(self) -> str:
        """One id for every node of this broker, kept beside their folders."""
        path = self.data_dir / "cluster.id"
        if not path.exists():
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> KafkaBroker:
        java = check_java()
        libs = kafka_libs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.nodes:
                config = self._write_config(node)
                self._format(java, libs, node, config)
            # Every node first: each needs a quorum majority before it serves.
            for node in self.nodes:
                self._spawn(java, libs, node)
            for node in self.nodes:
                self._wait(node, timeout_s)
            create_topics(self.bootstrap, self.partitions, self.topics,
                          replication_factor=self.replication)
            self._wait_for_leaders(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka %s (%d node(s)) serving on %s", KAFKA_VERSION, len(self.nodes),
                 self.bootstrap)
        return self

    def _spawn(self, java: str, libs: Path, node: _Node) -> None:
        config = self.data_dir / f"server-{node.node_id}.properties"
        out = self._log_file(node)
        node.proc = subprocess.Popen(
            self._java(java, libs, *self._class_sharing(node), "kafka.Kafka", str(config),
                       heap_mb=self.heap_mb),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        if out is not subprocess.DEVNULL:
            out.close()

    def _class_sharing(self, node: _Node) -> list[str]:
        """JVM flags for a class-data-sharing archive of Kafka's classes.

        The archive halves a node's start. The first node started without one
        writes it when it exits cleanly (to a name of its own, renamed into
        place by ``stop``); a JVM that cannot use an archive ignores it.
        """
        archive = cache_root() / f"classes-{java_tag()}.jsa"
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}"]
        node.archive = archive.with_name(f"{archive.name}.{os.getpid()}-{node.node_id}.tmp")
        return [f"-XX:ArchiveClassesAtExit={node.archive}"]

    def _log_file(self, node: _Node):  # type: ignore[no-untyped-def]
        if self.log_path is None:
            return subprocess.DEVNULL
        path = self.log_path if len(self.nodes) == 1 else self.log_path.with_name(
            f"{self.log_path.stem}-{node.node_id}{self.log_path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab")  # noqa: SIM115 - handed to the child

    def _wait(self, node: _Node, timeout_s: float) -> None:
        assert node.proc is not None
        wait_until_serving(f"{self.host}:{node.port}", timeout_s, exit_code=node.proc.poll)

    def restart_node(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Start a stopped or killed node again on its data (fault tests)."""
        node = self.node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            raise BrokerError(f"node {node_id} is still running")
        self._spawn(check_java(), kafka_libs(), node)
        self._wait(node, timeout_s)

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the node id leading it now (-1: none), from the metadata."""
        return self._leaders([topic])[topic]

    def _leaders(self, topics: Iterable[str]) -> dict[str, dict[int, int]]:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConnectionError

        # Ask the running nodes only; a killed one can still be in the metadata
        # for a few seconds (until its session times out), so retry a refusal.
        live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        bootstrap = ",".join(f"{self.host}:{n.port}" for n in live) or self.bootstrap
        for attempt in range(20):
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            try:
                described = admin.describe_topics(list(topics))
                break
            except KafkaConnectionError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
            finally:
                admin.close()
        return {t["name"]: {p["partition_index"]: p["leader_id"] for p in t["partitions"]}
                for t in described}

    def _wait_for_leaders(self, timeout_s: float) -> None:
        """Return once every partition of our topics has a leader: a producer that
        starts earlier logs NotLeaderForPartition retries until they are elected."""
        deadline = time.monotonic() + timeout_s
        while True:
            known = self._leaders(self.topics) if self.topics else {}
            if all(leader >= 0 for parts in known.values() for leader in parts.values()):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"partitions without a leader after {timeout_s:.0f}s: {known}")
            time.sleep(0.1)

    def busiest_leader(self, topic: str) -> int:
        """The node that leads the most partitions of ``topic`` (the one a fault test kills)."""
        counts: dict[int, int] = {}
        for leader in self.leaders(topic).values():
            counts[leader] = counts.get(leader, 0) + 1
        return max(counts, key=lambda node: (counts[node], -node))

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (fault tests): no controlled shutdown."""
        node = self.node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the nodes (a controlled shutdown), SIGKILL one not gone after ``timeout_s``.

        A cluster stops one node at a time, the last ones with a short wait: a
        node left without a controller quorum cannot finish a controlled shutdown.
        """
        alone = len(self.nodes) == 1
        for i, node in enumerate(reversed(self.nodes)):
            proc = node.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s if alone or i == 0 else 5.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            node.proc = None
            self._keep_archive(node)

    def _keep_archive(self, node: _Node) -> None:
        written, node.archive = node.archive, None
        if written is not None and written.exists():
            written.rename(written.with_name(written.name.split(".jsa.")[0] + ".jsa"))

    def pause(self) -> None:
        """SIGSTOP every node (fault tests)."""
        for node in self.nodes:
            if node.proc is not None:
                node.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.send_signal(signal.SIGCONT)
