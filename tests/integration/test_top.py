"""``recstream dashboard`` against the real broker, and ``recstream top`` reading it.

The dashboard process reads the topics itself; events produced into the broker
must show up in its JSON, and ``top --iterations 2`` must print them twice and
exit 0 without a terminal.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from recstream.broker import Broker
from recstream.processes import Child, free_port, recstream_command, wait_for
from recstream.readback import produce

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
TIMEOUT_S = 120.0


def snapshot(url: str) -> dict:
    with urllib.request.urlopen(url + "api/snapshot", timeout=5) as response:
        return json.loads(response.read())


def test_top_shows_what_the_dashboard_reads(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    dashboard = Child(
        "dashboard",
        recstream_command("dashboard", "--bootstrap", broker.bootstrap, "--port", str(port)),
        recstream_env,
        tmp_path / "dashboard.log",
    ).start()
    try:

        def serving() -> bool:
            dashboard.check_alive()
            try:
                return urllib.request.urlopen(url + "readyz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(serving, TIMEOUT_S, f"dashboard serving\n{dashboard.describe_log()}", 0.2)
        sent = 0

        def seen() -> bool:
            # The dashboard starts at the end of each partition: keep sending
            # until it has read some.
            nonlocal sent
            value = {"event_id": f"e{sent}", "user_id": "top-user", "item_id": "i1"}
            value |= {"event_type": "view", "ts": T0 + sent}
            produce(broker.bootstrap, [(b"top-user", orjson.dumps(value))])
            sent += 1
            return snapshot(url)["live"]["events_total"] > 0

        wait_for(seen, TIMEOUT_S, "the dashboard reads events", 0.5)
        with urllib.request.urlopen(url, timeout=5) as page:
            assert b"recstream" in page.read()
        for path in ("healthz", "metrics"):
            assert urllib.request.urlopen(url + path, timeout=5).status == 200

        started = time.monotonic()
        top = subprocess.run(
            recstream_command("top", "--url", url, "--iterations", "2", "--interval", "0.5"),
            capture_output=True,
            text=True,
            timeout=120,
            env={**recstream_env, "COLUMNS": "120"},
        )
        assert top.returncode == 0, top.stdout + top.stderr
        assert "events in" in top.stdout and "online quality" in top.stdout, top.stdout
        assert time.monotonic() - started < 60

        # Nothing is listening: top says so and exits 1.
        gone = subprocess.run(
            recstream_command(
                "top", "--url", f"http://127.0.0.1:{free_port()}", "--iterations", "1"
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gone.returncode == 1 and "no answer from the dashboard" in gone.stderr
    finally:
        dashboard.terminate()
        code = dashboard.wait(30)
        if code is None:
            dashboard.kill()
    assert code == 0, dashboard.describe_log()
