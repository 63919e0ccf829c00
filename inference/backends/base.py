"""The one interface every scoring backend implements, and the input helpers they share.

A backend turns a :class:`~inference.features.SequenceBatch` plus padded
exclusions into top-K ``(scores, indices)``: float32 and int64 CPU torch
tensors ``[B, k]``, best first, model item indices (1..n_items). Excluded
items, the items in the input window (unless exported with
``exclude_history=False``) and padding are never returned; a row with fewer
than ``k`` allowed items ends in scores of ``MASKED_SCORE`` (-1e9), which
callers drop.

Exclusions are a ``[B, E]`` int64 tensor of item indices padded with 0 (see
:func:`pad_exclusions`) rather than a ``[B, n_items + 1]`` mask: the host
work and the bytes moved scale with the user's history, not the catalogue,
and the graph scatters them to ``-1e9`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from recstream.inference.backends.serving_graph import MASKED_SCORE
from recstream.inference.features import SequenceBatch

__all__ = [
    "MASKED_SCORE",
    "BackendUnavailable",
    "ScoringBackend",
    "bucket_size",
    "check_k",
    "pad_exclusions",
    "trim_padding",
]


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (library not installed, no GPU, ...); the reason says which."""


@runtime_checkable
class ScoringBackend(Protocol):
    """Top-K scoring of a batch of sequences. Not thread-safe: one caller at a time."""

    #: e.g. "torch", "torch-compile", "torch-cuda-graphs", "onnxruntime",
    #: "onnxruntime-int8", "tensorrt"
    name: str
    #: "cpu" or "cuda"
    device: str
    #: the largest k this backend can return (the k exported into its graph)
    max_k: int

    def topk(
        self, batch: SequenceBatch, exclude: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B, k] float32, indices [B, k] int64)`` on the CPU, best first."""
        ...


def check_k(k: int, max_k: int, name: str) -> None:
    if not 1 <= k <= max_k:
        raise ValueError(f"{name}: k={k} outside 1..{max_k} (the k this graph was built with)")


def bucket_size(n: int, minimum: int = 1) -> int:
    """The next power of two >= ``max(n, minimum)``: few distinct shapes for
    shape-specialised runtimes (CUDA graphs, compiled kernels, TensorRT profiles)."""
    n = max(n, minimum, 1)
    return 1 << (n - 1).bit_length()


def pad_exclusions(
    rows: Sequence[Sequence[int]], *, bucket: bool = True, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    """``[B, E]`` item indices, 0-padded; E >= 1 (rounded up to a power of two when ``bucket``)."""
    width = max((len(r) for r in rows), default=0)
    width = bucket_size(width) if bucket else max(width, 1)
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = r
    return torch.from_numpy(out).to(dtype)


def trim_padding(batch: SequenceBatch, multiple: int = 1) -> SequenceBatch:
    """Drop leading columns that are padding in every row (kept length >= 1,
    rounded up to ``multiple``).

    Exact: positions are right-aligned, padding keys get zero attention weight
    and padding contributes nothing else, so a batch of short sequences costs
    what its longest sequence costs, not ``max_len``.
    """
    items = batch.items
    n = items.shape[1]
    if items.device.type == "cpu":
        # numpy, not torch: right after an ONNX Runtime run its spinning threads
        # made torch's parallel any() over a [256, 200] batch take ~3 ms (13 µs here).
        cols = np.flatnonzero((items.numpy() != 0).any(axis=0))
        first = int(cols[0]) if cols.size else n - 1
    else:
        used = (items != 0).any(dim=0)
        first = int(used.to(torch.int8).argmax()) if bool(used.any()) else n - 1
    keep = n - first
    keep = min(n, -(-keep // multiple) * multiple)
    if keep == n:
        return batch
    return SequenceBatch(
        items[:, -keep:], batch.event_types[:, -keep:], batch.times[:, -keep:],
        batch.query_times[:, -keep:],
    )
