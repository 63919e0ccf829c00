"""The model registry: publish seals and renames, verify refuses every kind of damage."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.inference.model_dir import WEIGHTS, save_model_dir
from recstream.inference.registry import MANIFEST, ArtifactError, Registry, verify_version_dir
from test_backends_support import small_model


def _publish(reg: Registry, seed: int = 0) -> object:
    model = small_model(seed=seed, steps=1)
    staged = reg.staging_dir()
    save_model_dir(staged, model, [f"i{i}" for i in range(model.cfg.n_items)], {"ndcg@10": 0.1})
    return reg.publish(staged)


def test_publish_orders_versions_and_points_current(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    a = _publish(reg, 0)
    b = _publish(reg, 1)
    assert [v.version for v in reg.versions()] == [a.version, b.version]
    assert a.version.startswith("v000001-") and b.version.startswith("v000002-")
    assert reg.current().version == b.version
    assert not any((tmp_path / ".staging").iterdir())  # staging cleaned up
    manifest = verify_version_dir(b.path, b.sha256)
    assert manifest["version"] == b.version and WEIGHTS in manifest["files"]
    reg.set_current(a.version)
    assert reg.current().version == a.version
    with pytest.raises(KeyError, match="no published version"):
        reg.set_current("v000009-deadbeef")


def test_prune_keeps_newest_and_current(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    vs = [_publish(reg, s).version for s in range(4)]
    reg.set_current(vs[0])
    assert reg.prune(keep=2) == vs[1:2]
    assert [v.version for v in reg.versions()] == [vs[0], *vs[2:]]


def test_verify_refuses_damage(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    v = _publish(reg)
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(v.path, "0" * 64)
    assert e.value.reason == "checksum"
    weights = v.path / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt or replaced") as e:
        verify_version_dir(v.path, v.sha256)
    assert e.value.reason == "checksum"
    weights.unlink()
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(v.path, v.sha256)
    assert e.value.reason == "missing"
    (v.path / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(v.path)
    assert e.value.reason == "unreadable"
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(tmp_path / "nope")
    assert e.value.reason == "missing"
