"""The stream worker's settings: read from the environment once, in ``main()``."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recstream.schemas import KafkaSettings
from recstream.schemas.settings import env_number

APP_ID = "recstream-worker"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker needs, as frozen values (no settings object at import time)."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    #: Faust ``datadir``: RocksDB tables live below it.
    state_dir: Path = Path("./state")
    max_seq_len: int = 200
    #: Events per ``take`` batch; and how long to wait for a batch to fill.
    batch_size: int = 1000
    batch_window_ms: int = 50
    #: Producer linger: 0, as a batch's outputs are queued together anyway.
    producer_linger_ms: int = 0
    #: The consumer's fetch wait against Tansu only (docs/embedded-broker.md,
    #: defect 5); against Kafka, Faust's own stays.
    fetch_wait_ms: int = 20
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: Prometheus port; 0 serves nothing.
    metrics_port: int = 0
    app_id: str = APP_ID
    log_level: str = "INFO"
    #: How long a starting worker waits for the brokers to answer before it exits 1.
    broker_wait_s: int = 30
    #: RocksDB memory (memtables + block cache) per table partition, MiB; a worker
    #: holds two tables per partition it owns.
    rocksdb_mb: int = 32

    def __post_init__(self) -> None:
        for name, value, least in (
            ("RECSTREAM_MAX_SEQ_LEN", self.max_seq_len, 1),
            ("RECSTREAM_WORKER_BATCH", self.batch_size, 1),
            ("RECSTREAM_WORKER_BATCH_WINDOW_MS", self.batch_window_ms, 1),
            ("RECSTREAM_PRODUCER_LINGER_MS", self.producer_linger_ms, 0),
            ("RECSTREAM_FETCH_WAIT_MS", self.fetch_wait_ms, 1),
            ("RECSTREAM_BROKER_WAIT_S", self.broker_wait_s, 1),
            ("RECSTREAM_ROCKSDB_MB", self.rocksdb_mb, 4),
        ):
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"RECSTREAM_METRICS_PORT must be 0..65535, got {self.metrics_port}")
        if not self.worker_id:
            raise ValueError("RECSTREAM_WORKER_ID must not be empty")
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise ValueError(f"RECSTREAM_LOG_LEVEL must be a log level name, got {self.log_level!r}")

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        fields = cls.__dataclass_fields__

        def number(name: str, attr: str) -> int:
            return env_number(env, name, fields[attr].default)

        return cls(
            kafka=KafkaSettings.from_env(env),
            state_dir=Path(env.get("RECSTREAM_STATE_DIR") or "./state"),
            max_seq_len=number("RECSTREAM_MAX_SEQ_LEN", "max_seq_len"),
            batch_size=number("RECSTREAM_WORKER_BATCH", "batch_size"),
            batch_window_ms=number("RECSTREAM_WORKER_BATCH_WINDOW_MS", "batch_window_ms"),
            producer_linger_ms=number("RECSTREAM_PRODUCER_LINGER_MS", "producer_linger_ms"),
            fetch_wait_ms=number("RECSTREAM_FETCH_WAIT_MS", "fetch_wait_ms"),
            worker_id=env.get("RECSTREAM_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}",
            metrics_port=number("RECSTREAM_METRICS_PORT", "metrics_port"),
            log_level=(env.get("RECSTREAM_LOG_LEVEL") or "INFO").upper(),
            broker_wait_s=number("RECSTREAM_BROKER_WAIT_S", "broker_wait_s"),
            rocksdb_mb=number("RECSTREAM_ROCKSDB_MB", "rocksdb_mb"),
        )
