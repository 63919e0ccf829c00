"""ONNX Runtime backend (CPU EP, or CUDA EP where onnxruntime-gpu is installed),
plus the int8 dynamic quantization of an exported graph.

CPU sessions run with every graph optimization (ORT_ENABLE_ALL: Gemm/bias,
Gelu and LayerNorm fusions, constant folding) and ``threads`` intra-op threads
(default: the cores this process may use), one inter-op thread (the graph is a
chain; parallel branches would only fight over the same cores). Between runs
the intra-op threads spin waiting for work, ONNX Runtime's default, unless
``RECSTREAM_ORT_SPIN=0``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recstream.inference.backends.base import BackendUnavailable, check_k, trim_padding
from recstream.inference.backends.serving_graph import INPUT_NAMES
from recstream.inference.export import ExportError
from recstream.inference.features import SequenceBatch

#: On the CPU, the most attention elements per head (rows x L x L) one session
#: run computes; a larger batch is scored in row chunks, so that the
#: ``[H, B, L, L]`` tensors stay in cache (at L=200: runs of 37 rows). Measured
#: on this project's 2-core VM, the scorer service at L=200 in three
#: alternating rounds, whole batches against this budget: 1,157/1,057/1,069 ->
#: 1,424/1,290/1,431 users/s
#: (bench/results/2026-12-02-cpu-scorer-service-l200-budget-*.json); at L=50
#: batches stay whole (256 x 50^2 is under the budget). Rows are independent,
#: so chunks change no result.
CPU_ATTENTION_BUDGET = 1_500_000
#: ``attention_budget`` default: read it with :func:`attention_budget_from_env`.
BUDGET_FROM_ENV = -1
#: Overrides it (0: whole batches): caches differ from CPU to CPU.
ATTENTION_BUDGET_ENV = "RECSTREAM_ORT_ATTENTION_BUDGET"


#: "0" stops ONNX Runtime's intra-op threads spinning between runs (default
#: "1": they spin, ONNX Runtime's default). Spinning buys throughput on cores
#: of its own: b64/L200 on this project's 2-core VM, 7,260/7,339 users/s
#: spinning against 6,117/6,279 without. Where the scorer shares its cores
#: with the broker and the worker, it burns what they need between
#: micro-batches: in `recstream bench stream` at 1,000 events/s with the
#: sequence model the scorer used 87.5-88.5% of a core spinning, 33-36% without.
SPIN_ENV = "RECSTREAM_ORT_SPIN"


def spin_from_env(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ONNX Runtime's threads may spin: ``RECSTREAM_ORT_SPIN`` "1" or unset."""
    raw = env.get(SPIN_ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{SPIN_ENV} must be 0 or 1, got {raw!r}")
    return raw != "0"


def attention_budget_from_env(env: Mapping[str, str] = os.environ) -> int | None:
    """The CPU row-chunk budget: ``RECSTREAM_ORT_ATTENTION_BUDGET`` if set (0: None,
    whole batches), else :data:`CPU_ATTENTION_BUDGET`."""
    raw = env.get(ATTENTION_BUDGET_ENV, "").strip()
    if not raw:
        return CPU_ATTENTION_BUDGET
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"{ATTENTION_BUDGET_ENV} must be a non-negative integer (0: whole batches), got {raw!r}"
        )
    return value or None


def import_onnxruntime() -> Any:
    """``onnxruntime``, or :class:`BackendUnavailable` saying it is not installed."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed: {exc}") from exc
    return onnxruntime


def default_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeBackend:
    """An exported serving graph in an ONNX Runtime session."""

    def __init__(
        self,
        onnx_path: Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        name: str = "onnxruntime",
        attention_budget: int | None = BUDGET_FROM_ENV,
    ) -> None:
        """``attention_budget``: rows x L^2 per CPU session run (None: whole
        batches; :data:`BUDGET_FROM_ENV`: :func:`attention_budget_from_env`)."""
        ort = import_onnxruntime()
        path = Path(onnx_path)
        if not path.is_file():
            raise ExportError(f"{path}: ONNX file not found")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        if not spin_from_env():
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); "
                    f"available: {ort.get_available_providers()}"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ExportError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "recstream.k" not in meta:
            raise ExportError(f"{path}: not a recstream serving graph (no recstream.k metadata)")
        self.max_k = int(meta["recstream.k"])
        self.model_version = meta.get("recstream.model_version", "")
        self.name = name
        self.device = device
        self.path = path
        #: Rows x L^2 per run (None: whole batches); on a GPU, big batches win.
        if attention_budget == BUDGET_FROM_ENV:
            attention_budget = attention_budget_from_env()
        self.attention_budget = attention_budget if device == "cpu" else None

    def topk(
        self, batch: SequenceBatch, exclude: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_k(k, self.max_k, self.name)
        batch = trim_padding(batch)
        tensors = (batch.items, batch.event_types, batch.times, batch.query_times, exclude)
        arrays = [t.numpy() for t in tensors]
        rows, n = batch.items.shape
        chunk = rows
        if self.attention_budget is not None and rows * n * n > self.attention_budget:
            parts = -(-rows * n * n // self.attention_budget)
            chunk = -(-rows // parts)
        outs = [
            self.session.run(None, {
                name: np.ascontiguousarray(a[start : start + chunk])
                for name, a in zip(INPUT_NAMES, arrays, strict=True)
            })
            for start in range(0, rows, chunk)
        ]  # fmt: skip
        if len(outs) == 1:
            scores, indices = outs[0]
        else:
            scores = np.concatenate([o[0] for o in outs])
            indices = np.concatenate([o[1] for o in outs])
        return torch.from_numpy(scores[:, :k]), torch.from_numpy(indices[:, :k])


# ---- int8 -------------------------------------------------------------------


def _gemm_to_matmul(model: Any) -> Any:
    """Rewrite ``Gemm(x, W, b)`` with constant ``W`` as ``MatMul(x, W') + b``.

    ONNX Runtime's dynamic quantizer only quantizes MatMul (its integer-op
    registry has no Gemm), and the exporter writes every 2-D linear as Gemm.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0) or not plain:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w = np.ascontiguousarray(w.T if attrs.get("transB", 0) else w)
        w_name = f"{node.input[1]}.kn"
        model.graph.initializer.append(numpy_helper.from_array(w, w_name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}.mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{node.name}.mm"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                          name=f"{node.name}.bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of the Transformer's linear layers (per channel).

    The item-scoring MatMul (user state x item table) stays float32: it decides
    the ranking directly, and at d=64 it is a small share of the time. Whether
    the result is good enough is a parity question the caller answers
    (``select_backend`` and the bench keep it only if top-K parity holds).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = onnx.load(str(src))
    metadata = {p.key: p.value for p in source.metadata_props}
    model = _gemm_to_matmul(source)
    keep_fp32 = [n.name for n in model.graph.node
                 if n.op_type == "MatMul" and "item_out_t" in n.input]
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        staged = Path(tmp) / "matmul.onnx"
        onnx.save_model(model, str(staged))
        out = Path(tmp) / dst.name
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is for CNNs
        try:
            quantize_dynamic(staged, out, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32)
        finally:
            root.setLevel(level)
        quantized = onnx.load(str(out))
        del quantized.metadata_props[:]
        metadata["recstream.dtype"] = "int8-dynamic"
        for key, value in metadata.items():  # the quantizer does not carry them over
            quantized.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        onnx.save_model(quantized, str(out))
        onnx.checker.check_model(str(out))
        os.chmod(out, 0o644)
        os.replace(out, dst)
    return dst
