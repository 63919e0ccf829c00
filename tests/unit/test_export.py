"""The serving graph equals ``SeqRecModel.topk``; its ONNX export is checked, dynamic,
self-describing and fails loudly when damaged."""

from __future__ import annotations

import json
import logging

import onnx
import pytest
import torch
from recstream.inference.backends.parity import compare, probe_inputs, reference_topk
from recstream.inference.backends.serving_graph import ServingGraph
from recstream.inference.export import (
    EXPORTER_LOG_LEVELS,
    MANIFEST,
    ONNX_FP16,
    ONNX_FP32,
    ExportError,
    export_model_dir,
    export_onnx,
    read_manifest,
    sha256_file,
    verified_onnx,
)
from recstream.inference.features import log_time_bucket
from recstream.inference.model_dir import save_model_dir
from test_backends_support import MAX_LEN, N_ITEMS, SHAPES, K, small_model

FP32_ATOL = 1e-4


@pytest.mark.parametrize("onnx_friendly", [False, True])  # fused attention / plain ops
@pytest.mark.parametrize("chunks", [1, 4])
@pytest.mark.parametrize(("batch", "length"), SHAPES)
def test_serving_graph_equals_model_topk(model, batch, length, chunks, onnx_friendly):
    _serving_graph_topk(model, batch, length, chunks, onnx_friendly)


def _serving_graph_topk(model, batch, length, chunks, onnx_friendly):
    """The serving graph's top-K on a probe batch, checked against ``model.topk``;
    returns (graph output, probe, exclude)."""
    graph = ServingGraph(model, K, attn_chunks=chunks, onnx_friendly=onnx_friendly).eval()
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=batch, length=length, seed=length)
    with torch.inference_mode():
        got = graph(probe.items, probe.event_types, probe.times, probe.query_times, exclude)
    parity = compare(reference_topk(model, probe, exclude, K), got)
    assert parity.holds(FP32_ATOL), parity
    return got, probe, exclude


@pytest.fixture(scope="module")
def last_layer_age_model():
    return small_model(seed=1, age_bias_layers="last")


@pytest.mark.parametrize("onnx_friendly", [False, True])
@pytest.mark.parametrize(("batch", "length", "chunks"), [(7, 3, 1), (16, MAX_LEN, 1),
                                                         (16, MAX_LEN, 4)])
def test_serving_graph_of_a_last_layer_age_model_equals_its_topk(
        last_layer_age_model, batch, length, chunks, onnx_friendly):
    got, probe, exclude = _serving_graph_topk(last_layer_age_model, batch, length, chunks,
                                              onnx_friendly)
    # The ages still count: without the last layer's bias the lists change.
    model_without = small_model(seed=1, age_bias_layers="last")
    with torch.no_grad():
        model_without.age_bias.weight.zero_()
    assert not compare(reference_topk(model_without, probe, exclude, K), got).holds(FP32_ATOL)


def _old_and_unordered(batch: int, seed: int):
    """A probe whose events reach past the oldest age bucket (2**30 s) by up to
    2**40 s, and whose rows hold events newer than later ones (negative ages)."""
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=batch, length=MAX_LEN, seed=seed)
    g = torch.Generator().manual_seed(seed)
    times, query = probe.times.clone(), probe.query_times.clone()
    old = -(2.0 ** torch.randint(28, 41, (batch, MAX_LEN // 3), generator=g).float())
    times[:, : MAX_LEN // 3] += old
    query[:, : MAX_LEN // 3] += old
    times[:, MAX_LEN // 2] += 5e6  # later than the events after it
    query[:, MAX_LEN // 2] += 5e6
    return type(probe)(probe.items, probe.event_types, times, query), exclude


@pytest.mark.parametrize("chunks", [1, 4])
def test_serving_graph_equals_model_topk_for_ancient_and_unordered_events(model, chunks,
                                                                          tmp_path):
    # The full layers' age lookup maps every age past the oldest bucket to it,
    # and only masked pairs to the masked logit, in torch and through ONNX Runtime.
    import onnxruntime as ort
    from recstream.inference.export import export_onnx

    probe, exclude = _old_and_unordered(16, seed=11)
    inputs = (probe.items, probe.event_types, probe.times, probe.query_times, exclude)
    want = reference_topk(model, probe, exclude, K)
    for onnx_friendly in (False, True):
        graph = ServingGraph(model, K, attn_chunks=chunks, onnx_friendly=onnx_friendly).eval()
        with torch.inference_mode():
            parity = compare(want, graph(*inputs))
        assert parity.holds(FP32_ATOL), (onnx_friendly, parity)
    path = tmp_path / "graph.onnx"
    export_onnx(model, path, k=K, attn_chunks=chunks)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = dict(zip(("items", "event_types", "times", "query_times", "exclude"),
                     (t.numpy() for t in inputs), strict=True))
    scores, indices = session.run(None, feeds)
    parity = compare(want, (torch.from_numpy(scores), torch.from_numpy(indices)))
    assert parity.holds(FP32_ATOL), parity


def test_full_layer_age_lookup_clamps_real_ages_and_masks_only_the_marker(model):
    graph = ServingGraph(model, K)
    nb = model.cfg.n_time_buckets
    real = torch.tensor([0.0, -3.0, 1.0, 2.0**29, 2.0**30, 2.0**31, 2.0**45, 2.0**60])
    age = graph._bucket0(real, top=100).to(torch.long)
    clamped = graph._bucket0(real).to(torch.long)
    assert int(age.max()) < 100 and int(clamped.max()) == nb - 2
    assert torch.equal(graph.age_bias[..., age], graph.age_bias[..., clamped])
    marked = graph._bucket0(torch.tensor([2.0**100, 2.0**101, 2.0**100 + 2.0**40]), top=100)
    assert marked.tolist() == [100.0, 100.0, 100.0]
    assert bool((graph.age_bias[..., 100] == graph.attn_masked).all())


def test_history_exclusion_can_be_turned_off(model):
    graph = ServingGraph(model, K, exclude_history=False).eval()
    probe, exclude = probe_inputs(N_ITEMS, MAX_LEN, batch=7, seed=3)
    with torch.inference_mode():
        got = graph(probe.items, probe.event_types, probe.times, probe.query_times, exclude)
    ref = reference_topk(model, probe, exclude, K, exclude_history=False)
    assert compare(ref, got).holds(FP32_ATOL)


def test_bucket_matches_model_at_powers_of_two(model):
    # Gaps of exactly 2**k - 1 s sit on a bucket edge, where Log(x)/ln 2 can land
    # one ulp low; the graph repairs that so it buckets as the model does.
    graph = ServingGraph(model, K)
    edges = [2.0**k + d for k in range(0, 31) for d in (-2.0, -1.0, -0.5, 0.0, 0.001)]
    seconds = torch.tensor([0.0, -5.0, *edges], dtype=torch.float32)
    want = log_time_bucket(seconds, model.cfg.n_time_buckets)
    got = graph._bucket0(seconds).to(torch.long) + 1
    assert torch.equal(got, want)


def _edge_seconds() -> torch.Tensor:
    """Gaps whose ``1 + s`` is within 300 float32 steps of a power of two, both sides."""
    powers = torch.tensor([2.0**k for k in range(0, 33)], dtype=torch.float32)
    near = powers.view(torch.int32).unsqueeze(1) + torch.arange(-300, 301, dtype=torch.int32)
    return torch.cat([torch.tensor([0.0, -5.0, 1e30]), near.view(torch.float32).flatten() - 1.0])


def test_exported_bucket_matches_model_near_every_power_of_two(model, tmp_path):
    # What ONNX Runtime computes (Log / ln 2, then the repair), not torch's log2.
    import onnxruntime as ort

    class Bucket(torch.nn.Module):  # only what ServingGraph._bucket0 reads
        def __init__(self, graph: ServingGraph) -> None:
            super().__init__()
            self.cfg = graph.cfg
            self.register_buffer("log2_steps", graph.log2_steps.clone())

        def forward(self, seconds: torch.Tensor) -> torch.Tensor:
            return ServingGraph._bucket0(self, seconds)  # type: ignore[arg-type]

    seconds = _edge_seconds()
    path = tmp_path / "bucket.onnx"
    torch.onnx.export(
        Bucket(ServingGraph(model, K, onnx_friendly=True)), (seconds[:4],), str(path),
        input_names=["s"], dynamic_shapes={"seconds": {0: "n"}}, dynamo=True,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"s": seconds.numpy()})[0]).to(torch.long) + 1
    assert torch.equal(got, log_time_bucket(seconds, model.cfg.n_time_buckets))


def test_export_files_manifest_and_checker(exported):
    manifest = read_manifest(exported)
    assert manifest.k == K and manifest.n_items == N_ITEMS and manifest.max_len == MAX_LEN
    assert manifest.opset >= 17
    assert set(manifest.files) == {ONNX_FP32, ONNX_FP16}
    for name, entry in manifest.files.items():
        path = exported / name
        assert sha256_file(path) == entry["sha256"]
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["recstream.k"] == str(K)
        assert meta["recstream.model_version"] == "test-v1"
        dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
        assert dims["items"] == ["batch", "seq"] and dims["exclude"] == ["batch", "n_exclude"]
        assert not any("stack_trace" in p.key for n in proto.graph.node for p in n.metadata_props)
    fp16 = onnx.load(str(exported / ONNX_FP16))
    kinds = {onnx.TensorProto.DataType.Name(i.data_type) for i in fp16.graph.initializer}
    assert "FLOAT16" in kinds  # weights in half precision; time math stays float32


def test_corrupt_onnx_is_reported_with_its_path(exported, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in (ONNX_FP32, MANIFEST):
        (damaged / name).write_bytes((exported / name).read_bytes())
    data = bytearray((damaged / ONNX_FP32).read_bytes())
    (damaged / ONNX_FP32).write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(ExportError, match=str(damaged / ONNX_FP32)):
        verified_onnx(damaged)
    # Right length and checksum, wrong content: the checker names the file too.
    (damaged / ONNX_FP32).write_bytes(b"\x00" * 64)
    manifest = json.loads((damaged / MANIFEST).read_text())
    manifest["files"][ONNX_FP32]["sha256"] = sha256_file(damaged / ONNX_FP32)
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="not a valid ONNX model"):
        verified_onnx(damaged)


def test_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no ONNX export here"):
        read_manifest(tmp_path)


def test_export_model_dir_adds_export_to_a_published_version(tmp_path):
    tiny = small_model(seed=1, steps=0)
    out = tmp_path / "v1"
    version = save_model_dir(out, tiny, [f"item{i}" for i in range(N_ITEMS)], {})
    manifest = export_model_dir(out, fp16=False)
    assert manifest.model_version == version
    path, _ = verified_onnx(out)
    assert path == out / ONNX_FP32
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


def test_export_keeps_the_exporters_chatter_out_of_the_log(model, tmp_path, caplog):
    # At INFO the exporter's passes log a line per folded constant (150-odd per
    # export); a scorer's log at INFO should show the export, not its internals.
    caplog.set_level(logging.INFO)
    before = {name: logging.getLogger(name).level for name in EXPORTER_LOG_LEVELS}
    export_onnx(model, tmp_path / "m.onnx", k=K)
    chatter = [r for r in caplog.records
               if r.name.split(".")[0] in ("onnxscript", "onnx_ir") or r.name.startswith("torch.onnx")]
    assert not chatter, [r.getMessage() for r in chatter[:5]]
    assert {name: logging.getLogger(name).level for name in before} == before  # restored
