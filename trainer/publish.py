"""Publish a trained model into the registry and announce it on ``model-updates``.

Order: write the whole version under the registry's staging
folder (weights, config, id maps, metrics, and the ONNX export unless the
trainer's ``onnx`` setting is off), seal it with the manifest and
rename it into place (:meth:`inference.registry.Registry.publish`), then send
the :class:`schemas.ModelUpdate` whose ``sha256`` is the manifest's hash and
whose ``uri`` is the absolute path of the version folder. A scorer checks the
folder with :func:`inference.registry.verify_version_dir` before loading it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recstream.inference.export import DEFAULT_K, export_onnx_files
from recstream.inference.model import SeqRecModel
from recstream.inference.model_dir import CONFIG, save_model_dir
from recstream.inference.registry import STAGING, Registry, VersionInfo
from recstream.schemas.messages import ModelUpdate

#: Figures copied from a version's metrics.json into its ModelUpdate.
_ANNOUNCED = {
    ("holdout", "ndcg@10"): "ndcg@10",
    ("holdout", "hr@10"): "hr@10",
    ("holdout", "users"): "holdout_users",
    ("holdout_current", "ndcg@10"): "current_ndcg@10",
    ("holdout_current", "hr@10"): "current_hr@10",
    ("finetune", "loss"): "loss",
    ("window", "train_events"): "train_events",
    ("window", "new_items"): "new_items",
}


def publish_version(
    registry: Registry,
    model: SeqRecModel,
    item_ids: list[str],
    metrics: Mapping[str, Any],
    *,
    onnx: bool = True,
    fp16: bool = False,
    k: int = DEFAULT_K,
) -> VersionInfo:
    """Stage, export (``onnx``), seal and rename a new version into ``registry``; make it
    CURRENT."""
    staged = registry.staging_dir()
    try:
        version = save_model_dir(staged, model, item_ids, dict(metrics))
        if onnx:
            export_onnx_files(model, staged, version, fp16=fp16, k=k)
        return registry.publish(staged)
    except BaseException:
        if staged.parent.parent.name == STAGING:  # leave no half-written version behind
            shutil.rmtree(staged.parent, ignore_errors=True)
        raise


def announced_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures of a version's metrics.json, flat, as floats."""
    out: dict[str, float] = {}
    for (section, key), name in _ANNOUNCED.items():
        value = (metrics.get(section) or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def model_update(info: VersionInfo, model_name: str) -> ModelUpdate:
    """The ``model-updates`` message for a published version."""
    config = json.loads((Path(info.path) / CONFIG).read_text())
    return ModelUpdate(
        model_name=model_name,
        version=info.version,
        uri=str(Path(info.path).resolve()),
        sha256=info.sha256,
        config=config,
        metrics=announced_metrics(info.metrics),
        published_ms=info.published_ms,
    )
