"""What a peer runner (:mod:`bench.recbole_peers`, :mod:`bench.rectools_peers`) returns
or raises, shared so that ``bench quality`` treats every peer library alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PeerUnavailable(RuntimeError):
    """The peer's library is not installed or does not work in this environment."""


@dataclass
class PeerResult:
    valid: dict[str, Any]
    test: dict[str, Any]
    epochs: int
    best_epoch: int
    train_seconds: float
    converged: bool
    config: dict[str, Any]
