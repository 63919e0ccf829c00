"""Hot-swap pieces that need no broker: which updates are acted on (message order,
rollbacks, stale re-reads), where an update may point, and what is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry
from recstream.inference.hotswap import Refused, SwapMetrics, backend_kind, load_version
from recstream.inference.hotswap_policy import Announcement, UpdatePolicy, newest_first, resolve_uri
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import save_model_dir
from recstream.inference.registry import ArtifactError, Registry
from recstream.inference.service import ScorerSettings
from recstream.schemas import ModelUpdate

K = 5


def _a(version: str, offset: int, partition: int = 0, name: str = "m",
       published_ms: int = 0) -> Announcement:
    update = ModelUpdate(model_name=name, version=version, uri=version, sha256="0" * 64,
                         published_ms=published_ms or 1_700_000_000_000 + offset)
    return Announcement(update, partition, offset, time.monotonic())


def test_message_order_decides_and_a_rollback_is_served() -> None:
    p = UpdatePolicy(serving="v000002-x")
    assert p.consider(_a("v000003-x", 5)) is None
    p.serving = "v000003-x"
    # A rollback: a newer message naming an older folder. Served, by message order.
    assert p.consider(_a("v000002-x", 6, published_ms=1)) is None
    # The same messages read again (a reconnect, a restart's catch-up): stale.
    assert p.consider(_a("v000003-x", 5)) == "stale"
    assert p.consider(_a("v000002-x", 6)) == "stale"


def test_duplicates_and_other_models_are_ignored() -> None:
    p = UpdatePolicy(model_name="m", serving="v1")
    assert p.consider(_a("v1", 0)) == "already_serving"
    assert p.consider(_a("v2", 1, name="other")) == "other_model"
    p.loading = "v2"
    assert p.consider(_a("v2", 2)) == "already_loading"
    # While v2 loads, a message naming the served v1 is a rollback to act on after it.
    assert p.consider(_a("v1", 3)) is None


def test_catch_up_tries_the_newest_message_first() -> None:
    msgs = [_a("v1", 0), _a("v3", 1), _a("v2", 2, published_ms=5)]  # the last is a rollback
    assert [a.update.version for a in newest_first(msgs)] == ["v2", "v3", "v1"]


def test_uris_must_name_a_folder_inside_the_registry(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    (root / "v000001-a").mkdir(parents=True)
    want = (root / "v000001-a").resolve()
    assert resolve_uri("v000001-a", root) == want
    assert resolve_uri(str(want), root) == want
    assert resolve_uri(f"file://{want}", root) == want
    for bad in ("../elsewhere", "/etc", str(root), "s3://bucket/v1", f"file://{tmp_path}"):
        with pytest.raises(ArtifactError) as err:
            resolve_uri(bad, root)
        assert err.value.reason == "uri"


def _publish(root: Path, seed: int, n_items: int = 40, short_catalogue: bool = False
             ) -> ModelUpdate:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_items=n_items, max_len=8, d_model=16, n_heads=1, n_layers=1,
                      text_dim=8, dropout=0.0)
    reg = Registry(root)
    staged = reg.staging_dir()
    save_model_dir(staged, SeqRecModel(cfg).eval(), [f"i{n}" for n in range(n_items)], {})
    if short_catalogue:  # a trainer bug: ids and weights disagree, sealed by the manifest
        (staged / "item_ids.json").write_text('["i0", "i1"]\n')
    info = reg.publish(staged)
    return ModelUpdate(model_name="m", version=info.version, uri=str(info.path),
                       sha256=info.sha256, published_ms=info.published_ms)


def _load(update: ModelUpdate, root: Path, k: int = K):
    return load_version(Announcement(update, 0, 0, time.monotonic()), root, backend="torch",
                        k=k, threads=1, previous=None, recent=())


def test_a_good_version_loads_warm_and_reports_its_timings(tmp_path: Path) -> None:
    update = _publish(tmp_path, 1)
    loaded = _load(update, tmp_path)
    assert loaded.model.version == update.version
    assert backend_kind(loaded.model) == "torch"
    assert set(loaded.timings) == {"verify_s", "load_s", "warm_s"}
    assert loaded.published_ms == update.published_ms


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("sha", "checksum"),
        ("flip", "checksum"),
        ("missing", "missing"),
        ("version", "mismatch"),
        ("outside", "uri"),
        ("catalogue", "catalogue"),
    ],
)
def test_a_bad_version_is_refused_with_its_reason(tmp_path: Path, damage: str, reason: str
                                                  ) -> None:
    update = _publish(tmp_path, 2, short_catalogue=damage == "catalogue")
    folder = Path(update.uri)
    if damage == "sha":
        update = update.model_copy(update={"sha256": "f" * 64})
    elif damage == "flip":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "model.safetensors").write_bytes(bytes(data))
    elif damage == "missing":
        (folder / "item_ids.json").unlink()
    elif damage == "version":
        update = update.model_copy(update={"version": "v000009-other"})
    elif damage == "outside":
        update = update.model_copy(update={"uri": str(tmp_path.parent)})
    with pytest.raises(Refused) as err:
        _load(update, tmp_path)
    assert err.value.reason == reason, err.value


def test_swap_metrics_and_settings() -> None:
    registry = CollectorRegistry()
    metrics = SwapMetrics(registry)
    metrics.serving(int(time.time() * 1000) - 5000)
    age = registry.get_sample_value("recstream_scorer_model_age_seconds")
    assert age is not None and 4 < age < 60
    metrics.refused.labels("checksum").inc()
    assert registry.get_sample_value("recstream_scorer_model_refused_total",
                                     {"reason": "checksum"}) == 1
    s = ScorerSettings.from_env({"RECSTREAM_MODEL_REGISTRY": "/models",
                                 "RECSTREAM_MODEL_NAME": "seqrec"})
    assert s.model_registry == Path("/models") and s.model_name == "seqrec"
    assert ScorerSettings.from_env({}).model_registry is None
