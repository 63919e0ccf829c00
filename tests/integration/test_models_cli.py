"""``recstream models list`` and ``recstream models rollback`` against a real broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import save_model_dir
from recstream.inference.registry import Registry, verify_version_dir
from recstream.schemas.messages import ModelUpdate
from recstream.schemas.topics import MODEL_UPDATES
from typer.testing import CliRunner

from recstream.broker import Broker
from recstream.cli import app
from recstream.processes import free_port

pytestmark = pytest.mark.integration


def publish_tiny(reg: Registry, ndcg: float) -> str:
    model = SeqRecModel(ModelConfig(n_items=3, max_len=4, d_model=4, n_heads=1, n_layers=1,
                                    use_text=False))
    staged = reg.staging_dir()
    save_model_dir(staged, model, ["a", "b", "c"], {"holdout": {"ndcg@10": ndcg, "hr@10": 0.5}})
    return reg.publish(staged).version


def test_list_and_rollback(broker: Broker, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "models")
    v1, v2 = publish_tiny(reg, 0.25), publish_tiny(reg, 0.5)
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("RECSTREAM_MODEL_REGISTRY", str(reg.root))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert v1 in listed.output and v2 in listed.output and "0.5000" in listed.output
    assert reg.current().version == v2

    rolled = runner.invoke(app, ["models", "rollback", v1, "--registry", str(reg.root)])
    assert rolled.exit_code == 0, rolled.output
    assert reg.current().version == v1

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(MODEL_UPDATES, p) for p in consumer.partitions_for_topic(MODEL_UPDATES)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records: list = []
    deadline = time.monotonic() + 30
    while not records and time.monotonic() < deadline:
        records = [r for rs in consumer.poll(timeout_ms=500).values() for r in rs]
    consumer.close()
    assert len(records) == 1 and records[0].key == b"recstream"
    update = ModelUpdate.model_validate_json(records[0].value)
    assert update.version == v1 and update.metrics["ndcg@10"] == 0.25
    verify_version_dir(Path(update.uri), update.sha256)

    unknown = runner.invoke(app, ["models", "rollback", "v000009-abc"])
    assert unknown.exit_code == 2 and "no version" in unknown.output


def test_a_registry_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    """Before, a mistyped --registry listed 'no versions published', like an empty one."""
    runner = CliRunner()
    for args in (["models", "list"], ["models", "rollback", "v000001-abc"]):
        out = runner.invoke(app, [*args, "--registry", str(tmp_path / "typo")])
        assert out.exit_code == 2 and "no model registry at" in out.output, out.output


def test_a_rollback_that_cannot_be_announced_says_what_happened(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    """No broker: CURRENT has moved but nobody was told; before, a traceback after it."""
    reg = Registry(tmp_path / "models")
    v1, _ = publish_tiny(reg, 0.25), publish_tiny(reg, 0.5)
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    out = CliRunner().invoke(app, ["models", "rollback", v1, "--registry", str(reg.root)])
    assert out.exit_code == 1, out.output
    assert reg.current().version == v1
    assert f"CURRENT now names {v1}, but announcing it on model-updates failed" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_list_survives_a_damaged_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    v1 = publish_tiny(reg, 0.25)
    (reg.root / v1 / "metrics.json").write_text("[1, 2]")  # a list, not an object
    (reg.root / "CURRENT").write_text("v000009-gone\n")
    out = CliRunner().invoke(app, ["models", "list", "--registry", str(reg.root)])
    assert out.exit_code == 0, out.output
    assert v1 in out.output and "CURRENT is broken: no version 'v000009-gone'" in out.output
