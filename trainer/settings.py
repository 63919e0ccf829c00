"""Settings of ``recstream trainer``: read from the environment once, in ``main()``.

Every field has an environment variable (``RECSTREAM_TRAINER_*`` and a few
shared ones) and the CLI can override any of them with a flag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.schemas.settings import KafkaSettings, env_number


@dataclass(frozen=True)
class TrainerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    group: str = "recstream-trainer"
    model_name: str = "recstream"
    registry: Path = Path("models")
    #: the window (RocksDB) and the state file live here
    state_dir: Path = Path("state/trainer")
    items: Path | None = None  # item catalogue with texts (optional)
    # window bounds
    window_events: int = 200  # last N events per user
    window_days: float = 30.0  # last D days (event time)
    # when to run a round: every T minutes or M new events, whichever first
    every_minutes: float = 10.0
    every_events: int = 20_000
    # fine-tuning
    budget_s: float = 120.0  # training seconds per round
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 128
    # the gate
    tolerance: float = 0.005
    min_holdout: int = 20
    # publishing
    keep: int = 5
    #: Write the ONNX export into each version. Off: a scorer on onnxruntime or
    #: TensorRT exports the version itself when it loads it (once, cached), and
    #: one on torch never needs it; an export takes ~10-20 s of a 2-core CPU.
    onnx: bool = True
    fp16: bool = False  # the fp16 ONNX doubles export time and only TensorRT uses it
    # a model trained from scratch (no current version)
    max_len: int = 50
    d_model: int = 64
    layers: int = 2
    heads: int = 2
    torch_threads: int = 0
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.window_events >= 1 and self.window_days > 0, "window bounds must be positive"),
            (self.every_minutes > 0 and self.every_events >= 1, "round triggers must be positive"),
            (self.budget_s > 0 and self.epochs >= 1 and self.lr > 0, "bad fine-tuning bounds"),
            (self.tolerance >= 0 and self.min_holdout >= 1, "bad gate settings"),
            (self.keep >= 1, "keep must be >= 1"),
            (self.batch_size >= 1, "RECSTREAM_TRAINER_BATCH_SIZE must be >= 1"),
            (self.max_len >= 1 and self.d_model >= 1 and self.layers >= 1 and self.heads >= 1
             and self.d_model % self.heads == 0,
             "bad model shape: RECSTREAM_TRAINER_MAX_LEN, _D_MODEL, _LAYERS and _HEADS must be "
             ">= 1 and D_MODEL a multiple of HEADS"),
            (self.torch_threads >= 0, "RECSTREAM_TORCH_THREADS must be >= 0"),
            (self.metrics_port is None or 0 <= self.metrics_port <= 65535,
             "RECSTREAM_METRICS_PORT must be 0..65535"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"trainer settings: {msg}")

    @property
    def window_dir(self) -> Path:
        return self.state_dir / "window"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainerSettings:
        env = os.environ if env is None else env
        p = "RECSTREAM_TRAINER_"

        def get(name: str, default: str) -> str:
            return env.get(p + name) or default

        def num(name: str, default: float, kind: type = int) -> Any:
            return env_number(env, p + name, default, kind)

        state_root = env.get("RECSTREAM_STATE_DIR") or "state"
        items = get("ITEMS", "")
        return cls(
            kafka=KafkaSettings.from_env(env),
            group=get("GROUP", cls.group),
            model_name=get("MODEL_NAME", cls.model_name),
            registry=Path(env.get("RECSTREAM_MODEL_REGISTRY") or "models"),
            state_dir=Path(get("DIR", str(Path(state_root) / "trainer"))),
            items=Path(items) if items else None,
            window_events=num("WINDOW_EVENTS", cls.window_events),
            window_days=num("WINDOW_DAYS", cls.window_days, float),
            every_minutes=num("EVERY_MINUTES", cls.every_minutes, float),
            every_events=num("EVERY_EVENTS", cls.every_events),
            budget_s=num("BUDGET_S", cls.budget_s, float),
            epochs=num("EPOCHS", cls.epochs),
            lr=num("LR", cls.lr, float),
            batch_size=num("BATCH_SIZE", cls.batch_size),
            tolerance=num("TOLERANCE", cls.tolerance, float),
            min_holdout=num("MIN_HOLDOUT", cls.min_holdout),
            keep=num("KEEP", cls.keep),
            onnx=get("ONNX", "1").lower() in ("1", "true", "yes", "on"),
            fp16=get("FP16", "0").lower() in ("1", "true", "yes", "on"),
            max_len=num("MAX_LEN", cls.max_len),
            d_model=num("D_MODEL", cls.d_model),
            layers=num("LAYERS", cls.layers),
            heads=num("HEADS", cls.heads),
            torch_threads=env_number(env, "RECSTREAM_TORCH_THREADS", 0),
            metrics_port=env_number(env, "RECSTREAM_METRICS_PORT", 0) or None,
        )
