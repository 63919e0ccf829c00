"""The dashboard as a child process of ``recstream demo``, wired to the demo's processes."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from recstream.processes import Child, ChildFailed, free_port, recstream_command

DEFAULT_PORT = 8050


def pick_port(wanted: int, host: str = "127.0.0.1") -> int:
    """``wanted`` if it is free, else any free port (0 asks for any free port)."""
    if wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, wanted))
                return wanted
            except OSError:
                pass
    return free_port(host)


def start_dashboard(
    bootstrap: str,
    env: Mapping[str, str],
    log_path: Path,
    port: int,
    worker_metrics: str,
    scorer_metrics: str,
) -> tuple[Child, str]:
    argv = recstream_command(
        "dashboard",
        "--bootstrap",
        bootstrap,
        "--port",
        str(port),
        "--worker-metrics",
        worker_metrics,
        "--scorer-metrics",
        scorer_metrics,
    )
    return Child("dashboard", argv, env, log_path).start(), f"http://127.0.0.1:{port}/"


def wait_serving(child: Child, url: str, timeout_s: float = 60.0) -> None:
    """Block until the dashboard answers ``/readyz``; ChildFailed if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        child.check_alive()
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ChildFailed(f"the dashboard did not serve {url} within {timeout_s:.0f}s")
        time.sleep(0.2)
