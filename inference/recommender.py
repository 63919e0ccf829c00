"""The one interface every recommender model implements, and the factory the scorer uses.

The scorer knows nothing about a model beyond this protocol, so the online
co-occurrence baseline and the trained sequence Transformer are interchangeable.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from recstream.schemas.messages import RankedItem, ScoreRequest

#: Module that loads a trained model version directory (owned by the model code).
SEQUENCE_LOADER_MODULE = "recstream.inference.sequence_recommender"


@runtime_checkable
class Recommender(Protocol):
    """Top-K recommendations for a batch of users' fresh sequences."""

    @property
    def version(self) -> str:
        """Stamped on every recommendation as ``model_version``."""
        ...

    def recommend(self, requests: Sequence[ScoreRequest], k: int) -> list[list[RankedItem]]:
        """One ranked list per request, best first, at most ``k`` items each.

        Items in the request's history (``items`` and ``exclude``) are never returned.
        """
        ...

    def observe(self, requests: Sequence[ScoreRequest]) -> None:
        """Online learning hook, called with each batch before ``recommend``.

        Trained models implement it as a no-op. Requests may be redelivered
        (at-least-once), so an implementation must tolerate seeing one twice.
        """
        ...


class ModelLoadError(RuntimeError):
    """A model directory was given but no model could be loaded from it."""


def load_recommender(
    model_dir: Path | None, *, backend: str = "auto", k: int = 10, threads: int | None = None,
    previous: Recommender | None = None,
) -> Recommender:
    """The co-occurrence baseline when ``model_dir`` is None, else the trained model in it,
    scored by ``backend`` (see :mod:`inference.backends.select`) for up to ``k`` items.

    ``previous``: the version being served, when this one is to replace it (a hot
    swap): a backend may reuse its work (TensorRT refits the running engine's plan)."""
    if model_dir is None:
        from recstream.inference.cooccurrence import CooccurrenceRecommender

        return CooccurrenceRecommender()
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist or is not a directory")
    # Imported lazily: it pulls in torch, which the baseline scorer must not need.
    try:
        loader = importlib.import_module(SEQUENCE_LOADER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != SEQUENCE_LOADER_MODULE:
            raise  # the module exists but one of its dependencies is missing
        raise ModelLoadError(
            f"cannot load a trained model from {model_dir}: {SEQUENCE_LOADER_MODULE} is not "
            "available in this build; unset RECSTREAM_MODEL_DIR to serve the co-occurrence model"
        ) from exc
    extra = {"previous": previous} if previous is not None else {}
    try:
        model = loader.load(model_dir, backend=backend, k=k, threads=threads, **extra)
    except Exception as exc:  # damaged files, a backend that cannot be built, ...: one type
        raise ModelLoadError(
            f"cannot serve the model in {model_dir}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, Recommender):
        raise ModelLoadError(
            f"{SEQUENCE_LOADER_MODULE}.load({model_dir}) returned {type(model).__name__}, "
            "which does not implement inference.recommender.Recommender"
        )
    return model
