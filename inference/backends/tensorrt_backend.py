"""TensorRT backend (TensorRT 10 / 11 Python API), imported lazily.

The engine is built from an exported ONNX serving graph:

* precision comes from the ONNX file (strongly typed network). ``fp16`` uses
  ``model.fp16.onnx``, whose time arithmetic, masks and top-K stay float32 by
  construction; this is the only way on TensorRT 11 (weak typing and
  ``BuilderFlag.FP16`` are gone), and on 10.x it is preferred over the FP16
  builder flag, which lets TensorRT run *any* layer in float16, including the
  seconds arithmetic that overflows it. ``fp32`` uses ``model.onnx`` with TF32
  off (for parity checks);
* one optimization profile covers batch 1..``max_batch``, length 1..max_len,
  exclusions 1..``max_exclude``;
* the engine is built refittable (``BuilderFlag.REFIT``) so that a new model
  version with the same graph takes its weights by a refit instead of a full
  rebuild: :meth:`refit` in place, or :meth:`refit_or_build` for a hot swap,
  which refits a *copy* of the running engine (deserialized from its plan)
  while the running one keeps serving, and caches the refitted plan under the
  new version's name;
* the serialized engine is cached on disk per model version, GPU name,
  TensorRT version, precision and profile, written atomically;
* execution uses ``execute_async_v3`` on torch's current CUDA stream with torch
  CUDA tensors as the I/O buffers.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from recstream.inference.backends.base import BackendUnavailable, check_k, trim_padding
from recstream.inference.backends.serving_graph import INPUT_NAMES, OUTPUT_NAMES
from recstream.inference.export import ONNX_FP16, ONNX_FP32, ExportError, verified_onnx
from recstream.inference.features import SequenceBatch

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = 1 << 30  # 1 GiB of builder/runtime scratch


class RefitError(RuntimeError):
    """New weights could not be refitted into the engine (a different graph or shapes)."""


def import_tensorrt() -> Any:
    """``tensorrt`` if it and a CUDA device are present; :class:`BackendUnavailable` saying why not."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed ({exc}); pip install tensorrt") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"TensorRT {trt.__version__} is installed but CUDA is not available")
    return trt


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise ExportError(f"engine I/O tensor has unsupported dtype {dtype}")
    return table[dtype]


def engine_cache_path(cache_dir: Path, model_version: str, precision: str, max_batch: int,
                      max_exclude: int) -> Path:
    """One file per model version x GPU x TensorRT version x precision x profile."""
    trt = import_tensorrt()
    gpu = re.sub(r"[^A-Za-z0-9._-]+", "_", torch.cuda.get_device_name())
    name = f"{model_version}-{gpu}-trt{trt.__version__}-{precision}-b{max_batch}-e{max_exclude}.engine"
    return Path(cache_dir) / name


class TensorRTBackend:
    """A refittable TensorRT engine of the serving graph. One caller at a time."""

    name = "tensorrt"
    device = "cuda"

    def __init__(
        self,
        model_dir: Path,
        *,
        cache_dir: Path,
        precision: str = "fp16",
        max_batch: int = 256,
        max_exclude: int = 2048,
        workspace_bytes: int = DEFAULT_WORKSPACE,
        engine: Any | None = None,
    ) -> None:
        """``engine``: an already deserialized engine of this version (a refitted
        copy); default: the cached plan, else a build."""
        self._trt = trt = import_tensorrt()
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
        onnx_path, manifest = verified_onnx(model_dir, ONNX_FP16 if precision == "fp16" else ONNX_FP32)
        self.name = f"tensorrt-{precision}"
        self.max_k = manifest.k
        self.max_len = manifest.max_len
        self.n_items = manifest.n_items
        self.max_batch = max_batch
        self.max_exclude = max_exclude
        self.precision = precision
        self.model_version = manifest.model_version
        self.onnx_path = onnx_path
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._lock = threading.Lock()  # refit and execution must not overlap
        path = engine_cache_path(cache_dir, manifest.model_version, precision, max_batch, max_exclude)
        self.engine = engine if engine is not None else self._load_cached(path)
        if self.engine is None:
            plan = self._build(onnx_path, workspace_bytes)
            _write_atomic(path, plan)
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan)
            if self.engine is None:
                raise ExportError(f"{onnx_path}: TensorRT built a plan it cannot deserialize")
        self.engine_path = path
        self.context = self.engine.create_execution_context()
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n))
                        for n in (*INPUT_NAMES, *OUTPUT_NAMES)}

    # ---- build -----------------------------------------------------------

    def _load_cached(self, path: Path) -> Any | None:
        if not path.is_file():
            return None
        engine = self._trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:  # stale or corrupt: rebuild rather than fail
            log.warning("cached TensorRT engine %s does not deserialize; rebuilding", path)
        return engine

    def _build(self, onnx_path: Path, workspace_bytes: int) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        # Precision is taken from the ONNX tensor types. Required on 10.x for
        # that; accepted and ignored on 11.x, where every network is strongly typed.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        config.set_flag(trt.BuilderFlag.REFIT)
        if self.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: it is the parity engine
        profile = builder.create_optimization_profile()
        opt_b = min(64, self.max_batch)
        for name in INPUT_NAMES[:4]:
            profile.set_shape(name, min=(1, 1), opt=(opt_b, self.max_len),
                              max=(self.max_batch, self.max_len))
        profile.set_shape("exclude", min=(1, 1), opt=(opt_b, min(256, self.max_exclude)),
                          max=(self.max_batch, self.max_exclude))
        config.add_optimization_profile(profile)
        log.info("building TensorRT engine from %s (can take minutes)", onnx_path)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ExportError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log)")
        return bytes(plan)

    # ---- refit -----------------------------------------------------------

    def refit(self, new_weights_onnx: Path) -> None:
        """Swap in the weights of ``new_weights_onnx`` (same graph, new values).

        The ONNX must come from the same export code, k, catalogue size and
        precision: TensorRT matches weights by initializer name. The engine is
        updated in place, under the lock that execution takes.
        """
        trt = self._trt
        meta = _onnx_metadata(Path(new_weights_onnx))
        want = {"recstream.k": str(self.max_k), "recstream.max_len": str(self.max_len),
                "recstream.n_items": str(self.n_items),
                "recstream.dtype": "float16" if self.precision == "fp16" else "float32"}
        wrong = {key: meta.get(key) for key, value in want.items() if meta.get(key) != value}
        if wrong:
            raise RefitError(f"{new_weights_onnx}: {wrong} differ from this engine's {want}; "
                             "a different graph needs a new engine, not a refit")
        with self._lock:
            _refit_engine(trt, self.engine, self._logger, Path(new_weights_onnx))
            self.model_version = meta.get("recstream.model_version", self.model_version)

    @classmethod
    def refit_or_build(
        cls, previous: TensorRTBackend, model_dir: Path, *, cache_dir: Path
    ) -> TensorRTBackend:
        """The engine of the version in ``model_dir``, to replace ``previous`` in a
        running scorer without disturbing it.

        Same precision and profile as ``previous``. A plan cached for this version
        is loaded; else, when the new ONNX graph has the same structure as the
        running one (:func:`refit_blocker`: same inputs, outputs, nodes and
        initializer shapes; only values differ), a copy of the running engine is
        deserialized from its plan and refitted with the new weights (seconds,
        where a build takes minutes); else a new engine is built.
        """
        trt = previous._trt
        name = ONNX_FP16 if previous.precision == "fp16" else ONNX_FP32
        onnx_path, manifest = verified_onnx(model_dir, name)
        kwargs: dict[str, Any] = {"cache_dir": cache_dir, "precision": previous.precision,
                                  "max_batch": previous.max_batch,
                                  "max_exclude": previous.max_exclude}
        path = engine_cache_path(cache_dir, manifest.model_version, previous.precision,
                                 previous.max_batch, previous.max_exclude)
        if path.is_file():
            return cls(model_dir, **kwargs)
        try:
            reason = refit_blocker(previous.onnx_path, onnx_path)
        except ExportError as exc:  # e.g. the running version's folder was pruned since
            reason = f"the running engine's ONNX cannot be compared: {exc}"
        if reason is None:
            try:
                with previous._lock:  # serialize() must not race an execution or a refit
                    plan = bytes(previous.engine.serialize())
                engine = trt.Runtime(previous._logger).deserialize_cuda_engine(plan)
                if engine is None:
                    raise RefitError("the running engine's plan does not deserialize")
                _refit_engine(trt, engine, previous._logger, onnx_path)
                _write_atomic(path, bytes(engine.serialize()))
                log.info("TensorRT engine of %s refitted from %s's (no rebuild)",
                         manifest.model_version, previous.model_version)
                return cls(model_dir, engine=engine, **kwargs)
            except RefitError as exc:
                reason = str(exc)
        log.info("TensorRT engine of %s is built, not refitted: %s", manifest.model_version,
                 reason)
        return cls(model_dir, **kwargs)

    def refittable_weights(self) -> list[str]:
        """Names of the engine's refittable weights (``Refitter.get_all_weights``)."""
        return list(self._trt.Refitter(self.engine, self._logger).get_all_weights())

    # ---- run -------------------------------------------------------------

    def topk(
        self, batch: SequenceBatch, exclude: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_k(k, self.max_k, self.name)
        batch = trim_padding(batch)
        b = batch.items.shape[0]
        if b > self.max_batch or exclude.shape[1] > self.max_exclude:
            raise ValueError(
                f"{self.name}: batch {b} x exclusions {exclude.shape[1]} exceed the engine's "
                f"profile ({self.max_batch} x {self.max_exclude}); build with larger limits"
            )
        dev = torch.device("cuda")
        tensors = (batch.items, batch.event_types, batch.times, batch.query_times, exclude)
        inputs = {n: t.to(dev, self._dtypes[n], non_blocking=True).contiguous()
                  for n, t in zip(INPUT_NAMES, tensors, strict=True)}
        with self._lock:
            ctx = self.context
            for name, t in inputs.items():
                ctx.set_input_shape(name, tuple(t.shape))
                ctx.set_tensor_address(name, t.data_ptr())
            outputs = {}
            for name in OUTPUT_NAMES:
                shape = tuple(ctx.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=dev)
                ctx.set_tensor_address(name, outputs[name].data_ptr())
            stream = torch.cuda.current_stream(dev)
            if not ctx.execute_async_v3(stream_handle=stream.cuda_stream):
                raise RuntimeError(f"{self.name}: execute_async_v3 failed")
            stream.synchronize()  # inputs/outputs must outlive the kernels
        scores = outputs["scores"].float().cpu()
        indices = outputs["indices"].long().cpu()
        return scores[:, :k], indices[:, :k]


def _refit_engine(trt: Any, engine: Any, logger: Any, onnx_path: Path) -> None:
    """Refit ``engine`` with the initializers of ``onnx_path`` (matched by name)."""
    try:
        refitter = trt.Refitter(engine, logger)  # fails on an engine built without REFIT
    except Exception as exc:
        raise RefitError(f"the engine is not refittable: {exc}") from exc
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = "; ".join(str(parser_refitter.get_error(i))
                           for i in range(parser_refitter.num_errors))
        raise RefitError(f"{onnx_path}: weights do not fit this engine: {errors}")
    missing = refitter.get_missing_weights()
    if missing:
        raise RefitError(f"{onnx_path}: no values for weights {list(missing)[:5]}")
    if not refitter.refit_cuda_engine():
        raise RefitError(f"{onnx_path}: TensorRT refit_cuda_engine failed")


def graph_signature(path: Path) -> dict[str, Any]:
    """What must be equal for one ONNX file's weights to refit an engine built from
    another: metadata (except the version), inputs, outputs, the node list and each
    initializer's name, dtype and shape. Only initializer *values* may differ."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX file: {exc}") from exc

    def dims(value: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    g = model.graph
    return {
        "meta": {p.key: p.value for p in model.metadata_props
                 if p.key != "recstream.model_version"},
        "inputs": [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in g.input],
        "outputs": [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in g.output],
        "nodes": [(n.op_type, list(n.input), list(n.output)) for n in g.node],
        "initializers": [(t.name, t.data_type, list(t.dims)) for t in g.initializer],
    }


def refit_blocker(engine_onnx: Path, new_onnx: Path) -> str | None:
    """None when ``new_onnx`` can refit an engine built from ``engine_onnx``, else why not.

    Conservative: the exporter merges initializers of equal value, so a rare
    coincidence of values changes the structure too, and then a new engine is
    built (correct, only slower)."""
    old, new = graph_signature(engine_onnx), graph_signature(new_onnx)
    for part in ("meta", "inputs", "outputs", "nodes", "initializers"):
        if old[part] != new[part]:
            return f"the ONNX graphs differ in their {part}"
    return None


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX file: {exc}") from exc
    return {p.key: p.value for p in model.metadata_props}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
