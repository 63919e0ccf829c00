"""Benchmark results written atomically: a reader (or a run stopped half way)
never sees a half-written JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, result: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_report(
    path: Path, report: dict[str, Any], engines: Iterable[str] = ()
) -> dict[str, Any]:
    """Write a benchmark's report with where it came from (command, git commit,
    machine, library versions: :func:`recstream.bench.provenance.provenance`); the
    report's own keys win. Returns what was written."""
    from recstream.bench.provenance import provenance

    full = report if "command" in report else {**provenance(engines), **report}
    write_json_atomic(path, full)
    return full
