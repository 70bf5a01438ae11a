"""The search's console (search/console.py) as a user sees it: a real `nuclei-search run`.

Not a terminal (CI logs, `ray job submit`): one line per event, each with the header
(experiment, trials done/running/total, best so far, elapsed, time left), then the
summary ending with the best trial and the next command: `check_non_terminal_output`
(tests/search_helpers.py), applied to the search that tests/test_dashboard.py watches. A terminal (a real pty from
`script`): the table redrawn in place; the last screen fits 40 lines. Neither shows
TensorFlow/CUDA C++ log lines, Ray's per-trial boxes or warnings nobody can act on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from search_helpers import NOISE, write_space

pytestmark = pytest.mark.slow


def _run_on_a_terminal(tmp_path) -> subprocess.CompletedProcess:
    space = write_space(tmp_path, epochs=2)
    command = [sys.executable, "-m", "nuclei_search", "run", "--space", str(space), "--name", "t", "--num-samples",
               "2", "--storage", str(tmp_path / "exp")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RAY_AIR_NEW_OUTPUT")}
    env.update(COLUMNS="100", LINES="40", TERM="xterm")
    command = [shutil.which("script"), "-qfec", " ".join(command), str(tmp_path / "typescript")]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_on_a_terminal_the_table_is_redrawn_in_place_and_fits_one_screen(tmp_path):
    if shutil.which("script") is None:
        pytest.fail("`script` (util-linux) is needed to give the search a real terminal")
    done = _run_on_a_terminal(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    transcript = (tmp_path / "typescript").read_text(errors="replace")
    frames = re.split(r"\x1b\[\d*A", transcript)  # rich moves the cursor up to redraw the table
    assert len(frames) > 3
    last = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", frames[-1])
    screen = [line for line in last.splitlines() if line.strip() and not line.startswith("Script done")]
    assert len(screen) <= 40, "\n".join(screen)
    assert screen[0].startswith("t: 2/2 trials done, 0 running, best val_iou_best 0.")
    assert re.search(r"trial\s+┃ status\s+┃ epoch ┃ val_iou_best ┃ learning_rate ┃ dropout ┃\s+loss ┃ min", last)
    assert sum(bool(re.search(r"│[0-9a-f]{8} │ (DONE|STOPPED) ", line)) for line in screen) == 2
    assert screen[-1] == "next: nuclei-search leaderboard t" and screen[-3].startswith("best trial: ")
    for noise in NOISE:
        assert noise not in transcript, noise

