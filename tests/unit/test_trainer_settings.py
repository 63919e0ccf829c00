"""``TrainerSettings.from_env``: variables, defaults, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.trainer.settings import TrainerSettings


def test_defaults_and_overrides() -> None:
    d = TrainerSettings.from_env({})
    assert d.registry == Path("models") and d.window_dir == Path("state/trainer/window")
    assert d.items is None and d.metrics_port is None and not d.fp16 and d.onnx
    assert not TrainerSettings.from_env({"RECSTREAM_TRAINER_ONNX": "0"}).onnx
    s = TrainerSettings.from_env({
        "RECSTREAM_MODEL_REGISTRY": "/r", "RECSTREAM_STATE_DIR": "/s",
        "RECSTREAM_TRAINER_EVERY_EVENTS": "7", "RECSTREAM_TRAINER_EVERY_MINUTES": "0.5",
        "RECSTREAM_TRAINER_TOLERANCE": "0.02", "RECSTREAM_TRAINER_ITEMS": "/c.item",
        "RECSTREAM_TRAINER_FP16": "1", "RECSTREAM_METRICS_PORT": "9100",
        "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    })
    assert (s.registry, s.state_file) == (Path("/r"), Path("/s/trainer/state.json"))
    assert (s.every_events, s.every_minutes, s.tolerance) == (7, 0.5, 0.02)
    assert s.items == Path("/c.item") and s.fp16 and s.metrics_port == 9100
    assert s.kafka.security_protocol == "SASL_SSL"


@pytest.mark.parametrize("name, value", [("EVERY_EVENTS", "0"), ("KEEP", "0"),
                                         ("TOLERANCE", "-0.1"), ("WINDOW_DAYS", "0"),
                                         ("HEADS", "0"), ("LAYERS", "-1"), ("BATCH_SIZE", "0")])
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="trainer settings"):  # not ZeroDivisionError
        TrainerSettings.from_env({f"RECSTREAM_TRAINER_{name}": value})


@pytest.mark.parametrize("name", ["RECSTREAM_TRAINER_WINDOW_EVENTS", "RECSTREAM_TRAINER_LR",
                                  "RECSTREAM_TORCH_THREADS", "RECSTREAM_PARTITIONS",
                                  "RECSTREAM_METRICS_PORT"])
def test_a_value_that_is_no_number_is_named(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be"):
        TrainerSettings.from_env({name: "x"})


def test_metrics_port_out_of_range() -> None:
    with pytest.raises(ValueError, match="RECSTREAM_METRICS_PORT must be 0..65535"):
        TrainerSettings.from_env({"RECSTREAM_METRICS_PORT": "99999"})
