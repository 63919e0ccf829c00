"""Scoring backends behind one interface (:class:`ScoringBackend`): eager / compiled /
CUDA-graphed torch, ONNX Runtime (fp32, int8) and TensorRT, all running the same
serving graph (:mod:`inference.backends.serving_graph`).

Import the backend modules themselves lazily (``select_backend`` does): this
package's ``__init__`` pulls in nothing beyond torch.
"""

from recstream.inference.backends.base import (
    MASKED_SCORE,
    BackendUnavailable,
    ScoringBackend,
    pad_exclusions,
    trim_padding,
)

__all__ = ["MASKED_SCORE", "BackendUnavailable", "ScoringBackend", "pad_exclusions", "trim_padding"]
