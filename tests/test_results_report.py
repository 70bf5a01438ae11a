"""The HTML report of a tiny real experiment renders, offline, in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nuclei_search.cli import main


pytestmark = pytest.mark.slow

PLOTS = ("curves", "slices", "parallel", "importance", "timeline", "optuna")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def browser() -> str:
    """Headless Chromium; missing → the test fails loudly (install: apt-get install -y chromium)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Chromium found (tried: " + ", ".join(BROWSERS) + "): install it with "
                "`apt-get install -y chromium` to test that the report renders")


@pytest.fixture(scope="module")
def report(tiny_experiment, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(tiny_experiment), "--out", str(out), "--images", "3"]) == 0
    return out


def _chromium(browser: str, profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={profile}",
        # every host name fails to resolve: the page must not need the network
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=20000",  # let plotly.js draw before the DOM dump / screenshot
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_report_is_one_self_contained_file(report):
    text = report.read_text()
    # no external scripts, styles or images: everything is inline
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=", text)
    assert not re.search(r"<img[^>]+src=\"(?!data:)", text)
    assert text.count('<script type="text/javascript">') >= 1 and "Plotly.newPlot" in text
    for anchor in PLOTS + ("leaderboard", "predictions", "errors"):
        assert f'id="{anchor}"' in text, anchor
    assert 'class="note"' not in text  # every section could be drawn for this experiment
    assert "data:image/png;base64," in text
    assert "unknown data source" in text  # the errored trial's reason is listed


def test_report_renders_in_headless_chromium(report, browser, tmp_path):
    dom = _chromium(browser, tmp_path / "profile-dom", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # plotly.js ran: each figure's div got its rendered SVG
    for anchor in PLOTS:
        div = re.search(rf'<div id="fig-{anchor}"[^>]*class="([^"]*)"', html)
        assert div and "js-plotly-plot" in div.group(1), f"figure {anchor} was not drawn"
    assert html.count('class="main-svg"') >= len(PLOTS)
    assert re.search(r'<img class="overlay"[^>]+src="data:image/png;base64,', html)

    shot = tmp_path / "report.png"
    run = _chromium(browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000",
                    "--hide-scrollbars", report.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (4000, 1280)
    # not blank: plenty of non-white pixels and real contrast, and colour (plot lines, overlays)
    non_white = (image < 245).any(axis=2)
    assert non_white.mean() > 0.05 and float(image.std()) > 20
    spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
    assert (spread > 60).mean() > 0.001
    # the lower half holds figures too (the page is more than a header)
    assert np.count_nonzero(non_white[2000:]) > 0.02 * non_white[2000:].size


def test_wide_rows_scroll_inside_their_section_never_the_page(report, browser, tmp_path):
    """In an 800-px window the one-panel-per-hyperparameter slice figure (about 900 px here)
    is wider than the page: it scrolls inside its section, and the page itself does not."""
    measured = tmp_path / "measured.html"
    probe = ("<script>setTimeout(function () { var b = document.body; "
             "b.setAttribute('data-page-width', document.documentElement.scrollWidth); "
             "b.setAttribute('data-view-width', window.innerWidth); "
             "var f = document.querySelector('#slices .figure'); "
             "b.setAttribute('data-figure-scroll', f.scrollWidth - f.clientWidth); }, 4000);</script>")
    measured.write_text(report.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _chromium(browser, tmp_path / "profile-width", "--dump-dom", "--window-size=800,2000", measured.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    widths = {k: int(v) for k, v in re.findall(r'data-(page-width|view-width|figure-scroll)="(-?\d+)"', dom.stdout)}
    assert set(widths) == {"page-width", "view-width", "figure-scroll"}, dom.stdout[:500]
    assert widths["figure-scroll"] > 0  # the figure is wider than its section ...
    assert widths["page-width"] <= widths["view-width"], widths  # ... and the page does not scroll


def test_report_refuses_a_folder_as_out(tiny_experiment, tmp_path, capsys):
    assert main(["report", str(tiny_experiment), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_report_of_an_experiment_without_trials_says_what_is_missing(tiny_experiment, tmp_path):
    from nuclei_search.results.report import build_report

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("nuclei_search.json", "space.yaml"):
        shutil.copy(tiny_experiment / name, fresh / name)
    report = build_report(str(fresh), tmp_path / "empty.html")
    assert report.path.is_file() and set(report.unavailable) >= {"curves", "slices", "timeline", "predictions"}
    assert "no trial has reported val_iou yet" in report.path.read_text()
