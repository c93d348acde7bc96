"""The dashboard in a real browser: Debian's headless chromium driven by Playwright.

A session fixture starts `servesim ui --port N` (which execs `streamlit run ui/app.py`) on a
free loopback port and stops it at the end. The test loads the page, checks that the metric
cards and the charts rendered (a chart is a canvas or SVG with a non-zero size), changes the
scheduler in the sidebar, checks that the cards show the new run's values, and saves a
screenshot to out/dashboard.png (its path is printed in the log so CI keeps it as an
artifact; copy it over docs/dashboard.png, the dashboard page's picture, to refresh that: a
test run never rewrites a tracked file).

It skips, saying why, only when the browser cannot be had: Playwright not installed, or no
chromium at $SERVESIM_CHROMIUM or /usr/bin/chromium (.ci/run installs Debian's).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="browser test skipped: playwright is not installed")
pytest.importorskip("streamlit", reason="browser test skipped: streamlit is not installed")

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "out" / "dashboard.png"
CHROMIUM = os.environ.get("SERVESIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 60
PAGE_TIMEOUT_MS = 120_000
DRAWN_CHART = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks'
"""A Vega chart that has drawn: vega-embed renders a canvas (or an SVG of class marks)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"streamlit did not listen on port {port} within {timeout_s} s")


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"browser test skipped: no chromium at {CHROMIUM} "
                    "(apt-get install chromium, or set SERVESIM_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def dashboard_url(tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    command = [sys.executable, "-m", "sim.cli", "ui", "--port", str(port)]  # servesim ui
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, START_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _card(page, label: str) -> str:
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return card.locator('[data-testid="stMetricValue"]').inner_text()


def _choose(page, label: str, option: str, attempts: int = 5) -> None:
    """Pick `option` in the select box `label`; a click during a rerun can miss the list."""
    combobox = page.get_by_role("combobox", name=label, exact=True)
    opener = page.locator('[data-testid="stSelectbox"]').filter(has=combobox).get_by_role(
        "button", name="Open")
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(attempts):
        opener.click()
        try:
            choice.wait_for(state="visible", timeout=5000)
        except sync_api.TimeoutError:
            continue
        choice.click()
        return
    raise AssertionError(f"the {label} select box never listed {option!r}")


def _load(browser, url: str):
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(url, wait_until="domcontentloaded")
    page.locator('[data-testid="stMetric"]').filter(has_text="TTFT P99 (s)").wait_for()
    page.locator(DRAWN_CHART).first.wait_for()
    return page


def test_dashboard_renders_and_follows_a_control_change(browser, dashboard_url, capsys):
    # A freshly started Streamlit compiles and caches on its first page load; warm it once.
    _load(browser, dashboard_url).close()
    page = _load(browser, dashboard_url)
    before = {label: _card(page, label) for label in ("TTFT P99 (s)", "Output throughput (tok/s)")}
    assert all(value not in ("", "-") for value in before.values()), before

    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 6")
    drawn = page.locator(DRAWN_CHART)
    page.wait_for_function(f"() => document.querySelectorAll('{DRAWN_CHART}').length >= 4")
    boxes = [drawn.nth(i).bounding_box() for i in range(drawn.count())]
    assert all(b and b["width"] > 50 and b["height"] > 50 for b in boxes), boxes

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.wait_for_timeout(1000)  # let the last charts finish drawing
    page.screenshot(path=str(SCREENSHOT))
    with capsys.disabled():  # the path goes to the CI log even when the test passes
        print(f"\ndashboard screenshot: {SCREENSHOT}")

    _choose(page, "scheduler", "static")
    page.wait_for_function(
        """(before) => {
            const cards = [...document.querySelectorAll('[data-testid="stMetric"]')];
            const card = cards.find(c => c.innerText.includes('TTFT P99 (s)'));
            const value = card && card.querySelector('[data-testid="stMetricValue"]');
            return value && value.innerText !== before;
        }""", arg=before["TTFT P99 (s)"])
    after = _card(page, "TTFT P99 (s)")
    assert after != before["TTFT P99 (s)"]
    assert page.locator('[data-testid="stException"]').count() == 0
    page.locator(DRAWN_CHART).first.wait_for()
    changed = ROOT / "out" / "dashboard_static.png"
    changed.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(changed))
    with capsys.disabled():
        print(f"\ndashboard after switching to static batching: {changed} "
              f"(TTFT P99 {before['TTFT P99 (s)']} -> {after} s)")
    page.close()
