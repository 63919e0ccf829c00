"""A self-describing model version directory, written atomically.

Layout (everything needed to serve, nothing else)::

    <version>/
      config.json        ModelConfig fields + {"format": 1, "version": ...}
      model.safetensors  weights and buffers (the frozen text table, id mask)
      item_ids.json      catalogue: item_ids[i] is the raw id of model index i + 1
      metrics.json       validation/test figures, training facts

The directory is written under a temporary name beside the target and renamed
into place, so a reader never sees half a model (rename is atomic on POSIX
within one file system).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recstream.inference.model import ModelConfig, SeqRecModel
from safetensors.torch import load_file, save_file

FORMAT = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ITEM_IDS = "item_ids.json"
METRICS = "metrics.json"


@dataclass
class LoadedModel:
    model: SeqRecModel
    item_ids: list[str]
    version: str
    metrics: dict[str, Any]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (model files can be large)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model_dir(
    out: Path,
    model: SeqRecModel,
    item_ids: list[str],
    metrics: dict[str, Any],
    overwrite: bool = False,
) -> str:
    """Write a version directory at ``out`` atomically; return its version string.

    The version is ``<dir name>-<first 12 hex of the weights' sha256>`` so two
    different models never share a version, and a re-save of the same weights does.
    """
    out = Path(out)
    if len(item_ids) != model.cfg.n_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {model.cfg.n_items} items")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new version directory or overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS))
        version = f"{out.name}-{sha256_file(tmp / WEIGHTS)[:12]}"
        cfg = {"format": FORMAT, "version": version, **model.cfg.to_dict()}
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / ITEM_IDS).write_text(json.dumps(item_ids) + "\n")
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; readers may be other users
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if out.exists():  # overwrite: move the old one aside first, then swap
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


class ModelDirError(ValueError):
    """A version directory whose files do not make a model (damaged, edited, or
    from another model); the message names the file. ``reason``: "catalogue" when
    the item ids do not match the model, else None (the hot-swap's refusal labels)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def _json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(value, kind):
        raise ModelDirError(f"{path}: a JSON {kind.__name__} was expected, "
                            f"found {type(value).__name__}")
    return value


def load_model_dir(path: Path) -> LoadedModel:
    """Load a version directory written by :func:`save_model_dir` (eval mode, CPU).

    Raises ``FileNotFoundError`` when a file is missing and :class:`ModelDirError`
    (a ``ValueError``) when one is damaged or does not fit the others."""
    path = Path(path)
    missing = [f for f in (CONFIG, WEIGHTS, ITEM_IDS) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a model directory: missing {', '.join(missing)}")
    raw = _json(path / CONFIG, dict)
    if raw.get("format") != FORMAT:
        raise ModelDirError(f"{path / CONFIG}: unsupported format {raw.get('format')!r}")
    try:
        model = SeqRecModel(ModelConfig.from_dict(raw))
        version = str(raw["version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path / CONFIG}: not a model configuration ({exc!r})") from exc
    try:
        weights = load_file(str(path / WEIGHTS))
    except Exception as exc:  # safetensors raises its own SafetensorError on a bad header
        raise ModelDirError(f"{path / WEIGHTS}: cannot be read ({exc})") from exc
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelDirError(f"{path / WEIGHTS} does not fit {CONFIG}: {exc}") from exc
    model.eval()
    item_ids = _json(path / ITEM_IDS, list)
    if len(item_ids) != model.cfg.n_items:
        # Each id names the item of one output row: a list of another length maps
        # every recommendation to the wrong item, or to none.
        raise ModelDirError(f"{path / ITEM_IDS}: {len(item_ids)} item ids for a model of "
                            f"{model.cfg.n_items} items", reason="catalogue")
    metrics = _json(path / METRICS, dict) if (path / METRICS).is_file() else {}
    return LoadedModel(model, [str(i) for i in item_ids], version, metrics)
