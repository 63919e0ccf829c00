"""The per-process HTTP endpoints: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import urllib.error
import urllib.request
import warnings

from prometheus_client import CollectorRegistry, Counter
from recstream.schemas.probes import ProbeServer, loop_responds


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoints_follow_the_checks() -> None:
    registry = CollectorRegistry()
    Counter("probe_test_things", "things", registry=registry).inc(3)
    state = {"live": True, "ready": False}
    server = ProbeServer(
        registry, 0, "127.0.0.1", live=lambda: state["live"], ready=lambda: state["ready"]
    )
    try:
        status, body = _get(server.port, "/metrics")
        assert status == 200 and "probe_test_things_total 3.0" in body
        assert _get(server.port, "/healthz") == (200, "ok\n")
        assert _get(server.port, "/readyz") == (503, "not ready\n")
        state.update(ready=True, live=False)
        assert _get(server.port, "/readyz") == (200, "ready\n")
        assert _get(server.port, "/healthz")[0] == 503
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.close()


def test_a_raising_check_is_a_no() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    server = ProbeServer(CollectorRegistry(), 0, "127.0.0.1", ready=broken)
    try:
        assert _get(server.port, "/readyz")[0] == 503
    finally:
        server.close()


def test_loop_responds_only_while_the_loop_turns() -> None:
    loop = asyncio.new_event_loop()
    check = loop_responds(loop, timeout_s=2.0)
    assert check()  # not started yet: starting up counts as alive
    answers: list[bool] = []

    async def ask_from_a_thread(blocked: bool) -> None:
        if blocked:
            # Blocks the loop while the check waits for it in another thread.
            worker = threading.Thread(target=lambda: answers.append(check()))
            worker.start()
            time.sleep(3.0)
            worker.join()
        else:
            answers.append(await asyncio.to_thread(check))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.run_until_complete(ask_from_a_thread(blocked=False))
        loop.run_until_complete(ask_from_a_thread(blocked=True))
        loop.close()
        gc.collect()
    assert answers == [True, False]
    assert not check()  # closed
    # A probe that timed out leaves nothing behind: a probe of a blocked loop
    # every few seconds must not write "coroutine ... was never awaited" each time.
    assert not [w for w in caught if "never awaited" in str(w.message)]
