"""Export the serving graph (encode, score, mask, top-K) to ONNX.

A version directory gains, beside the weights::

    model.onnx          float32 serving graph (ONNX Runtime, TensorRT 10)
    model.fp16.onnx     float16 variant (TensorRT 11 takes precision from the ONNX)
    export.json         k, opset, shapes, and the sha256 of each file: written last

Each file is written under a temporary name in the same directory and renamed
into place, and ``export.json`` only after the ONNX files, so a reader that
goes by the manifest never sees half an export. A trainer publishing a new
version should call :func:`export_onnx_files` on its temporary directory
*before* renaming that into place (readers never see half a version); :func:`export_model_dir`
adds an export to a directory that is already published.

The exporter is torch's dynamo-based one (``dynamo=True``, the default and the
maintained path in torch 2.13; the TorchScript exporter is deprecated), at
opset 18: LayerNormalization needs 17, and TensorRT 10's parser covers 18.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from recstream.inference.backends.serving_graph import (
    GRAPH_VERSION,
    INPUT_NAMES,
    OUTPUT_NAMES,
    ServingGraph,
)
from recstream.inference.model import SeqRecModel
from recstream.inference.model_dir import sha256_file

ONNX_FP32 = "model.onnx"
ONNX_FP16 = "model.fp16.onnx"
MANIFEST = "export.json"
MANIFEST_FORMAT = 1
DEFAULT_K = 10
OPSET = 18
#: Query chunks of the full attention layers (see ServingGraph): measured best
#: on CPU at L=200 among 1, 2, 4, 8 (bench/scorer.py).
DEFAULT_ATTN_CHUNKS = 4


#: Loggers of the exporter's own passes and their levels while it runs: at INFO
#: they write a line per folded constant and rewritten slice (150-odd lines per
#: export into a scorer's or a benchmark's log), and torch.onnx warns about
#: torchvision ops it cannot register, which the serving graph never uses.
EXPORTER_LOG_LEVELS = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING,
                       "torch.onnx": logging.ERROR}


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Raise the exporter's loggers to :data:`EXPORTER_LOG_LEVELS`; restore them after."""
    loggers = {name: logging.getLogger(name) for name in EXPORTER_LOG_LEVELS}
    before = {name: logger.level for name, logger in loggers.items()}
    for name, logger in loggers.items():
        logger.setLevel(max(EXPORTER_LOG_LEVELS[name], logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(before[name])


class ExportError(RuntimeError):
    """An export could not be written, or a written one is missing or corrupt."""


@dataclass(frozen=True)
class ExportManifest:
    """What ``export.json`` says: enough to check and serve the ONNX files."""

    k: int
    opset: int
    n_items: int
    max_len: int
    exclude_history: bool
    attn_chunks: int
    model_version: str
    #: file name -> {"sha256": ..., "dtype": "float32" | "float16"}
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    torch_version: str = torch.__version__
    graph_version: int = GRAPH_VERSION
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def _example_inputs(model: SeqRecModel, attn_chunks: int) -> tuple[torch.Tensor, ...]:
    """Small valid inputs with batch, length and exclusion sizes all different and
    >= 2, so that the exporter keeps each a separate dynamic dimension; the length
    exceeds the chunk count, or empty chunks would pin it to the example's."""
    b, n, e = 3, min(model.cfg.max_len, 2 * attn_chunks + 5), 4
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, model.cfg.n_items + 1, (b, n), generator=gen)
    items[0, 0] = 0  # some padding, so no mask branch is traced away
    event_types = torch.ones(b, n, dtype=torch.long)
    times = -torch.arange(n - 1, -1, -1, dtype=torch.float32).repeat(b, 1) * 60.0
    exclude = torch.randint(0, model.cfg.n_items + 1, (b, e), generator=gen)
    return items, event_types, times, times.clone(), exclude


def _dynamic_shapes(max_len: int) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("seq", min=1, max=max_len) if max_len > 1 else None
    n_exclude = torch.export.Dim("n_exclude", min=1)
    seq_dims = {0: batch, 1: seq} if seq is not None else {0: batch}
    shapes: dict[str, dict[int, Any]] = {name: dict(seq_dims) for name in INPUT_NAMES[:4]}
    shapes["exclude"] = {0: batch, 1: n_exclude}
    return shapes


def export_onnx(
    model: SeqRecModel,
    path: Path,
    *,
    k: int = DEFAULT_K,
    dtype: torch.dtype = torch.float32,
    attn_chunks: int = DEFAULT_ATTN_CHUNKS,
    exclude_history: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write the serving graph of ``model`` to ``path`` (atomically); return its sha256.

    Inputs ``items, event_types, times, query_times`` ``[batch, seq]`` and
    ``exclude`` ``[batch, n_exclude]`` (0-padded item indices); outputs ``scores``
    ``[batch, k]`` float32 and ``indices`` ``[batch, k]`` int64. The file passes
    ``onnx.checker`` (full check, with shape inference) before it is renamed in.
    """
    import onnx

    path = Path(path)
    graph = ServingGraph(model, k, dtype=dtype, exclude_history=exclude_history,
                         attn_chunks=attn_chunks, onnx_friendly=True).eval()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings(), quiet_exporter():
            warnings.simplefilter("ignore")  # exporter chatter about axis renames
            program = torch.onnx.export(
                graph,
                _example_inputs(model, attn_chunks),
                None,
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(model.cfg.max_len),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        proto = program.model_proto
        _check_dynamic(proto, model.cfg.max_len)
        for node in proto.graph.node:  # exporter debug info: source paths, stack traces
            del node.metadata_props[:]
        meta = {
            "recstream.k": str(k),
            "recstream.dtype": str(dtype).removeprefix("torch."),
            "recstream.n_items": str(model.cfg.n_items),
            "recstream.max_len": str(model.cfg.max_len),
            "recstream.exclude_history": str(exclude_history).lower(),
            "recstream.graph_version": str(GRAPH_VERSION),
            **(metadata or {}),
        }
        for key, value in meta.items():
            proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        onnx.save_model(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a scorer running as another user
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"exporting {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def _check_dynamic(proto: Any, max_len: int) -> None:
    """The exporter may silently pin a dynamic dimension to the example's size."""
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        fixed = [i for i, d in enumerate(dims) if not d.dim_param and not (i == 1 and max_len == 1)]
        if fixed:
            raise ExportError(f"input {value.name!r} lost its dynamic dimension(s) {fixed}: "
                              f"{[d.dim_value or d.dim_param for d in dims]}")


def export_onnx_files(
    model: SeqRecModel,
    out_dir: Path,
    model_version: str,
    *,
    k: int = DEFAULT_K,
    fp16: bool = True,
    attn_chunks: int = DEFAULT_ATTN_CHUNKS,
    exclude_history: bool = True,
) -> ExportManifest:
    """Write ``model.onnx`` (+ ``model.fp16.onnx``) and then ``export.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    meta = {"recstream.model_version": model_version}
    files: dict[str, dict[str, str]] = {}
    variants = [(ONNX_FP32, torch.float32)] + ([(ONNX_FP16, torch.float16)] if fp16 else [])
    for name, dtype in variants:
        digest = export_onnx(model, out_dir / name, k=k, dtype=dtype, attn_chunks=attn_chunks,
                             exclude_history=exclude_history, metadata=meta)
        files[name] = {"sha256": digest, "dtype": str(dtype).removeprefix("torch.")}
    manifest = ExportManifest(
        k=k, opset=OPSET, n_items=model.cfg.n_items, max_len=model.cfg.max_len,
        exclude_history=exclude_history, attn_chunks=attn_chunks,
        model_version=model_version, files=files,
    )
    _write_atomic(out_dir / MANIFEST, manifest.to_json())
    return manifest


def export_model_dir(
    model_dir: Path, *, k: int = DEFAULT_K, fp16: bool = True,
    attn_chunks: int = DEFAULT_ATTN_CHUNKS,
) -> ExportManifest:
    """Add (or redo) the ONNX export of a published model version directory."""
    from recstream.inference.model_dir import load_model_dir

    loaded = load_model_dir(Path(model_dir))
    return export_onnx_files(loaded.model, Path(model_dir), loaded.version, k=k, fp16=fp16,
                             attn_chunks=attn_chunks)


def read_manifest(model_dir: Path) -> ExportManifest:
    """``export.json`` of ``model_dir``; :class:`ExportError` if absent or unreadable."""
    path = Path(model_dir) / MANIFEST
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unsupported format {raw.get('format')!r}")
        return ExportManifest(**raw)
    except FileNotFoundError:
        raise ExportError(f"{path}: no ONNX export here (run export_model_dir first)") from None
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path}: unreadable export manifest: {exc}") from exc


def verified_onnx(model_dir: Path, name: str = ONNX_FP32) -> tuple[Path, ExportManifest]:
    """Path of an exported file whose sha256 matches the manifest, and the manifest.

    Raises :class:`ExportError` naming the file when it is missing, was changed
    or truncated after export, or does not parse as ONNX.
    """
    import onnx

    manifest = read_manifest(model_dir)
    path = Path(model_dir) / name
    entry = manifest.files.get(name)
    if entry is None:
        raise ExportError(f"{path}: not listed in {MANIFEST} (exported: {sorted(manifest.files)})")
    if not path.is_file():
        raise ExportError(f"{path}: listed in {MANIFEST} but missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ExportError(f"{path}: sha256 {digest[:12]}… != {entry['sha256'][:12]}… in {MANIFEST}"
                          " (corrupt or replaced after export)")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"{path}: not a valid ONNX model: {exc}") from exc
    return path, manifest


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    """``python -m inference.export MODEL_DIR``: add the ONNX export to a version directory."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="top-K baked into the graph")
    parser.add_argument("--no-fp16", action="store_true", help="skip model.fp16.onnx")
    args = parser.parse_args(argv)
    manifest = export_model_dir(args.model_dir, k=args.k, fp16=not args.no_fp16)
    for name, entry in manifest.files.items():
        print(f"{args.model_dir / name}  sha256={entry['sha256']}")


if __name__ == "__main__":
    main()
