"""The model registry: a folder of published, checksummed model versions.

Layout::

    <root>/
      .staging/               versions being written (never read by a scorer)
      v000003-1a2b3c4d5e6f/   one published version (the folder name is its version)
        config.json model.safetensors item_ids.json metrics.json   (inference.model_dir)
        model.onnx model.fp16.onnx export.json                      (inference.export)
        manifest.json         sha256 of every file above: written last
      CURRENT                 the version scorers should serve (rollback moves it)

A trainer writes a version under ``.staging``, then :meth:`Registry.publish`
writes ``manifest.json`` and renames the folder into place (atomic on POSIX
within one file system), then announces it on ``model-updates`` with the
manifest's sha256. A scorer calls :func:`verify_version_dir` with that sha256
before it loads anything, so a corrupt, truncated or swapped artifact is refused
with a reason and the old version keeps serving.

The sequence number in the name (``v000003``) orders versions; the hash suffix
(from the weights) makes two different models never share a name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.inference.model_dir import CONFIG, METRICS, WEIGHTS, sha256_file

MANIFEST = "manifest.json"
#: Formats that run code when loaded (pickle and its wrappers): never served.
#: Weights load from safetensors, exported graphs from ONNX.
UNSAFE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt"})
MANIFEST_FORMAT = 1
CURRENT = "CURRENT"
STAGING = ".staging"
_NAME = re.compile(r"^v(\d{6,})(?:-[0-9a-f]+)?$")


class ArtifactError(RuntimeError):
    """A version folder that must not be served; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VersionInfo:
    version: str
    path: Path
    seq: int
    sha256: str
    published_ms: int
    metrics: dict[str, Any] = field(default_factory=dict)


def _manifest_text(folder: Path, version: str, published_ms: int) -> str:
    files = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    doc = {"format": MANIFEST_FORMAT, "version": version, "published_ms": published_ms,
           "files": files}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_manifest(folder: Path, version: str, published_ms: int | None = None) -> str:
    """Write ``manifest.json`` over every file in ``folder``; return the manifest's sha256."""
    folder = Path(folder)
    text = _manifest_text(folder, version, published_ms or int(time.time() * 1000))
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, folder / MANIFEST)
    return hashlib.sha256(text.encode()).hexdigest()


def verify_version_dir(folder: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Check a published version folder; return its manifest or raise :class:`ArtifactError`.

    ``expected_sha256`` is the manifest hash announced on ``model-updates``: it
    pins the whole folder, since the manifest pins every file.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError("missing", f"{folder}: no such version folder")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArtifactError("missing", f"{path}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ArtifactError("checksum", f"{path}: sha256 {digest[:12]}… but the update announced "
                                        f"{expected_sha256[:12]}…")
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"unsupported manifest format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError("unreadable", f"{path}: {exc}") from exc
    names = {str(n) for n in files} | {p.name for p in folder.iterdir()}
    unsafe = sorted(n for n in names if Path(n).suffix.lower() in UNSAFE_SUFFIXES)
    if unsafe:
        raise ArtifactError("unsafe_format", f"{folder}: {', '.join(unsafe)} (pickle-based "
                                             f"formats are never loaded; use safetensors/ONNX)")
    if WEIGHTS not in files:
        raise ArtifactError("missing", f"{folder}: no {WEIGHTS} in {MANIFEST}")
    for name, want in sorted(files.items()):
        f = folder / name
        if not f.is_file():
            raise ArtifactError("missing", f"{f}: listed in {MANIFEST} but absent")
        got = sha256_file(f)
        if got != want:
            raise ArtifactError("checksum", f"{f}: sha256 {got[:12]}… != {str(want)[:12]}… in "
                                            f"{MANIFEST} (corrupt or replaced after publishing)")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError("unreadable", f"{folder / CONFIG}: {exc}") from exc
    if config.get("version") != manifest.get("version"):
        raise ArtifactError("mismatch", f"{folder}: config says version {config.get('version')!r},"
                                        f" manifest says {manifest.get('version')!r}")
    return dict(manifest)


class Registry:
    """Publish, list, prune and point at model versions under one root folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def staging_dir(self) -> Path:
        """A fresh, non-existent path under ``.staging`` named for the next version."""
        staging = self.root / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        parent = Path(tempfile.mkdtemp(prefix="stage-", dir=staging))
        return parent / f"v{self.next_seq():06d}"

    def next_seq(self) -> int:
        seqs = [v.seq for v in self._scan()]
        staged = (
            int(m.group(1))
            for d in (self.root / STAGING).glob("*/*")
            if (m := _NAME.match(d.name))
        ) if (self.root / STAGING).is_dir() else iter(())
        return max([0, *seqs, *staged]) + 1

    def publish(self, staged: Path, *, make_current: bool = True) -> VersionInfo:
        """Seal ``staged`` with a manifest and rename it into the registry root."""
        staged = Path(staged)
        config = json.loads((staged / CONFIG).read_text())
        version = str(config["version"])
        if not _NAME.match(version):
            raise ValueError(f"version {version!r} is not a registry name (vNNNNNN-…)")
        published_ms = int(time.time() * 1000)
        sha = write_manifest(staged, version, published_ms)
        target = self.root / version
        if target.exists():
            raise FileExistsError(f"{target} already published")
        os.rename(staged, target)
        _fsync_dir(self.root)
        if staged.parent.parent.name == STAGING:
            shutil.rmtree(staged.parent, ignore_errors=True)
        if make_current:
            self.set_current(version)
        return self._info(target, sha)

    def versions(self) -> list[VersionInfo]:
        """Published versions, oldest first; folders without a manifest are not versions."""
        out = []
        for d in self._scan():
            try:
                sha = hashlib.sha256((d.path / MANIFEST).read_bytes()).hexdigest()
            except OSError:
                continue
            out.append(self._info(d.path, sha))
        return out

    def get(self, version: str) -> VersionInfo:
        for v in self.versions():
            if v.version == version:
                return v
        known = ", ".join(v.version for v in self.versions()) or "none"
        raise KeyError(f"no version {version!r} in {self.root} (published: {known})")

    def current(self) -> VersionInfo | None:
        try:
            name = (self.root / CURRENT).read_text().strip()
        except FileNotFoundError:
            versions = self.versions()
            return versions[-1] if versions else None
        return self.get(name)

    def set_current(self, version: str) -> None:
        if not (self.root / version / MANIFEST).is_file():
            raise KeyError(f"no published version {version!r} in {self.root}")
        fd, tmp = tempfile.mkstemp(prefix=f".{CURRENT}.", dir=self.root)
        with os.fdopen(fd, "w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / CURRENT)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions (never the current one)."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        cur = self.current()
        versions = self.versions()
        doomed = [v for v in versions[:-keep] if cur is None or v.version != cur.version]
        for v in doomed:
            # Rename first so a scorer never opens a half-deleted folder under its name.
            trash = self.root / STAGING / f"trash-{v.version}-{os.getpid()}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(v.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        return [v.version for v in doomed]

    def _scan(self) -> list[_Dir]:
        if not self.root.is_dir():
            return []
        found = [
            _Dir(d, int(m.group(1)))
            for d in self.root.iterdir()
            if d.is_dir() and (m := _NAME.match(d.name))
        ]
        return sorted(found, key=lambda d: (d.seq, d.path.name))

    def _info(self, path: Path, sha: str) -> VersionInfo:
        m = _NAME.match(path.name)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            metrics = json.loads((path / METRICS).read_text()) if (path / METRICS).is_file() else {}
        except (OSError, ValueError):
            manifest, metrics = {}, {}
        # Read by hand-edited or damaged files too: anything but an object counts as empty.
        manifest = manifest if isinstance(manifest, dict) else {}
        metrics = metrics if isinstance(metrics, dict) else {}
        return VersionInfo(
            version=path.name,
            path=path,
            seq=int(m.group(1)) if m else 0,
            sha256=sha,
            published_ms=int(manifest.get("published_ms", 0)),
            metrics=metrics,
        )


@dataclass(frozen=True)
class _Dir:
    path: Path
    seq: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
