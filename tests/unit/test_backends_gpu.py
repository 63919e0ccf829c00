"""GPU backends against eager ``SeqRecModel.topk`` (on the CPU): torch on CUDA (eager,
CUDA graphs, compiled), the float16 graph, ONNX Runtime's CUDA provider and
TensorRT (fp32, fp16, engine cache, refit). Each skips with its reason where
CUDA, onnxruntime-gpu or TensorRT is absent.

Tolerances: fp32 1e-3 (TF32 may be on in cuBLAS) with identical top-K sets;
fp16 5e-2 and a top-K overlap of at least 0.9 (half precision may swap
near-ties at the K-th place).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from recstream.inference.backends.parity import Parity, compare, probe_inputs, reference_topk
from recstream.inference.backends.torch_backend import TorchBackend
from recstream.inference.export import ONNX_FP32, export_onnx_files
from test_backends_support import MAX_LEN, N_ITEMS, SHAPES, K, small_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none here"),
]
FP32_ATOL = 1e-3
FP16_ATOL = 5e-2

needs_tensorrt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed"
)


def _parity(backend, model, batch: int, length: int, seed: int = 0) -> Parity:
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=batch, length=length, seed=seed + length)
    got = backend.topk(probe, exclude, K)
    assert got[0].device.type == "cpu" and got[1].dtype == torch.int64
    return compare(reference_topk(model, probe, exclude, K), got)


@pytest.mark.parametrize(("batch", "length"), SHAPES)
def test_torch_cuda_eager(model, batch, length):
    parity = _parity(TorchBackend(model, k=K, device="cuda"), model, batch, length)
    assert parity.holds(FP32_ATOL), parity


def test_torch_cuda_graphs_reuse_buckets(model):
    backend = TorchBackend(model, k=K, mode="cuda-graphs", device="cuda")
    for batch, length in [*SHAPES, (5, 3), (7, MAX_LEN), (1, 1)]:  # repeats replay a bucket
        parity = _parity(backend, model, batch, length, seed=batch)
        assert parity.holds(FP32_ATOL), (batch, length, parity)
    assert len(backend._graphs) < len(SHAPES) + 3


def test_torch_cuda_fp16(model):
    backend = TorchBackend(model, k=K, mode="cuda-graphs", device="cuda", dtype=torch.float16)
    for batch, length in SHAPES:
        parity = _parity(backend, model, batch, length)
        assert parity.overlap >= 0.9, (batch, length, parity)


@pytest.mark.slow
@pytest.mark.parametrize("compile_mode", [None, "reduce-overhead"])
def test_torch_cuda_compile(model, compile_mode):
    backend = TorchBackend(model, k=K, mode="compile", device="cuda", dynamic=False,
                           compile_mode=compile_mode)
    for batch, length in [(7, MAX_LEN), (5, MAX_LEN)]:  # same bucket: compiled once
        parity = _parity(backend, model, batch, length)
        assert parity.holds(FP32_ATOL), parity


def test_onnxruntime_cuda_provider(model, exported):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no CUDA provider here: {ort.get_available_providers()}")
    from recstream.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(exported / ONNX_FP32, device="cuda")
    for batch, length in SHAPES:
        parity = _parity(backend, model, batch, length)
        assert parity.holds(FP32_ATOL), parity


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_parity_and_engine_cache(model, exported, tmp_path, precision):
    from recstream.inference.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(exported, cache_dir=tmp_path, precision=precision, max_batch=16,
                              max_exclude=8)
    for batch, length in SHAPES:
        parity = _parity(backend, model, batch, length)
        if precision == "fp32":
            assert parity.holds(FP32_ATOL), parity
        else:
            assert parity.overlap >= 0.9, parity
    assert backend.engine_path.is_file()
    again = TensorRTBackend(exported, cache_dir=tmp_path, precision=precision, max_batch=16,
                            max_exclude=8)
    assert again.engine_path == backend.engine_path  # loaded, not rebuilt


@needs_tensorrt
def test_tensorrt_refit_takes_new_weights(model, exported, tmp_path):
    from recstream.inference.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(exported, cache_dir=tmp_path, precision="fp32", max_batch=16,
                              max_exclude=8)
    assert backend.refittable_weights()
    other = small_model(seed=7)
    new_dir = tmp_path / "v2"
    new_dir.mkdir()
    export_onnx_files(other, new_dir, "test-v2", k=K, fp16=False)
    backend.refit(new_dir / ONNX_FP32)
    assert backend.model_version == "test-v2"
    parity = _parity(backend, other, 7, MAX_LEN)
    assert parity.holds(FP32_ATOL), parity


@needs_tensorrt
def test_tensorrt_hot_swap_refits_a_copy_and_caches_it(model, exported, tmp_path):
    """A hot swap: the new version's engine is a refitted copy of the running one
    (which keeps its own weights), and its plan is cached under the new version."""
    from recstream.inference.backends.tensorrt_backend import TensorRTBackend, engine_cache_path

    running = TensorRTBackend(exported, cache_dir=tmp_path, precision="fp32", max_batch=16,
                              max_exclude=8)
    other = small_model(seed=7)
    new_dir = tmp_path / "v2"
    new_dir.mkdir()
    export_onnx_files(other, new_dir, "test-v2", k=K, fp16=False)
    swapped = TensorRTBackend.refit_or_build(running, new_dir, cache_dir=tmp_path)
    assert swapped.model_version == "test-v2" and swapped.engine is not running.engine
    assert _parity(swapped, other, 7, MAX_LEN).holds(FP32_ATOL)
    assert _parity(running, model, 7, MAX_LEN).holds(FP32_ATOL)  # untouched
    assert engine_cache_path(tmp_path, "test-v2", "fp32", 16, 8).is_file()

