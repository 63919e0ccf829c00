"""The live dashboard in headless Chromium while ``recstream demo`` streams.

Real broker, worker, scorer and dashboard processes (what ``make demo`` runs);
Debian's chromium driven through chromedriver by selenium. The numbers on the
page must change while the demo runs, the online HR@10 must appear, and a
screenshot is saved (``dashboard.png`` in the test's tmp dir; also under
``$RECSTREAM_SCREENSHOT_DIR`` when set). In CI (``CI`` set) a missing
Chromium fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recstream.processes import child_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Generous: the demo's processes start on a shared, slow machine.
START_S = 300.0
CHANGE_S = 120.0


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = shutil.which("chromium") or CHROMIUM
    driver_path = shutil.which("chromedriver") or CHROMEDRIVER
    for path, package in ((chromium, "chromium"), (driver_path, "chromium-driver")):
        if not Path(path).is_file():
            _missing(f"{path} not installed (Debian package {package})")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium not installed (dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _number(text: str) -> float | None:
    cleaned = text.replace(",", "").strip()
    return float(cleaned) if re.fullmatch(r"-?\d+(\.\d+)?", cleaned) else None


def _wait(check: Callable[[], Any], timeout_s: float, what: str, demo: subprocess.Popen) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert demo.poll() is None, f"the demo exited ({demo.returncode}) while waiting: {what}"
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f}s: {what}"
        time.sleep(0.5)


def test_dashboard_numbers_change_while_the_demo_streams(browser: Any, tmp_path: Path) -> None:
    port = free_port()
    out_path = tmp_path / "demo.out"
    argv = [
        str(Path(sys.executable).parent / "recstream"),
        "demo",
        "--duration", "90",
        "--rate", "200",
        "--users", "300",
        "--items", "200",
        "--run-dir", str(tmp_path / "run"),
        "--dashboard-port", str(port),
    ]  # fmt: skip
    with out_path.open("w") as out:
        demo = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=child_env()
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait(lambda: url in out_path.read_text(), START_S, "the demo prints the URL", demo)
        browser.get(url)
        text = lambda element_id: browser.find_element("id", element_id).text  # noqa: E731

        first = _wait(
            lambda: (_number(text("events-total")) or 0) > 0 and _number(text("recs-total")),
            START_S,
            "events and recommendations on the page",
            demo,
        )
        events_1, recs_1 = _number(text("events-total")), first
        _wait(
            lambda: (
                (_number(text("events-total")) or 0) > events_1
                and (_number(text("recs-total")) or 0) > recs_1
            ),
            CHANGE_S,
            "the counts grow",
            demo,
        )
        hr = _wait(lambda: _number(text("online-hr")) is not None, CHANGE_S, "online HR@10", demo)
        assert hr
        assert 0.0 <= _number(text("online-hr")) <= 1.0  # type: ignore[operator]
        assert _number(text("lat-p50")) is not None
        assert text("conn") == "live"
        assert text("model-version") != "–"
        # The four charts drew, and the busiest user's timeline has rows.
        assert len(browser.find_elements("css selector", ".uplot")) == 4
        _wait(
            lambda: browser.find_elements("css selector", "#user-table tbody tr"),
            CHANGE_S,
            "a user's timeline",
            demo,
        )
        _retire_and_add_from_the_page(browser, url, demo)
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        extra = os.environ.get("RECSTREAM_SCREENSHOT_DIR")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(extra) / "dashboard.png")
        print(f"\nscreenshot: {shot}")
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(90)
            except subprocess.TimeoutExpired:
                demo.kill()


def _retire_and_add_from_the_page(browser: Any, url: str, demo: subprocess.Popen[bytes]) -> None:
    """Retire an item the stream recommends and add a new one with the page's form: the
    watch table counts the lists read from 1 s after each, and none holds the retired item."""
    with urllib.request.urlopen(url + "api/snapshot", timeout=10) as answer:
        rows = json.loads(answer.read())["user"]["events"]
    item = next(r["recommendation"]["items"][0] for r in rows if r["recommendation"])
    for action, item_id, text in (("retire", item, ""), ("add", "dash-new", "Ember Kettle")):
        browser.find_element("id", "item-id").clear()
        browser.find_element("id", "item-id").send_keys(item_id)
        browser.find_element("id", "item-text").clear()
        browser.find_element("id", "item-text").send_keys(text)
        browser.find_element("id", f"item-{action}").click()
        _wait(lambda a=action, i=item_id: browser.find_element("id", "item-status").text
              == f"{i}: {'added' if a == 'add' else 'retired'}", CHANGE_S, f"{action} sent", demo)

    def watched() -> dict[str, list[str]]:
        # One script: the page replaces the rows every second, so elements found
        # one call earlier may be gone (stale) by the next.
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#catalogue-table tbody tr')]"
            ".map(tr => [...tr.cells].map(td => td.textContent))")
        return {cells[0]: cells for cells in rows}

    def settled() -> dict[str, list[str]] | None:
        # The form's status comes from the POST's answer, the table from the next
        # pushed snapshot (up to a second later): wait for both watches on the page.
        rows = watched()
        enough = "dash-new" in rows and (_number(rows.get(item, ["", "", "", "0"])[3]) or 0) >= 20
        return rows if enough else None

    rows = _wait(settled, CHANGE_S, "both watches shown, 20 lists read after the retirement", demo)
    assert rows[item][1] == "retired" and rows[item][4] == "0", rows
    assert rows["dash-new"][1] == "added", rows
