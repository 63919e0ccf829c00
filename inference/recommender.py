"""The one interface every recommender model implements, and the factory the scorer uses.

The scorer knows nothing about a model beyond this protocol, so the online
co-occurrence baseline and the trained sequence Transformer are interchangeable.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from recstream.schemas.messages import Explanation, RankedItem, ScoreRequest

if TYPE_CHECKING:
    from recstream.inference.backends.base import ScoringBackend

#: Module that loads a trained model version directory (owned by the model code).
SEQUENCE_LOADER_MODULE = "recstream.inference.sequence_recommender"
#: The scoring backends a trained model can be loaded with (``load_recommender``'s
#: ``backend``, RECSTREAM_SCORER_BACKEND): named here, where no torch is imported,
#: so that a bad value is refused at start; built by ``inference.backends.select``.
BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-int8", "torch", "torch-compile",
            "torch-cuda-graphs")


@runtime_checkable
class Recommender(Protocol):
    """Top-K recommendations for a batch of users' fresh sequences."""

    @property
    def version(self) -> str:
        """Stamped on every recommendation as ``model_version``."""
        ...

    def recommend(self, requests: Sequence[ScoreRequest], k: int,
                  unavailable: Set[str] = frozenset()) -> list[list[RankedItem]]:  # fmt: skip
        """One ranked list per request, best first, at most ``k`` items each.

        Items in the request's history (``items`` and ``exclude``) are never returned,
        nor any of ``unavailable`` (the catalogue's retired and expired items: one
        set for the whole batch, often the same object from batch to batch).
        """
        ...

    def observe(self, requests: Sequence[ScoreRequest]) -> None:
        """Online learning hook, called with each batch before ``recommend``.

        Trained models implement it as a no-op. Requests may be redelivered
        (at-least-once), so an implementation must tolerate seeing one twice.
        """
        ...

    @property
    def backend(self) -> ScoringBackend | None:
        """The compiled scorer (:mod:`inference.backends`); None for a model without
        one (the co-occurrence baseline). On a hot swap its ``name`` picks the next
        version's backend and the next version may reuse its work; its ``max_k``
        bounds the k a version can serve."""
        ...

    @property
    def item_ids(self) -> Sequence[str]:
        """The catalogue, fixed at load; empty for a model that learns its items online."""
        ...

    @property
    def n_items(self) -> int:
        """How many items the model can rank (the catalogue's size)."""
        ...

    @property
    def can_explain(self) -> bool:
        """Whether :meth:`explain` says why (the torch backends can)."""
        ...

    @property
    def wants_item_texts(self) -> bool:
        """Whether :meth:`set_item_texts` makes items recommendable by their text."""
        ...

    def set_item_texts(self, texts: Mapping[str, Any]) -> int:
        """Rank the catalogue items of ``texts`` (item id -> text embedding) that the
        model has no row for by their text alone; return how many it ranks so."""
        ...

    def explain(self, requests: Sequence[ScoreRequest], top: int) -> list[list[Explanation]]:
        """Per request, the ``top`` past events its recommendation drew on most;
        an empty list per request for a model that cannot say."""
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
