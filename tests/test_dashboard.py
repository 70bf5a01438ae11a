"""`nuclei-search dashboard` in headless Chromium (Playwright driving the system Chromium)
against a real search while it runs, beside the session's finished tiny experiment.

Trials of the running search appear and their epochs advance without a reload; when it
ends every trial shows as TERMINATED (and the search's own console output, not a terminal
here, is checked line by line). Both experiments are side by side (rows of each,
figures of each); sorting and the status filter work; clicking a trial shows its
validation predictions; the screenshot is not blank. The server listens on 127.0.0.1
only, and the finished experiment's folder is byte for byte what it was (read only).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from nuclei_search.cli import main
from search_helpers import assert_one_line_error, check_non_terminal_output, listening_sockets, run_cli, snapshot, write_space
from results_helpers import EXPERIMENT

pytestmark = pytest.mark.slow
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"dashboard not up at {url}")


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    path = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if path is None:
        pytest.fail("no Chromium found: `apt-get install -y chromium` to test the dashboard")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser.new_page(viewport={"width": 1400, "height": 1600})
        browser.close()


def test_dashboard_follows_a_running_search_beside_a_finished_one(tiny_experiment, browser_page, tmp_path):
    finished_before = snapshot(tiny_experiment)
    space = write_space(tmp_path, epochs=6)
    storage = tmp_path / "exp"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    search_env = {k: v for k, v in env.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RAY_AIR_NEW_OUTPUT")}
    port = _free_port()
    trained = tmp_path / "one-train"  # a `train --out` folder is shown too (a one-trial experiment)
    assert main(["train", "--epochs", "1", "--image-size", "32", "--base-filters", "4", "--decoder-depth", "3",
                 "--data", "synthetic:8", "--out", str(trained), "--quiet"]) == 0
    # the dashboard starts first: the running search's experiment does not exist yet
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "nuclei_search", "dashboard", str(storage / "live"), str(tiny_experiment),
         str(trained), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    search = None
    page = browser_page
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, dashboard)
        assert {address for _, address, _ in listening_sockets({dashboard.pid})} == {"0100007F"}  # 127.0.0.1 only
        page.goto(url)
        page.wait_for_function("window.__dashboard.polls >= 1", timeout=60_000)
        loaded = page.evaluate("window.__dashboard.loadedAt")
        search = subprocess.Popen(
            [sys.executable, "-m", "nuclei_search", "run", "--space", str(space), "--name", "live", "--num-samples",
             "3", "--max-concurrent", "2", "--storage", str(storage), "--seed", "2", "--scheduler", "none"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=search_env)
        live_rows = "document.querySelectorAll('#leaderboard tbody tr[data-experiment=\"live\"]')"
        epochs = f"Math.max(0, ...Array.from({live_rows}, r => +r.dataset.epochs))"
        page.wait_for_function(f"{live_rows}.length >= 1", timeout=180_000)  # the experiment and a trial appeared
        first = page.evaluate(f"[{live_rows}.length, {epochs}]")
        # the search moves on: more trials or more epochs, on the same page (no reload)
        page.wait_for_function(f"{live_rows}.length > {first[0]} || {epochs} > {first[1]}", timeout=180_000)
        out, err = search.communicate(timeout=400)
        assert search.returncode == 0, err[-2000:]
        # its console, not a terminal here: one line per event (tests/test_search_console.py)
        check_non_terminal_output(subprocess.CompletedProcess(search.args, 0, out, err), "live", 3)
        page.wait_for_function(
            f"{live_rows}.length === 3 && Array.from({live_rows}).every(r => r.dataset.status === 'TERMINATED')",
            timeout=60_000)
        assert page.evaluate("window.__dashboard.loadedAt") == loaded
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert page.evaluate("window.__dashboard.polls") >= 3

        # the finished experiment beside it: its rows, and figures of both experiments
        tiny_rows = f"#leaderboard tbody tr[data-experiment=\"{EXPERIMENT}\"]"
        assert page.locator(tiny_rows).count() == 3
        assert page.locator("#leaderboard tbody tr[data-experiment='one-train']").count() == 1
        page.wait_for_function("document.querySelectorAll('#figures .js-plotly-plot').length >= 6", timeout=60_000)
        panels = page.eval_on_selector_all("#figures .panel", "ps => ps.map(p => p.dataset.experiment)")
        assert panels.count("live") == 2 and panels.count(EXPERIMENT) == 2

        # sorting by a column (twice: both directions) and filtering by status
        page.click("#leaderboard th[data-key='val_iou']")
        ascending = page.eval_on_selector_all("#leaderboard tbody tr td:nth-child(1)", "c => c.length")
        values = page.evaluate(
            "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.children["
            "Array.from(document.querySelectorAll('#leaderboard th')).findIndex(h => h.dataset.key === 'val_iou')]"
            ".textContent).filter(t => t).map(Number)")
        assert ascending == 7 and values == sorted(values) and len(values) >= 5
        page.select_option("#status-filter", "ERROR")
        statuses = page.eval_on_selector_all("#leaderboard tbody tr", "rs => rs.map(r => r.dataset.status)")
        assert statuses and set(statuses) == {"ERROR"}  # the tiny experiment's failed trial
        page.select_option("#status-filter", "")

        # a trial's validation predictions
        page.click(f"{tiny_rows.replace(EXPERIMENT, 'live')} >> nth=0")
        page.wait_for_function("(document.getElementById('prediction-image') || {}).naturalWidth > 0", timeout=120_000)

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        import cv2

        image = cv2.imread(str(shot))
        non_white = (image < 245).any(axis=2)
        assert non_white.mean() > 0.05 and float(image.std()) > 20
        spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
        assert (spread > 60).mean() > 0.001  # colour: plot lines, outlines
        assert np.count_nonzero(non_white[image.shape[0] // 2:]) > 0  # figures and predictions below the table
        # a trial folder that disappears: the dashboard keeps polling, the trial stays listed
        polls = page.evaluate("window.__dashboard.polls")
        shutil.rmtree(next(p for p in (storage / "live").iterdir() if p.name.startswith("trial_")))
        page.wait_for_function(f"window.__dashboard.polls >= {polls + 2}", timeout=60_000)
        assert page.locator("#leaderboard tbody tr[data-experiment='live']").count() == 3
    finally:
        for proc in (search, dashboard):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert snapshot(tiny_experiment) == finished_before  # the dashboard only reads


def test_a_public_host_needs_allow_remote(capsys):
    code, out, err = run_cli(capsys, "dashboard", "--host", "0.0.0.0")
    assert_one_line_error(code, err, "--host 0.0.0.0 would serve the dashboard beyond this machine", "--allow-remote")
    assert out == ""
