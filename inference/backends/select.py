"""Choose and build a scoring backend by name, or automatically.

``auto``: TensorRT where it is importable and a GPU is present; otherwise
ONNX Runtime (its CUDA provider on a GPU where onnxruntime-gpu is installed,
else the CPU one, unless there is a GPU, where torch with CUDA graphs beats a
CPU session); otherwise eager torch. A backend that fails to build is logged
and the next one is tried; a backend asked for by name fails loudly instead.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import torch
from recstream.inference.backends.base import BackendUnavailable, ScoringBackend
from recstream.inference.backends.serving_graph import GRAPH_VERSION
from recstream.inference.export import (
    DEFAULT_K,
    MANIFEST,
    ONNX_FP32,
    ExportError,
    export_onnx_files,
    read_manifest,
    verified_onnx,
)
from recstream.inference.model import SeqRecModel
from recstream.inference.recommender import BACKENDS

log = logging.getLogger(__name__)

#: What ``kind`` may be (``inference.recommender.BACKENDS``).
KINDS = BACKENDS
ONNX_INT8 = "model.int8.onnx"
#: int8 serves only if every probe row's top-K set equals the fp32 reference's
#: and scores are this close.
INT8_ATOL = 5e-2
#: Rows of the int8 probe batch. 16 rows passed an int8 graph whose top-10
#: differed on another 16-row batch (the scorer bench's); near-ties at the
#: K-th place are rare per row, so a refusal needs many rows to show up.
INT8_PROBE_ROWS = 64


def weights_digest(model: SeqRecModel) -> str:
    """A stable id of the weights, for caches when no model version is given."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f"w-{h.hexdigest()[:12]}"


def onnx_dir_for(
    model: SeqRecModel, *, model_dir: Path | None, model_version: str, cache_dir: Path, k: int,
    fp16: bool = False,
) -> Path:
    """A directory holding a verified export of ``model`` with at least ``k``.

    The model version directory's own export when it has one, else an export
    into ``cache_dir/<version>`` (made once, reused by later processes).
    """
    candidates = [Path(model_dir)] if model_dir is not None else []
    cached = Path(cache_dir) / model_version
    candidates.append(cached)
    for d in candidates:
        if not (d / MANIFEST).is_file():
            continue
        manifest = read_manifest(d)
        if manifest.graph_version != GRAPH_VERSION:
            log.info("%s: export from graph version %s, not %s; not used", d,
                     manifest.graph_version, GRAPH_VERSION)
            continue
        if manifest.k >= k and manifest.model_version == model_version and (
            not fp16 or "model.fp16.onnx" in manifest.files
        ):
            verified_onnx(d)  # raises, naming the file, if it is corrupt
            return d
    cached.mkdir(parents=True, exist_ok=True)
    log.info("exporting model %s to ONNX in %s", model_version, cached)
    export_onnx_files(
        model, cached, model_version, k=min(max(k, DEFAULT_K), model.cfg.n_items), fp16=fp16
    )
    return cached


def select_backend(
    kind: str,
    model: SeqRecModel,
    *,
    k: int = DEFAULT_K,
    model_dir: Path | None = None,
    model_version: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    cache_dir: Path | None = None,
    previous: object | None = None,
) -> ScoringBackend:
    """Build the backend ``kind`` (one of :data:`KINDS`) for ``model``.

    ``model_dir``: its version directory, whose ONNX export (``export.json``)
    is used when present. ``device``: "cpu" or "cuda" (default: cuda when
    available). ``cache_dir``: where exports made on the fly and TensorRT
    engines go (default: a ``recstream`` folder in the system temp dir).
    ``previous``: the backend of the version this one replaces (a hot swap);
    TensorRT refits a copy of its engine when the graphs match instead of building.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
    cuda = torch.cuda.is_available()
    device = device or ("cuda" if cuda else "cpu")
    version = model_version or weights_digest(model)
    cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "recstream"
    model = model.eval()

    def build(name: str) -> ScoringBackend:
        return _build(name, model, k=k, model_dir=model_dir, version=version, device=device,
                      threads=threads, cache=cache, previous=previous)

    if kind != "auto":
        return build(kind)
    order = ["tensorrt", "onnxruntime", "torch-cuda-graphs"] if device == "cuda" else []
    order += ["onnxruntime", "torch"]
    for name in dict.fromkeys(order):
        try:
            backend = build(name)
        except (BackendUnavailable, ExportError, ImportError) as exc:
            log.warning("scoring backend %s unavailable: %s", name, exc)
            continue
        log.info("scoring backend: %s on %s", backend.name, backend.device)
        return backend
    raise BackendUnavailable("no scoring backend could be built (see the warnings above)")


def _build(
    name: str, model: SeqRecModel, *, k: int, model_dir: Path | None, version: str, device: str,
    threads: int | None, cache: Path, previous: object | None = None,
) -> ScoringBackend:
    if name in ("torch", "torch-compile", "torch-cuda-graphs"):
        from recstream.inference.backends.torch_backend import TorchBackend

        mode = {"torch": "eager", "torch-compile": "compile", "torch-cuda-graphs": "cuda-graphs"}[name]
        return TorchBackend(model, k=k, mode=mode, device=device, threads=threads)
    if name == "tensorrt":
        from recstream.inference.backends.tensorrt_backend import TensorRTBackend, import_tensorrt

        import_tensorrt()  # fail fast, before an export, where it cannot run
        onnx_dir = onnx_dir_for(model, model_dir=model_dir, model_version=version,
                                cache_dir=cache / "onnx", k=k, fp16=True)
        if isinstance(previous, TensorRTBackend):
            return TensorRTBackend.refit_or_build(previous, onnx_dir, cache_dir=cache / "tensorrt")
        return TensorRTBackend(onnx_dir, cache_dir=cache / "tensorrt")
    from recstream.inference.backends.onnxruntime_backend import (
        OnnxRuntimeBackend,
        import_onnxruntime,
    )

    import_onnxruntime()
    onnx_dir = onnx_dir_for(model, model_dir=model_dir, model_version=version,
                            cache_dir=cache / "onnx", k=k)
    path, _ = verified_onnx(onnx_dir, ONNX_FP32)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path, device="cuda" if device == "cuda" else "cpu", threads=threads)
    return _int8_backend(model, path, cache / "onnx" / version, k=k, threads=threads)


def _int8_backend(
    model: SeqRecModel, fp32_path: Path, out_dir: Path, *, k: int, threads: int | None
) -> ScoringBackend:
    """The int8 graph, only if its top-K agrees with the reference on a probe batch."""
    from recstream.inference.backends.onnxruntime_backend import OnnxRuntimeBackend, quantize_int8
    from recstream.inference.backends.parity import check_backend

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_INT8
    if not path.is_file():
        quantize_int8(fp32_path, path)
    backend = OnnxRuntimeBackend(path, threads=threads, name="onnxruntime-int8")
    parity = check_backend(backend, model, min(k, backend.max_k), batch=INT8_PROBE_ROWS)
    if not parity.holds(INT8_ATOL):
        raise BackendUnavailable(
            f"int8 graph fails top-{k} parity on {INT8_PROBE_ROWS} probe rows ({parity}); "
            "serve fp32")
    return backend
