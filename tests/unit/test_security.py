"""Kafka TLS/SASL settings reach every client the processes build.

Each client is built from one environment with ``SASL_SSL``, a mechanism, a
user, a password and a throwaway CA plus client certificate (made here with
the ``openssl`` command). The client classes are replaced by recorders that keep
their keyword arguments and stop the run at ``start()``, so the real code
paths build their configuration and no broker (and no TLS listener) is needed.
Every recorded keyword must also be a parameter the real client accepts.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recstream.schemas.settings import KafkaSettings

from recstream.processes import SECURITY_ENV, embedded_broker_env

CA_NAME = "recstream test CA"
USER, PASSWORD, MECHANISM = "svc-recstream", "s3cret-pw", "SCRAM-SHA-512"
INSTANCE = "recstream-worker-7"  # RECSTREAM_GROUP_INSTANCE_ID, e.g. a StatefulSet pod name


class Stop(Exception):
    """Raised by a recorder's start(): the configuration is built, stop here."""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a client certificate signed by it (PEM files, openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make a throwaway CA")
    out = tmp_path_factory.mktemp("tls")
    f = {n: out / n for n in ("ca.pem", "ca.key", "client.pem", "client.key", "client.csr")}
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(f["ca.key"]), "-out", str(f["ca.pem"]),
             "-days", "1", "-subj", f"/CN={CA_NAME}")  # fmt: skip
    _openssl("req", *ec, "-keyout", str(f["client.key"]), "-out", str(f["client.csr"]),
             "-subj", "/CN=recstream client")  # fmt: skip
    _openssl("x509", "-req", "-in", str(f["client.csr"]), "-CA", str(f["ca.pem"]),
             "-CAkey", str(f["ca.key"]), "-CAcreateserial", "-out", str(f["client.pem"]),
             "-days", "1")  # fmt: skip
    return {"ca": f["ca.pem"], "cert": f["client.pem"], "key": f["client.key"]}


@pytest.fixture()
def secure_env(tls_files: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    return {
        "RECSTREAM_KAFKA_BOOTSTRAP": "kafka-1.example:9093,kafka-2.example:9093",
        "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "RECSTREAM_KAFKA_SASL_MECHANISM": MECHANISM,
        "RECSTREAM_KAFKA_SASL_USERNAME": USER,
        "RECSTREAM_KAFKA_SASL_PASSWORD": PASSWORD,
        "RECSTREAM_KAFKA_SSL_CAFILE": str(tls_files["ca"]),
        "RECSTREAM_KAFKA_SSL_CERTFILE": str(tls_files["cert"]),
        "RECSTREAM_KAFKA_SSL_KEYFILE": str(tls_files["key"]),
        "RECSTREAM_BROKER_COMPAT": "off",
        "RECSTREAM_STATE_DIR": str(tmp_path / "state"),
        "RECSTREAM_MODEL_REGISTRY": "",
        # Not security, but a client setting that must reach every group consumer too.
        "RECSTREAM_GROUP_INSTANCE_ID": INSTANCE,
    }


def _assert_ssl_context(ctx: Any) -> None:
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    issuers = [dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()]
    assert CA_NAME in issuers, issuers


def _assert_sasl(kwargs: dict[str, Any]) -> None:
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == MECHANISM
    assert kwargs["sasl_plain_username"] == USER
    assert kwargs["sasl_plain_password"] == PASSWORD


def _accepted(cls: type, kwargs: dict[str, Any]) -> None:
    """Every keyword is one the real client takes (a typo would be silently lost)."""
    if hasattr(cls, "DEFAULT_CONFIG"):  # kafka-python takes **configs
        known = set(cls.DEFAULT_CONFIG)
    else:
        known = set(inspect.signature(cls.__init__).parameters)
    assert not set(kwargs) - known, f"{cls.__name__} ignores {sorted(set(kwargs) - known)}"


class Recorder:
    """Stands in for a client class: records constructor keywords; start() stops the run."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], name: str) -> None:
        self.calls, self.name = calls, name

    def __call__(self, *topics: str, **kwargs: Any) -> Any:
        self.calls.append((self.name, kwargs))
        recorder = self

        class Client:
            def subscribe(self, *a: Any, **k: Any) -> None:
                pass

            async def start(self) -> None:
                raise Stop(recorder.name)

            async def stop(self) -> None:
                pass

            def close(self, *a: Any, **k: Any) -> None:
                pass

        return Client()


@pytest.fixture()
def calls() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    yield []


# -- the shared settings --------------------------------------------------------------


def test_kafka_settings_from_env_build_both_client_flavours(secure_env: dict[str, str]) -> None:
    kafka = KafkaSettings.from_env(secure_env)
    aio = kafka.aiokafka_kwargs()
    _assert_sasl(aio)
    _assert_ssl_context(aio["ssl_context"])
    assert aio["bootstrap_servers"] == secure_env["RECSTREAM_KAFKA_BOOTSTRAP"]
    kp = kafka.kafka_python_kwargs()
    _assert_sasl(kp)
    assert (kp["ssl_cafile"], kp["ssl_certfile"], kp["ssl_keyfile"]) == (
        secure_env["RECSTREAM_KAFKA_SSL_CAFILE"],
        secure_env["RECSTREAM_KAFKA_SSL_CERTFILE"],
        secure_env["RECSTREAM_KAFKA_SSL_KEYFILE"],
    )
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    for cls in (AIOKafkaConsumer, AIOKafkaProducer):
        _accepted(cls, aio)
    for cls in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        _accepted(cls, kp)


def test_plain_ssl_and_unknown_protocols(secure_env: dict[str, str]) -> None:
    env = {**secure_env, "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"}
    for name in ("MECHANISM", "USERNAME", "PASSWORD"):
        env.pop(f"RECSTREAM_KAFKA_SASL_{name}")
    aio = KafkaSettings.from_env(env).aiokafka_kwargs()
    assert aio["security_protocol"] == "SSL" and "sasl_mechanism" not in aio
    _assert_ssl_context(aio["ssl_context"])
    with pytest.raises(ValueError, match="security protocol"):
        KafkaSettings.from_env({**secure_env, "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"})


# -- each process's clients -----------------------------------------------------------


def test_worker_app_carries_sasl_credentials_and_tls_context(secure_env: dict[str, str]) -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
    from recstream.stream.app import create_app
    from recstream.stream.settings import WorkerSettings

    settings = WorkerSettings.from_env({**secure_env, "RECSTREAM_WORKER_ID": "w-1"})
    worker = create_app(settings)
    creds = worker.app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert [str(u) for u in worker.app.conf.broker] == [
        "kafka://kafka-1.example:9093",
        "kafka://kafka-2.example:9093",
    ]
    # What Faust's aiokafka transport hands to its consumer and producer.
    auth = dict(credentials_to_aiokafka_auth(creds))
    _assert_sasl(auth)
    _assert_ssl_context(auth["ssl_context"])
    # Faust's aiokafka driver hands this to its consumer as group_instance_id.
    assert worker.app.conf.consumer_group_instance_id == INSTANCE


def test_worker_tansu_detection_uses_the_security_settings(
    secure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kafka
    from recstream.stream import tansu_compat

    calls: list[tuple[str, dict[str, Any]]] = []

    def admin(**kwargs: Any) -> Any:
        calls.append(("admin", kwargs))
        raise Stop("admin")

    monkeypatch.setattr(kafka, "KafkaAdminClient", admin)
    with pytest.raises(tansu_compat.BrokerDetectionError):
        tansu_compat.detect_cluster_id(KafkaSettings.from_env(secure_env), timeout_s=0.01)
    assert calls
    _assert_sasl(calls[0][1])
    assert calls[0][1]["ssl_cafile"] == secure_env["RECSTREAM_KAFKA_SSL_CAFILE"]


def test_scorer_consumer_and_producer(
    secure_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from recstream.inference import service

    monkeypatch.setattr(service, "AIOKafkaConsumer", Recorder(calls, "consumer"))
    monkeypatch.setattr(service, "AIOKafkaProducer", Recorder(calls, "producer"))
    settings = service.ScorerSettings.from_env(secure_env)
    with pytest.raises(Stop):
        asyncio.run(service.serve(settings, asyncio.Event()))
    by_name = dict(calls)
    assert set(by_name) == {"consumer", "producer"}
    assert by_name["consumer"]["group_instance_id"] == INSTANCE
    for name, cls in (("consumer", AIOKafkaConsumer), ("producer", AIOKafkaProducer)):
        _assert_sasl(by_name[name])
        _assert_ssl_context(by_name[name]["ssl_context"])
        _accepted(cls, by_name[name])


def test_scorer_model_updates_consumer(
    secure_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    calls: list[tuple[str, dict[str, Any]]],
    tmp_path: Path,
) -> None:
    from recstream.inference import hotswap, service

    monkeypatch.setattr(hotswap, "AIOKafkaConsumer", Recorder(calls, "updates"))
    (tmp_path / "registry").mkdir()
    env = {**secure_env, "RECSTREAM_MODEL_REGISTRY": str(tmp_path / "registry")}
    with pytest.raises(Stop):
        asyncio.run(service.serve(service.ScorerSettings.from_env(env), asyncio.Event()))
    assert [name for name, _ in calls] == ["updates"]
    _assert_sasl(calls[0][1])
    _assert_ssl_context(calls[0][1]["ssl_context"])


def test_trainer_consumer_and_producer(
    secure_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    calls: list[tuple[str, dict[str, Any]]],
    tmp_path: Path,
) -> None:
    import kafka
    from recstream.trainer.continuous import ContinuousTrainer
    from recstream.trainer.settings import TrainerSettings

    def consumer(*topics: str, **kwargs: Any) -> Any:
        calls.append(("consumer", kwargs))
        return object()

    def producer(**kwargs: Any) -> Any:
        calls.append(("producer", kwargs))
        raise Stop("producer")

    real = {"consumer": kafka.KafkaConsumer, "producer": kafka.KafkaProducer}
    monkeypatch.setattr(kafka, "KafkaConsumer", consumer)
    monkeypatch.setattr(kafka, "KafkaProducer", producer)
    env = {**secure_env, "RECSTREAM_MODEL_REGISTRY": str(tmp_path / "models")}
    settings = TrainerSettings.from_env(env)
    with pytest.raises(Stop):
        ContinuousTrainer(settings, threading.Event()).run()
    by_name = dict(calls)
    assert set(by_name) == {"consumer", "producer"}
    assert by_name["consumer"]["group_instance_id"] == INSTANCE
    for name, cls in real.items():
        kwargs = by_name[name]
        _assert_sasl(kwargs)
        assert kwargs["ssl_cafile"] == secure_env["RECSTREAM_KAFKA_SSL_CAFILE"]
        assert kwargs["ssl_certfile"] == secure_env["RECSTREAM_KAFKA_SSL_CERTFILE"]
        assert kwargs["ssl_keyfile"] == secure_env["RECSTREAM_KAFKA_SSL_KEYFILE"]
        _accepted(cls, kwargs)


def test_dashboard_consumer(
    secure_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    from recstream import dashboard

    monkeypatch.setattr(dashboard, "AIOKafkaConsumer", Recorder(calls, "dashboard"))
    board = dashboard.Dashboard(
        dashboard.DashboardSettings(kafka=KafkaSettings.from_env(secure_env), port=0)
    )

    async def go() -> None:
        try:
            await board.start()
        finally:
            if board._runner is not None:
                await board._runner.cleanup()

    with pytest.raises(Stop):
        asyncio.run(go())
    _assert_sasl(calls[0][1])
    _assert_ssl_context(calls[0][1]["ssl_context"])


def test_demo_and_bench_children_talk_plain_text_to_the_embedded_broker(
    secure_env: dict[str, str],
) -> None:
    """The embedded broker has no TLS listener: a shell's cluster settings must not leak."""
    env = embedded_broker_env("127.0.0.1:9999", base=secure_env, RECSTREAM_PARTITIONS="4")
    assert env["RECSTREAM_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert not {n for n in SECURITY_ENV if n != "RECSTREAM_KAFKA_SECURITY_PROTOCOL"} & set(env)
    kafka = KafkaSettings.from_env(env)
    assert kafka.bootstrap == "127.0.0.1:9999" and kafka.aiokafka_kwargs() == {
        "bootstrap_servers": "127.0.0.1:9999",
        "security_protocol": "PLAINTEXT",
    }
    # Nor a static membership name (two children sharing it would fence each other),
    assert kafka.group_instance_id is None
    # unless the caller names the child.
    named = embedded_broker_env("127.0.0.1:9999", base=secure_env,
                                RECSTREAM_GROUP_INSTANCE_ID="worker-0")
    assert KafkaSettings.from_env(named).group_instance_id == "worker-0"


def test_group_membership_is_dynamic_unless_an_instance_id_is_set() -> None:
    from recstream.stream.app import create_app
    from recstream.stream.settings import WorkerSettings

    assert KafkaSettings.from_env({}).group_instance_id is None
    assert KafkaSettings.from_env({"RECSTREAM_GROUP_INSTANCE_ID": ""}).group_instance_id is None
    worker = create_app(WorkerSettings.from_env({"RECSTREAM_WORKER_ID": "w-1"}))
    assert worker.app.conf.consumer_group_instance_id is None
