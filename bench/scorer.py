"""Scorer benchmark: users/s and batch latency of every available scoring backend.

Measured in one run, on the same inputs: the eager baseline (``SeqRecModel.topk``
with a dense exclusion mask, what serving did before the backends), the serving
graph in eager torch, torch.compile, ONNX Runtime fp32 and int8 (int8 only if
its top-K parity holds), and on CUDA: eager, compile, compile with CUDA graphs,
hand-captured CUDA graphs (fp32, fp16), ONNX Runtime's CUDA provider and
TensorRT where installed. Every backend is parity-checked against the baseline
before it is timed; one that disagrees is reported, not timed. Where RecBole is
installed (``make bench-deps``), its SASRec is timed at the same shape on the
same inputs too (``bench.sasrec_reference``): a widely used implementation as a
same-run yardstick, since this machine's speed drifts from hour to hour.

Inputs are full-length sequences (the worst case: no padding to trim) of a
model with MovieLens-1M's shape, and optionally a trained model directory.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from recstream.bench.sasrec_reference import REFERENCE
from recstream.inference.backends.base import BackendUnavailable
from recstream.inference.backends.parity import compare, probe_inputs, reference_topk
from recstream.inference.export import ExportError
from recstream.inference.features import SequenceBatch
from recstream.inference.model import ModelConfig, SeqRecModel

from recstream.harness import percentile

log = logging.getLogger(__name__)

BASELINE = "torch-model"  # SeqRecModel.topk, eager
HEADLINE = (64, 200)  # (batch, seq_len) of the targets
CPU_BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8")
CUDA_BACKENDS = ("torch", "torch-compile", "torch-compile-cudagraphs", "torch-cuda-graphs",
                 "torch-cuda-graphs-fp16", "onnxruntime", "tensorrt-fp16", "tensorrt-fp32")
ATOL = {"fp32": 1e-3, "fp16": 5e-2, "int8": 5e-2}
N_EXCLUDE = 64


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"
    batches: tuple[int, ...] = (1, 16, 64, 256)
    lengths: tuple[int, ...] = (50, 200)
    model_dir: Path | None = None
    backends: tuple[str, ...] | None = None  # None: every available one
    budget_s: float = 1.0  # timed seconds per (backend, shape), after warm-up
    min_iters: int = 3
    max_iters: int = 100
    threads: int | None = None
    compile_shapes: str = "headline"  # "headline", "all" or "none"
    cache_dir: Path | None = None
    k: int = 10
    seed: int = 0
    age_bias_layers: str = ModelConfig.age_bias_layers  # of the MovieLens-1M-shaped model
    #: Also time RecBole's SASRec (bench.sasrec_reference) at the MovieLens-1M shape.
    reference: bool = True


@dataclass
class Row:
    model: str
    backend: str
    device: str
    batch: int
    seq_len: int
    users_per_s: float
    p50_ms: float
    p99_ms: float
    iters: int


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], **self.summary, "skipped": self.skipped,
                "parity": self.parity, "machine": self.machine}


#: MovieLens-1M's catalogue size, the issue's benchmark shape.
ML1M_ITEMS = 3416


def ml1m_shape_model(seed: int = 0, age_bias_layers: str = ModelConfig.age_bias_layers,
                     n_items: int = ML1M_ITEMS) -> SeqRecModel:
    """MovieLens-1M's shape: 3,416 items, d=64, 2 layers, 2 heads, L=200, text (a
    random 384-d table) and time on; time biases randomised so they cost and count."""
    torch.manual_seed(seed)
    model = SeqRecModel(ModelConfig(n_items=n_items, max_len=200, d_model=64, n_heads=2,
                                    n_layers=2, age_bias_layers=age_bias_layers).validate())
    with torch.no_grad():
        model.set_item_text(torch.randn(n_items + 1, model.cfg.text_dim))
        torch.nn.init.normal_(model.age_bias.weight, std=0.3)
        torch.nn.init.normal_(model.short_age.weight, std=0.3)
    return model.eval()


def _time(fn: Callable[[], object], cfg: BenchConfig, cuda: bool) -> list[float]:
    """Seconds per call: one warm-up, then until the budget is spent (bounded)."""
    fn()
    lat: list[float] = []
    deadline = time.perf_counter() + cfg.budget_s
    while len(lat) < cfg.max_iters and (len(lat) < cfg.min_iters or time.perf_counter() < deadline):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        lat.append(time.perf_counter() - t0)
    return lat


def _percentile(values: list[float], q: float) -> float:
    value = percentile(values, q, method="nearest")
    assert value is not None, "no latencies measured"
    return value


def _baseline_fn(model: SeqRecModel, batch: SequenceBatch, exclude: torch.Tensor, k: int,
                 device: str) -> Callable[[], object]:
    dev = torch.device(device)
    m = model.to(dev)
    mask = torch.zeros(batch.items.shape[0], model.cfg.n_items + 1, dtype=torch.bool)
    mask.scatter_(1, exclude, True)
    mask.scatter_(1, batch.items, True)
    args = [t.to(dev) for t in (batch.items, batch.event_types, batch.times, batch.query_times,
                                mask)]

    def run() -> object:
        with torch.inference_mode():
            scores, idx = m.topk(*args, k)
            return scores.cpu(), idx.cpu()

    return run


def _build(name: str, model: SeqRecModel, cfg: BenchConfig, version: str, cache: Path,
           model_dir: Path | None) -> Any:
    from recstream.inference.backends.select import select_backend
    from recstream.inference.backends.torch_backend import TorchBackend

    dev = cfg.device
    if name == "torch-compile":
        # One static compile per shape: dynamic recompiles cost minutes on a small CPU.
        return TorchBackend(model, k=cfg.k, mode="compile", device=dev, dynamic=False,
                            threads=cfg.threads)
    if name == "torch-compile-cudagraphs":
        return TorchBackend(model, k=cfg.k, mode="compile", device=dev, dynamic=False,
                            compile_mode="reduce-overhead")
    if name == "torch-cuda-graphs-fp16":
        return TorchBackend(model, k=cfg.k, mode="cuda-graphs", device=dev, dtype=torch.float16)
    if name.startswith("tensorrt-"):
        from recstream.inference.backends.select import onnx_dir_for
        from recstream.inference.backends.tensorrt_backend import TensorRTBackend, import_tensorrt

        import_tensorrt()
        onnx_dir = onnx_dir_for(model, model_dir=model_dir, model_version=version,
                                cache_dir=cache / "onnx", k=cfg.k, fp16=True)
        return TensorRTBackend(onnx_dir, cache_dir=cache / "tensorrt",
                               precision=name.removeprefix("tensorrt-"),
                               max_batch=max(cfg.batches), max_exclude=N_EXCLUDE)
    return select_backend(name, model, k=cfg.k, model_dir=model_dir, model_version=version,
                          device=dev, threads=cfg.threads, cache_dir=cache)


def _precision(name: str) -> str:
    return "fp16" if "fp16" in name else "int8" if "int8" in name else "fp32"


def bench_reference(model: SeqRecModel, label: str, cfg: BenchConfig, report: Report,
                    inputs: dict[tuple[int, int], tuple[SequenceBatch, torch.Tensor]]) -> None:
    """RecBole's SASRec at ``model``'s shape, on the same inputs as the baseline."""
    from recstream.bench.sasrec_reference import RecBoleSASRec, ReferenceUnavailable

    c = model.cfg
    try:
        ref = RecBoleSASRec(c.n_items, c.max_len, c.d_model, c.n_layers, c.n_heads)
    except ReferenceUnavailable as exc:
        report.skipped[f"{label}/{REFERENCE}"] = str(exc)
        log.warning("skipping %s/%s: %s", label, REFERENCE, exc)
        return
    report.machine["reference_config"] = ref.config
    for (b, n), (batch, exclude) in inputs.items():
        fn = ref.scorer(batch, exclude, cfg.k, cfg.device, cfg.seed)
        lat = _time(fn, cfg, cfg.device == "cuda")
        report.rows.append(_row(label, REFERENCE, cfg.device, b, n, lat))
        log.info("%s %s b=%d L=%d: %.0f users/s", label, REFERENCE, b, n,
                 report.rows[-1].users_per_s)


def bench_model(model: SeqRecModel, label: str, version: str, cfg: BenchConfig,
                report: Report, model_dir: Path | None = None, reference: bool = False) -> None:
    cuda = cfg.device == "cuda"
    cache = cfg.cache_dir or Path(tempfile.gettempdir()) / "recstream-bench"
    shapes = [(b, n) for n in cfg.lengths for b in cfg.batches if n <= model.cfg.max_len]
    inputs = {s: probe_inputs(model.cfg.n_items, model.cfg.max_len, batch=s[0], length=s[1],
                              n_exclude=N_EXCLUDE, seed=cfg.seed, full=True) for s in shapes}
    wanted = cfg.backends or (CUDA_BACKENDS if cuda else CPU_BACKENDS)
    for b, n in shapes:  # the baseline first: everything else is compared with it
        batch, exclude = inputs[(b, n)]
        lat = _time(_baseline_fn(model, batch, exclude, cfg.k, cfg.device), cfg, cuda)
        report.rows.append(_row(label, BASELINE, cfg.device, b, n, lat))
        log.info("%s %s b=%d L=%d: %.0f users/s", label, BASELINE, b, n, report.rows[-1].users_per_s)
    if reference:
        bench_reference(model, label, cfg, report, inputs)
    model = model.cpu()
    for name in wanted:
        key = f"{label}/{name}"
        try:
            backend = _build(name, model, cfg, version, cache, model_dir)
        except (BackendUnavailable, ExportError, ImportError, RuntimeError) as exc:
            report.skipped[key] = str(exc)
            log.warning("skipping %s: %s", key, exc)
            continue
        probe, exclude = probe_inputs(model.cfg.n_items, model.cfg.max_len, batch=16,
                                      n_exclude=N_EXCLUDE, seed=cfg.seed + 1)
        parity = compare(reference_topk(model, probe, exclude, cfg.k),
                         backend.topk(probe, exclude, cfg.k))
        report.parity[key] = asdict(parity)
        precision = _precision(name)
        # fp16 may swap near-ties at the K-th place; fp32 and int8 must agree.
        ok = parity.overlap >= 0.9 if precision == "fp16" else parity.holds(ATOL[precision])
        if not ok:
            report.skipped[key] = f"top-{cfg.k} parity failed: {parity}"
            continue
        for b, n in shapes:
            if name.startswith("torch-compile") and cfg.compile_shapes != "all" and (
                cfg.compile_shapes == "none" or (b, n) != HEADLINE
            ):
                continue
            batch, exclude = inputs[(b, n)]
            lat = _time(lambda backend=backend, batch=batch, exclude=exclude:
                        backend.topk(batch, exclude, cfg.k), cfg, cuda)
            report.rows.append(_row(label, backend.name, backend.device, b, n, lat))
            log.info("%s %s b=%d L=%d: %.0f users/s", label, backend.name, b, n,
                     report.rows[-1].users_per_s)


def _row(label: str, backend: str, device: str, b: int, n: int, lat: list[float]) -> Row:
    mean = statistics.fmean(lat)
    return Row(label, backend, device, b, n, b / mean, 1e3 * _percentile(lat, 0.5),
               1e3 * _percentile(lat, 0.99), len(lat))


def summarize(report: Report, label: str, seq_len: int = HEADLINE[1]) -> dict[str, Any]:
    """Headline figures at batch 64 and ``seq_len`` (keys say l200) for the ``label`` model."""
    at = {r.backend: r for r in report.rows
          if r.model == label and (r.batch, r.seq_len) == (HEADLINE[0], seq_len)}
    out: dict[str, Any] = {}
    base = at.get(BASELINE)
    ref = at.get(REFERENCE)
    ours = {name: r for name, r in at.items() if name not in (BASELINE, REFERENCE)}
    cpu = [r for r in ours.values() if r.device == "cpu"]
    if base is not None and base.device == "cpu" and cpu:
        best = max(cpu, key=lambda r: r.users_per_s)
        out["best_cpu_backend_b64_l200"] = best.backend
        out["best_cpu_users_per_s_b64_l200"] = round(best.users_per_s, 1)
        out["best_cpu_over_eager_b64_l200"] = round(best.users_per_s / base.users_per_s, 2)
        if "torch" in at:
            out["best_cpu_over_serving_graph_eager_b64_l200"] = round(
                best.users_per_s / at["torch"].users_per_s, 2)
        if ref is not None and ref.device == "cpu":
            out["reference_b64_l200"] = REFERENCE
            out["reference_users_per_s_b64_l200"] = round(ref.users_per_s, 1)
            out["best_cpu_over_reference_b64_l200"] = round(best.users_per_s / ref.users_per_s, 2)
    gpu = [r for r in ours.values() if r.device == "cuda"]
    if gpu:
        best = max(gpu, key=lambda r: r.users_per_s)
        out["best_cuda_backend_b64_l200"] = best.backend
        out["best_cuda_users_per_s_b64_l200"] = round(best.users_per_s, 1)
        if base is not None and base.device == "cuda":
            out["best_cuda_over_eager_b64_l200"] = round(best.users_per_s / base.users_per_s, 2)
    return out


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_bench(cfg: BenchConfig) -> Report:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("--device cuda: torch sees no CUDA device")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    report = Report(machine=machine_info(cfg.device))
    report.machine["config"] = {k: (str(v) if isinstance(v, Path) else v)
                                for k, v in asdict(cfg).items()}
    from recstream.inference.backends.select import weights_digest

    model = ml1m_shape_model(cfg.seed, cfg.age_bias_layers)
    bench_model(model, "ml1m-shape", f"bench-{weights_digest(model)}", cfg, report,
                reference=cfg.reference)
    report.summary = summarize(report, "ml1m-shape")
    if cfg.model_dir is not None:
        from recstream.inference.model_dir import load_model_dir

        loaded = load_model_dir(cfg.model_dir)
        bench_model(loaded.model, loaded.version, loaded.version, cfg, report, cfg.model_dir)
        seq_len = min(HEADLINE[1], loaded.model.cfg.max_len)
        report.summary["trained_model"] = {"version": loaded.version, "seq_len": seq_len,
                                           **summarize(report, loaded.version, seq_len)}
    report.machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return report


def format_table(report: Report) -> str:
    """A plain-text table, one line per (model, backend, shape)."""
    head = f"{'model':<16} {'backend':<26} {'dev':<4} {'batch':>5} {'L':>4} " \
           f"{'users/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'iters':>5}"
    lines = [head, "-" * len(head)]
    for r in report.rows:
        lines.append(f"{r.model[:16]:<16} {r.backend:<26} {r.device:<4} {r.batch:>5} "
                     f"{r.seq_len:>4} {r.users_per_s:>10.1f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f} "
                     f"{r.iters:>5}")
    for key, value in report.summary.items():
        lines.append(f"{key}: {value}")
    for key, why in report.skipped.items():
        lines.append(f"skipped {key}: {why}")
    return "\n".join(lines)
