"""Which ``model-updates`` a scorer acts on: pure logic, no Kafka, no model loading.

Order is **message order**, not version number. A model's updates share one key
(its name), hence one partition, so the position of a message in that
partition is the order in which versions were announced. A rollback is just a
newer message naming an older folder, so it is served like any other update;
comparing version numbers would refuse it.

What is ignored (and why):

* ``stale``: a message at or before the position of one already handled in
  its partition (a re-read after a reconnect or restart); on start-up every
  message before the newest valid one;
* ``other_model``: the scorer was told to follow one model name
  (``RECSTREAM_MODEL_NAME``) and this message names another;
* ``already_serving`` / ``already_loading``: it names the version being
  served or the one being loaded (a duplicate send, or a rollback to itself);
* ``superseded``: a newer message arrived before this one's load started, so
  loading it would only delay the newer one.

Messages of different partitions (several model names with no filter) have no
order between them; they are taken in arrival order. Run one model per
registry, or set ``RECSTREAM_MODEL_NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from recstream.inference.registry import ArtifactError
from recstream.schemas.messages import ModelUpdate


@dataclass(frozen=True)
class Announcement:
    """One ``model-updates`` message and where it was read from."""

    update: ModelUpdate
    partition: int
    offset: int
    #: ``time.monotonic()`` when the scorer read it (swap durations start here).
    received: float


@dataclass
class UpdatePolicy:
    """Decides, message by message, whether an announcement should be loaded."""

    model_name: str | None = None
    #: Per partition: the offset of the newest message handled (any outcome).
    handled: dict[int, int] = field(default_factory=dict)
    serving: str | None = None
    loading: str | None = None

    def consider(self, a: Announcement) -> str | None:
        """``None`` if ``a`` should be loaded, else the reason it is ignored.

        Every message advances the partition's position, whatever the outcome,
        so a later re-read of it is ``stale``.
        """
        last = self.handled.get(a.partition, -1)
        if a.offset <= last:
            return "stale"
        self.handled[a.partition] = a.offset
        if self.model_name is not None and a.update.model_name != self.model_name:
            return "other_model"
        if a.update.version == self.serving and self.loading is None:
            return "already_serving"
        if a.update.version == self.loading:
            return "already_loading"
        return None


def newest_first(announcements: list[Announcement]) -> list[Announcement]:
    """Start-up catch-up order: the newest announcement first, by message order.

    Within a partition by offset; partitions (no order between them) by the
    newest ``published_ms`` they hold.
    """
    by_part: dict[int, list[Announcement]] = {}
    for a in announcements:
        by_part.setdefault(a.partition, []).append(a)
    parts = sorted(by_part.values(),
                   key=lambda msgs: max(m.update.published_ms for m in msgs), reverse=True)
    return [a for msgs in parts for a in sorted(msgs, key=lambda m: m.offset, reverse=True)]


def resolve_uri(uri: str, registry: Path) -> Path:
    """The version folder an update names: a path relative to the registry, an
    absolute path or a ``file://`` URI, which must lie inside the registry (a
    scorer loads nothing from anywhere else)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ArtifactError("uri", f"{uri!r}: only registry paths and file:// URIs are served")
    raw = unquote(parsed.path) if parsed.scheme == "file" else uri
    root = registry.resolve()
    path = Path(raw)
    path = (root / path).resolve() if not path.is_absolute() else path.resolve()
    if path == root or root not in path.parents:
        raise ArtifactError("uri", f"{uri!r} is not a version folder inside the registry {root}")
    return path
