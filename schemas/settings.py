"""Kafka connection settings shared by every process.

Read from the environment once, in a process's ``main()``, and passed down as a
frozen value (no module-level settings object).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_PARTITIONS = 4


def env_number(env: Mapping[str, str], name: str, default: float, kind: type = int) -> Any:
    """``kind(env[name])``, ``default`` when unset or blank; a bad value is a
    ``ValueError`` that names the variable (``int('x')`` alone names nothing)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def bounded_bootstrap(timeout_ms: int) -> dict[str, int]:
    """kafka-python client keyword arguments that bound its wait for a first broker:
    kafka-python 3 waits 30 s by default; 2.x has no such setting (and gives up at once)."""
    from kafka import KafkaAdminClient

    # getattr: tests stand functions in for the client class.
    if "bootstrap_timeout_ms" in getattr(KafkaAdminClient, "DEFAULT_CONFIG", {}):
        return {"bootstrap_timeout_ms": timeout_ms}
    return {}


@dataclass(frozen=True)
class KafkaSettings:
    """Where the brokers are and how to talk to them (TLS/SASL pass through)."""

    bootstrap: str = DEFAULT_BOOTSTRAP
    partitions: int = DEFAULT_PARTITIONS
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: "auto" detects the embedded Tansu broker; "tansu" forces, "off" disables
    #: the end-offset compatibility layer.
    broker_compat: str = "auto"
    #: Static group membership (KIP-345): a stable, per-process-unique name such
    #: as a StatefulSet pod name. A restarted process with the same name takes
    #: its partitions back at once, without a rebalance waiting for the killed
    #: member's session to expire. Two live processes must never share one;
    #: a static member that stops is only removed when its session times out.
    #: Unset (the default): dynamic membership.
    group_instance_id: str | None = None

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"RECSTREAM_PARTITIONS must be >= 1, got {self.partitions}")
        if self.broker_compat not in ("auto", "tansu", "off"):
            raise ValueError(
                f"RECSTREAM_BROKER_COMPAT must be auto, tansu or off, got {self.broker_compat!r}"
            )
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"unknown security protocol {self.security_protocol!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        return cls(
            bootstrap=env.get("RECSTREAM_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
            partitions=env_number(env, "RECSTREAM_PARTITIONS", DEFAULT_PARTITIONS),
            security_protocol=env.get("RECSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=env.get("RECSTREAM_KAFKA_SASL_MECHANISM") or None,
            sasl_username=env.get("RECSTREAM_KAFKA_SASL_USERNAME") or None,
            sasl_password=env.get("RECSTREAM_KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=env.get("RECSTREAM_KAFKA_SSL_CAFILE") or None,
            ssl_certfile=env.get("RECSTREAM_KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("RECSTREAM_KAFKA_SSL_KEYFILE") or None,
            broker_compat=env.get("RECSTREAM_BROKER_COMPAT", "auto"),
            group_instance_id=env.get("RECSTREAM_GROUP_INSTANCE_ID") or None,
        )

    def _security(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password
        return opts

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        opts = {"bootstrap_servers": self.bootstrap, **self._security()}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            opts["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return opts

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients."""
        opts = {"bootstrap_servers": self.bootstrap, **self._security()}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            opts.update(
                ssl_cafile=self.ssl_cafile,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
            )
        return opts

    @property
    def faust_broker_url(self) -> str:
        return ";".join(f"kafka://{hp.strip()}" for hp in self.bootstrap.split(","))
