"""A benchmark stopped with SIGTERM (``timeout``, a cancelled CI job) stops its
broker and children, as Ctrl-C does. Before, SIGTERM's default action skipped the
clean-up and left them running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recstream.processes import child_env

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_sigterm_stops_a_benchmarks_children(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [str(Path(sys.executable).parent / "recstream"), "bench", "stream", "--events", "200000",
         "--run-dir", str(tmp_path / "run"), "--json", str(tmp_path / "out.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env(),
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(children) < 2 and time.monotonic() < deadline:  # the broker and the worker
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
            children = _children(bench.pid)
            time.sleep(0.2)
        assert len(children) >= 2, "the benchmark started no broker and worker in 120 s"
        os.kill(bench.pid, signal.SIGTERM)
        bench.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)], "children left running after SIGTERM"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for c in children:  # whatever a failed run left behind
            if _alive(c):
                os.kill(c, signal.SIGKILL)
