"""PyTorch backends: eager, ``torch.compile``, and CUDA graphs, all running the ServingGraph.

* ``eager`` — the reference everything else is compared with (itself checked
  against ``SeqRecModel.topk`` in the tests).
* ``compile`` — ``torch.compile`` (inductor). Shapes vary per batch, so the
  first call compiles for its shape and the second distinct shape recompiles
  once with dynamic shapes (torch's automatic dynamic); later shapes reuse it.
  On CUDA, ``compile_mode="reduce-overhead"`` adds inductor's CUDA graphs.
* ``cuda-graphs`` — CUDA only: the eager graph captured once per bucketed
  shape (batch and length rounded up to powers of two, exclusions too) and
  replayed; padding rows/columns are exact no-ops (see ``trim_padding``).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import torch
from recstream.inference.backends.base import BackendUnavailable, bucket_size, check_k, trim_padding
from recstream.inference.backends.serving_graph import ServingGraph
from recstream.inference.features import SequenceBatch
from recstream.inference.model import SeqRecModel

MODES = ("eager", "compile", "cuda-graphs")
NAMES = {"eager": "torch", "compile": "torch-compile", "cuda-graphs": "torch-cuda-graphs"}


@dataclass(frozen=True)
class _Key:
    batch: int
    length: int
    n_exclude: int


class _Captured:
    """One CUDA graph with its static input and output tensors."""

    def __init__(self, graph: ServingGraph, key: _Key, device: torch.device,
                 pool: tuple[int, int]) -> None:
        b, n, e = key.batch, key.length, key.n_exclude
        # Inputs live outside the graph pool and are only ever written in place.
        self.items = torch.zeros(b, n, dtype=torch.long, device=device)
        self.event_types = torch.zeros(b, n, dtype=torch.long, device=device)
        self.times = torch.zeros(b, n, dtype=torch.float32, device=device)
        self.query_times = torch.zeros(b, n, dtype=torch.float32, device=device)
        self.exclude = torch.zeros(b, e, dtype=torch.long, device=device)
        args = (self.items, self.event_types, self.times, self.query_times, self.exclude)
        # Warm up on a side stream (lazy init, cuBLAS handles) before capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):
                graph(*args)
        torch.cuda.current_stream(device).wait_stream(side)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.cuda_graph, pool=pool):
            self.scores, self.indices = graph(*args)

    def run(self, batch: SequenceBatch, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = batch.items.shape
        e = exclude.shape[1]
        # Left-pad length and exclusions, bottom-pad rows: all zeros = padding.
        for static in (self.items, self.event_types, self.times, self.query_times, self.exclude):
            static.zero_()
        self.items[:b, -n:].copy_(batch.items, non_blocking=True)
        self.event_types[:b, -n:].copy_(batch.event_types, non_blocking=True)
        self.times[:b, -n:].copy_(batch.times, non_blocking=True)
        self.query_times[:b, -n:].copy_(batch.query_times, non_blocking=True)
        self.exclude[:b, :e].copy_(exclude, non_blocking=True)
        self.cuda_graph.replay()
        # Copy out before any other replay: graphs share one memory pool.
        return self.scores[:b].cpu(), self.indices[:b].cpu()


def _padded(batch: SequenceBatch, exclude: torch.Tensor, key: _Key,
            device: torch.device) -> list[torch.Tensor]:
    """Inputs zero-padded to ``key``'s shape on ``device``: rows at the bottom, length
    on the left, exclusions on the right (all padding, all exact no-ops)."""
    b, n = batch.items.shape
    out = []
    for t in (batch.items, batch.event_types, batch.times, batch.query_times):
        p = torch.zeros(key.batch, key.length, dtype=t.dtype, device=device)
        p[:b, -n:] = t.to(device, non_blocking=True)
        out.append(p)
    e = torch.zeros(key.batch, key.n_exclude, dtype=exclude.dtype, device=device)
    e[:b, : exclude.shape[1]] = exclude.to(device, non_blocking=True)
    return [*out, e]


class TorchBackend:
    """The ServingGraph on torch, eager / compiled / CUDA-graphed."""

    def __init__(
        self,
        model: SeqRecModel,
        *,
        k: int = 10,
        mode: str = "eager",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        attn_chunks: int | None = None,
        compile_mode: str | None = None,
        dynamic: bool | None = None,
        threads: int | None = None,
    ) -> None:
        from recstream.inference.export import DEFAULT_ATTN_CHUNKS

        if mode not in MODES:
            raise ValueError(f"unknown torch backend mode {mode!r}; one of {MODES}")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"torch {torch.__version__}: CUDA is not available")
        if mode == "cuda-graphs" and dev.type != "cuda":
            raise BackendUnavailable("CUDA graphs need device='cuda'")
        if dtype == torch.float16 and dev.type != "cuda":
            raise BackendUnavailable("float16 serving is for CUDA; CPU kernels are float32")
        if threads is not None and dev.type == "cpu":
            torch.set_num_threads(threads)  # process-wide: torch has no per-module pool
        self.name = NAMES[mode] + ("-fp16" if dtype == torch.float16 else "")
        if compile_mode == "reduce-overhead":
            self.name = "torch-compile-cudagraphs"
        self.device = dev.type
        self.max_k = k
        self.mode = mode
        self._dev = dev
        chunks = DEFAULT_ATTN_CHUNKS if attn_chunks is None else attn_chunks
        self.graph = ServingGraph(model, k, dtype=dtype, attn_chunks=chunks).eval().to(dev)
        # The eager model, for explanations (an optional output of this backend
        # only); put on the device on first use, so scoring alone costs nothing.
        self._model = model
        self._explainer: SeqRecModel | None = None
        self._fn = self.graph
        if mode == "compile":
            # The pattern matcher's attention rewrite assumes a [B, H, L, L] layout
            # and fails on this graph's head-major one (torch 2.13); the graph has
            # no use for it (no SDPA-shaped subgraph survives the chunking).
            if compile_mode is not None:  # modes and options are exclusive in torch.compile
                self._fn = torch.compile(self.graph, mode=compile_mode, dynamic=dynamic)
            else:
                self._fn = torch.compile(self.graph, options={"pattern_matcher": False},
                                         dynamic=dynamic)
        self._graphs: dict[_Key, _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle() if mode == "cuda-graphs" else None
        self._lock = threading.Lock()  # CUDA graph static buffers are shared state

    def topk(
        self, batch: SequenceBatch, exclude: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_k(k, self.max_k, self.name)
        batch = trim_padding(batch)
        if self.mode == "cuda-graphs":
            with self._lock:
                scores, indices = self._replay(batch, exclude)
        elif self.mode == "compile" and self.device == "cuda":
            # Bucketed shapes: each is compiled (and, with reduce-overhead,
            # graph-recorded) once, instead of once per distinct batch.
            b = batch.items.shape[0]
            args = _padded(batch, exclude, self._key(batch, exclude), self._dev)
            with torch.inference_mode():
                scores, indices = self._fn(*args)
                scores, indices = scores[:b].cpu(), indices[:b].cpu()
        else:
            with torch.inference_mode():
                args = [t.to(self._dev, non_blocking=True) for t in
                        (batch.items, batch.event_types, batch.times, batch.query_times, exclude)]
                scores, indices = self._fn(*args)
                scores, indices = scores.cpu(), indices.cpu()
        return scores[:, :k], indices[:, :k]

    def explain(self, batch: SequenceBatch, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The input events the recommendation drew on most: ``(weights [B, t], columns
        [B, t])``, ``t = min(top, L)``, best first; columns index ``batch``'s own.

        Attention rollout of the eager model (:meth:`SeqRecModel.attention_rollout`),
        a second forward pass, float32: ask for it only when explanations are wanted.
        Padding columns have weight 0.
        """
        width = batch.items.shape[1]
        trimmed = trim_padding(batch)
        offset = width - trimmed.items.shape[1]  # padding is on the left
        with torch.inference_mode():
            args = [t.to(self._dev) for t in
                    (trimmed.items, trimmed.event_types, trimmed.times, trimmed.query_times)]
            weights = self._eager().attention_rollout(*args).float().cpu()
        t = min(top, weights.shape[1])
        best, cols = torch.topk(weights, k=t, dim=1)
        return best, cols + offset

    def _eager(self) -> SeqRecModel:
        if self._explainer is None:
            same = next(self._model.parameters()).device == self._dev
            model = self._model if same else copy.deepcopy(self._model).to(self._dev)
            self._explainer = model.eval()
        return self._explainer

    def _key(self, batch: SequenceBatch, exclude: torch.Tensor) -> _Key:
        b, n = batch.items.shape
        max_len = self.graph.cfg.max_len
        return _Key(bucket_size(b), min(bucket_size(n, 16), max_len), bucket_size(exclude.shape[1]))

    def _replay(self, batch: SequenceBatch, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self._key(batch, exclude)
        captured = self._graphs.get(key)
        if captured is None:
            assert self._pool is not None
            captured = self._graphs[key] = _Captured(self.graph, key, self._dev, self._pool)
        return captured.run(batch, exclude)
