"""Every CPU backend returns the same top-K as eager ``SeqRecModel.topk``.

Tolerances: float32 graphs 1e-4 on scores and identical top-K sets; the
float16 ONNX 1e-2 and identical sets on these probes; int8 is kept only where
its parity holds (``select_backend`` decides; the test reports what it saw).
GPU backends live in test_backends_gpu.py.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from recstream.inference.backends.base import (
    BackendUnavailable,
    ScoringBackend,
    bucket_size,
    pad_exclusions,
    trim_padding,
)
from recstream.inference.backends.onnxruntime_backend import OnnxRuntimeBackend, quantize_int8
from recstream.inference.backends.parity import compare, probe_inputs, reference_topk
from recstream.inference.backends.select import INT8_ATOL, INT8_PROBE_ROWS, select_backend
from recstream.inference.backends.torch_backend import TorchBackend
from recstream.inference.export import ONNX_FP16, ONNX_FP32, ExportError, export_onnx_files
from recstream.inference.features import SequenceBatch
from test_backends_support import MAX_LEN, N_ITEMS, SHAPES, K, small_model

FP32_ATOL = 1e-4
FP16_ATOL = 1e-2


@pytest.fixture(scope="module")
def ort_fp32(exported) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(exported / ONNX_FP32, threads=1)


def _check(backend: ScoringBackend, model, batch: int, length: int, atol: float, seed: int = 0):
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=batch, length=length, seed=seed + length)
    got = backend.topk(probe, exclude, K)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.int64
    assert got[0].shape == (batch, K) and got[1].shape == (batch, K)
    parity = compare(reference_topk(model, probe, exclude, K), got)
    assert parity.holds(atol), f"{backend.name} at batch {batch}, length {length}: {parity}"
    return got


@pytest.mark.parametrize(("batch", "length"), SHAPES)
def test_torch_eager_parity(model, batch, length):
    _check(TorchBackend(model, k=K), model, batch, length, FP32_ATOL)


@pytest.mark.parametrize(("batch", "length"), SHAPES)
def test_onnxruntime_fp32_parity(model, ort_fp32, batch, length):
    _check(ort_fp32, model, batch, length, FP32_ATOL)


def test_onnxruntime_parity_of_a_last_layer_age_model(tmp_path):
    """``age_bias_layers="last"`` exports without the [B, L, L] ages and serves
    what its eager torch serves."""
    model = small_model(seed=2, age_bias_layers="last")
    export_onnx_files(model, tmp_path, "test-last", k=K, fp16=False)
    backend = OnnxRuntimeBackend(tmp_path / ONNX_FP32, threads=1)
    for batch, length in [(1, 1), (7, 3), (16, MAX_LEN)]:
        _check(backend, model, batch, length, FP32_ATOL)


def test_onnxruntime_cpu_scores_big_batches_in_row_chunks_with_the_same_result(model, exported):
    whole = OnnxRuntimeBackend(exported / ONNX_FP32, threads=1, attention_budget=None)
    # 16 rows x 24^2: a budget of 5 rows per run makes 4 runs of 4 rows.
    chunked = OnnxRuntimeBackend(exported / ONNX_FP32, threads=1,
                                 attention_budget=5 * MAX_LEN * MAX_LEN)
    runs = []
    session_run = chunked.session.run
    chunked.session = type("Counting", (), {"run": lambda self, out, feed: (
        runs.append(len(feed["items"])) or session_run(out, feed))})()
    got = _check(chunked, model, 16, MAX_LEN, FP32_ATOL)
    assert runs == [4, 4, 4, 4]
    want = whole.topk(*probe_inputs(N_ITEMS, MAX_LEN, batch=16, length=MAX_LEN, seed=MAX_LEN), K)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
    # A batch within the budget is one run.
    runs.clear()
    _check(chunked, model, 5, MAX_LEN, FP32_ATOL)
    assert runs == [5]


@pytest.mark.parametrize(("batch", "length"), [(1, 3), (7, MAX_LEN)])
def test_onnxruntime_fp16_graph_parity(model, exported, batch, length):
    _check(OnnxRuntimeBackend(exported / ONNX_FP16, threads=1), model, batch, length, FP16_ATOL)


def test_onnx_graph_buckets_ages_on_powers_of_two_like_the_model(model, ort_fp32):
    # Whole-second gaps of 2**k - 1: Log(x)/ln 2 in ONNX is one ulp low at some
    # of them; the graph's repair must keep its buckets equal to the model's.
    n = MAX_LEN
    gaps = torch.tensor([2.0**k - 1 for k in range(1, n + 1)]).clamp(max=2.0**24)
    times = -torch.flip(torch.cumsum(gaps, 0), [0])
    times = (times - times[-1]).repeat(3, 1)
    items = torch.randint(1, N_ITEMS + 1, (3, n), generator=torch.Generator().manual_seed(5))
    probe = SequenceBatch(items, torch.ones_like(items), times, times.clone())
    exclude = torch.zeros(3, 1, dtype=torch.long)
    parity = compare(reference_topk(model, probe, exclude, K), ort_fp32.topk(probe, exclude, K))
    assert parity.holds(FP32_ATOL), parity


def test_k_is_bounded_by_the_export_and_smaller_k_is_a_prefix(model, ort_fp32):
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=4, seed=9)
    full = ort_fp32.topk(probe, exclude, K)
    top3 = ort_fp32.topk(probe, exclude, 3)
    assert torch.equal(top3[1], full[1][:, :3])
    with pytest.raises(ValueError, match="k=11"):
        ort_fp32.topk(probe, exclude, K + 1)


def test_excluded_and_history_items_never_returned(model, ort_fp32):
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=7, seed=11)
    _, idx = ort_fp32.topk(probe, exclude, K)
    for row in range(7):
        banned = set(exclude[row].tolist()) | set(probe.items[row].tolist()) | {0}
        assert not banned & set(idx[row].tolist())


def test_int8_is_served_only_with_parity(model, exported, tmp_path, capsys):
    path = quantize_int8(exported / ONNX_FP32, tmp_path / "model.int8.onnx")
    int8 = OnnxRuntimeBackend(path, threads=1, name="onnxruntime-int8")
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=16, seed=1)
    parity = compare(reference_topk(model, probe, exclude, K), int8.topk(probe, exclude, K))
    with capsys.disabled():
        print(f"\nint8 dynamic quantization parity on the test model: {parity}")
    assert parity.overlap >= 0.8  # close, even where not close enough to serve
    try:
        chosen = select_backend("onnxruntime-int8", model, k=K, model_dir=exported,
                                model_version="test-v1", cache_dir=tmp_path / "cache", device="cpu")
    except BackendUnavailable as exc:
        assert f"parity on {INT8_PROBE_ROWS} probe rows" in str(exc)
    else:
        assert chosen.name == "onnxruntime-int8"
        # Served only where it holds on the whole 64-row probe, not just on 16 rows.
        wide, wide_exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=INT8_PROBE_ROWS, seed=0)
        assert compare(reference_topk(model, wide, wide_exclude, K),
                       chosen.topk(wide, wide_exclude, K)).holds(INT8_ATOL)


def test_select_auto_on_cpu_uses_the_model_dirs_export(model, exported, tmp_path):
    backend = select_backend("auto", model, k=K, model_dir=exported, model_version="test-v1",
                             cache_dir=tmp_path, device="cpu")
    assert backend.name == "onnxruntime"
    assert isinstance(backend, OnnxRuntimeBackend) and backend.path.parent == exported
    assert not (tmp_path / "onnx").exists()  # nothing re-exported


def test_select_rejects_unknown_and_unavailable(model, tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        select_backend("tpu", model)
    if importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable):
            select_backend("tensorrt", model, cache_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            select_backend("torch-cuda-graphs", model, device="cpu")


def test_corrupt_onnx_file_named_by_the_backend(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match=str(bad)):
        OnnxRuntimeBackend(bad)


def test_trim_padding_is_exact(model):
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=5, length=6, seed=2)
    wide = SequenceBatch(*(torch.nn.functional.pad(t, (MAX_LEN - 6, 0)) for t in
                           (probe.items, probe.event_types, probe.times, probe.query_times)))
    assert trim_padding(wide).items.shape[1] == 6
    eager = TorchBackend(model, k=K)
    a, b = eager.topk(wide, exclude, K), eager.topk(probe, exclude, K)
    assert torch.equal(a[1], b[1])
    assert compare(reference_topk(model, wide, exclude, K), a).holds(FP32_ATOL)


def test_trim_padding_edges():
    empty = SequenceBatch(torch.zeros(3, 8, dtype=torch.long), torch.zeros(3, 8, dtype=torch.long),
                          torch.zeros(3, 8), torch.zeros(3, 8))
    assert trim_padding(empty).items.shape == (3, 1)  # all padding: one column stays
    full = SequenceBatch(torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long),
                         torch.zeros(2, 8), torch.zeros(2, 8))
    assert trim_padding(full) is full
    items = torch.tensor([[0, 0, 0, 0, 0, 4, 5, 6], [0, 0, 0, 0, 0, 0, 0, 9]])
    part = SequenceBatch(items, items.clone(), torch.zeros(2, 8), torch.zeros(2, 8))
    assert trim_padding(part).items.tolist() == [[4, 5, 6], [0, 0, 9]]
    assert trim_padding(part, multiple=4).items.shape[1] == 4


def test_pad_exclusions_and_buckets():
    out = pad_exclusions([[3, 4, 5], [], [7]])
    assert out.tolist() == [[3, 4, 5, 0], [0, 0, 0, 0], [7, 0, 0, 0]]
    assert pad_exclusions([[]]).shape == (1, 1)
    assert [bucket_size(n) for n in (0, 1, 2, 3, 64, 65)] == [1, 1, 2, 4, 64, 128]


@pytest.mark.slow
def test_torch_compile_parity(model):
    backend = TorchBackend(model, k=K, mode="compile", dynamic=False)
    _check(backend, model, 7, MAX_LEN, FP32_ATOL)


def test_onnxruntime_threads_spin_unless_told_not_to(exported, monkeypatch) -> None:
    from recstream.inference.backends.onnxruntime_backend import OnnxRuntimeBackend, spin_from_env

    def spinning(backend: OnnxRuntimeBackend) -> str:
        opts = backend.session.get_session_options()
        try:
            return opts.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: ONNX Runtime's default, spinning
            return "unset"

    monkeypatch.delenv("RECSTREAM_ORT_SPIN", raising=False)
    assert spinning(OnnxRuntimeBackend(exported / ONNX_FP32, threads=2)) == "unset"
    monkeypatch.setenv("RECSTREAM_ORT_SPIN", "0")
    assert spinning(OnnxRuntimeBackend(exported / ONNX_FP32, threads=2)) == "0"
    with pytest.raises(ValueError, match="RECSTREAM_ORT_SPIN must be 0 or 1"):
        spin_from_env({"RECSTREAM_ORT_SPIN": "yes"})


def test_attention_budget_setting() -> None:
    from recstream.inference.backends.onnxruntime_backend import (
        CPU_ATTENTION_BUDGET,
        attention_budget_from_env,
    )

    assert attention_budget_from_env({}) == CPU_ATTENTION_BUDGET
    assert attention_budget_from_env({"RECSTREAM_ORT_ATTENTION_BUDGET": "0"}) is None
    assert attention_budget_from_env({"RECSTREAM_ORT_ATTENTION_BUDGET": " 90000 "}) == 90_000
    for bad in ("-5", "lots"):
        with pytest.raises(ValueError, match="RECSTREAM_ORT_ATTENTION_BUDGET must be"):
            attention_budget_from_env({"RECSTREAM_ORT_ATTENTION_BUDGET": bad})
