"""When may a new version's ONNX refit a running TensorRT engine? Only when the two
graphs are the same but for initializer values. The comparison is pure ONNX, so it
is tested here without TensorRT (the refit itself is in test_backends_gpu.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.inference.backends.tensorrt_backend import graph_signature, refit_blocker
from recstream.inference.export import ONNX_FP16, ONNX_FP32, export_onnx_files
from test_backends_support import K, small_model


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shapes as the session's exported model, other weights and version."""
    out = tmp_path_factory.mktemp("retrained")
    export_onnx_files(small_model(seed=7), out, "test-v2", k=K, fp16=False)
    return out


def test_same_graph_new_weights_can_refit(exported: Path, retrained: Path) -> None:
    assert refit_blocker(exported / ONNX_FP32, retrained / ONNX_FP32) is None
    old, new = graph_signature(exported / ONNX_FP32), graph_signature(retrained / ONNX_FP32)
    assert old["initializers"] and old == new  # only values (and the version) differ


def test_a_different_graph_needs_a_build(exported: Path) -> None:
    # Precision differs: the fp16 graph's initializers and metadata are not the fp32 ones.
    reason = refit_blocker(exported / ONNX_FP32, exported / ONNX_FP16)
    assert reason is not None and "differ" in reason
