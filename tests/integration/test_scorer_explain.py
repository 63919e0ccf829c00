"""The scorer process with ``RECSTREAM_SCORER_EXPLAIN``: recommendations name the past
events they drew on most (torch backend, real broker, real process)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from recstream.schemas import Recommendation, ScoreRequest
from recstream.schemas.topics import RECOMMENDATIONS, SCORE_REQUESTS

from recstream.broker import Broker
from recstream.processes import Child, recstream_command, wait_for
from recstream.readback import consume_all, produce

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
DEADLINE_S = 180.0


def _model_dir(tmp_path: Path) -> Path:
    from recstream.inference.model import ModelConfig, SeqRecModel
    from recstream.inference.model_dir import save_model_dir

    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(n_items=20, max_len=8, d_model=16, n_heads=2, text_dim=4))
    model.set_item_text(torch.randn(21, 4))
    save_model_dir(tmp_path / "model", model.eval(), [f"i{k}" for k in range(1, 21)], {})
    return tmp_path / "model"


def _request(user: int, items: list[str]) -> ScoreRequest:
    ts = [T0 + 60_000 * k for k in range(len(items))]
    return ScoreRequest(
        user_id=f"u{user}",
        items=items,
        ts=ts,
        event_types=["view"] * len(items),
        trigger_event_id=f"t{user}",
        trigger_ts=ts[-1],
        ingest_ms=int(time.time() * 1000),
    )


def test_recommendations_carry_explanations(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **recstream_env,
        "RECSTREAM_MODEL_DIR": str(_model_dir(tmp_path)),
        "RECSTREAM_SCORER_BACKEND": "torch",
        "RECSTREAM_SCORER_EXPLAIN": "3",
        "RECSTREAM_TOP_K": "5",
        "RECSTREAM_TORCH_THREADS": "1",
    }
    scorer = Child("scorer", recstream_command("scorer"), env, tmp_path / "scorer.log").start()
    try:
        requests = [
            _request(u, [f"i{(u + k) % 20 + 1}" for k in range(2 + u % 5)]) for u in range(12)
        ]
        produce(
            broker.bootstrap,
            [(r.user_id.encode(), r.model_dump_json().encode()) for r in requests],
            topic=SCORE_REQUESTS,
        )
        got: dict[str, Recommendation] = {}

        def answered() -> bool:
            scorer.check_alive()
            for record in consume_all(broker.bootstrap, [RECOMMENDATIONS]):
                rec = Recommendation.model_validate_json(record.value)
                got[rec.trigger_event_id] = rec
            return len(got) >= len(requests)

        wait_for(answered, DEADLINE_S, f"every request answered\n{scorer.describe_log()}", 0.5)
        for req in requests:
            rec = got[req.trigger_event_id]
            assert rec.explanation, rec
            named = [e.item_id for e in rec.explanation]
            assert 1 <= len(named) <= 3 and set(named) <= set(req.items)
            weights = [e.weight for e in rec.explanation]
            assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1.0001
            assert not {i.item_id for i in rec.items} & set(req.items)
    finally:
        scorer.terminate()
        if scorer.wait(30) is None:
            scorer.kill()
