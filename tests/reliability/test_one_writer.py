"""Reliability matrix: one experiment, one writer; resume notices a changed space.

Two `nuclei-search run --name same` started at the same moment: one runs, the other exits
2 with one line naming the first (pid, host, since when) and leaves nothing of its own.
While a process holds an experiment (or an export folder), `resume`, `run --overwrite`,
a KerasTuner run and `export` into it are refused the same way and change nothing. A lock
left by a process that died is taken over with a warning (also checked after the SIGKILL
in test_driver_kill_resume.py). An edited `space.yaml` stops `resume` with a diff-like
line and the command that searches the new space warm-started from the old one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nuclei_search.errors import ExperimentError
from nuclei_search.lock import LOCK_FILE, writer_lock
from search_helpers import assert_one_line_error, run_cli, snapshot, trial_dirs, write_space

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)

HOLD = """
import sys
from pathlib import Path
from nuclei_search.lock import writer_lock
with writer_lock(Path(sys.argv[1]), "experiment", command="nuclei-search run --name held"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


@pytest.fixture()
def holder():
    """Start a process holding a folder's lock; yields a function folder -> its Popen."""
    procs = []

    def hold(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:  # a holder that ends normally removes its lock file
        proc.stdin.close()
        proc.wait(timeout=30)


def _cli(space: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nuclei_search", "run", "--space", str(space), "--name", name,
            "--num-samples", "1", "--max-concurrent", "1", "--storage", str(storage), "--quiet", *extra]


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """Two `run --name same` started together; (storage, [CompletedProcess-like results])."""
    tmp = tmp_path_factory.mktemp("race")
    space = write_space(tmp, epochs=1)
    storage = tmp / "exp"
    procs = [subprocess.Popen(_cli(space, storage, "same"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    return storage, space, outputs


def test_two_runs_of_one_name_started_together_one_runs_the_other_exits_2(raced):
    storage, _, outputs = raced
    codes = sorted(code for code, _, _ in outputs)
    assert codes == [0, 2], outputs
    loser_err = next(err for code, _, err in outputs if code == 2)
    line = assert_one_line_error(2, loser_err, "in use by pid", socket.gethostname(), "since", "nuclei-search run")
    # one experiment: one trial, one Ray state, one study trial; the lock is gone
    experiment = storage / "same"
    assert len(trial_dirs(experiment)) == 1
    assert len(list(experiment.glob("experiment_state-*.json"))) == 1
    assert not (experiment / LOCK_FILE).exists()
    winner = json.loads((experiment / "nuclei_search.json").read_text())
    assert winner["name"] == "same" and line


def test_a_held_experiment_refuses_resume_overwrite_and_keras_tuner_and_keeps_everything(raced, holder, capsys):
    storage, space, _ = raced
    experiment = storage / "same"
    proc = holder(experiment)
    before = {k: v for k, v in snapshot(experiment).items() if k != LOCK_FILE}
    for argv in (["resume", "same", "--storage", storage, "--quiet"],
                 ["run", "--space", space, "--name", "same", "--storage", storage, "--overwrite", "--quiet"]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, f"pid {proc.pid}", "in use by", "nuclei-search run --name held")
    assert {k: v for k, v in snapshot(experiment).items() if k != LOCK_FILE} == before

    kt = storage / "kt-held"
    proc = holder(kt)
    code, _, err = run_cli(capsys, "run", "--space", space, "--name", "kt-held", "--engine", "keras-tuner",
                           "--storage", storage, "--quiet")
    assert_one_line_error(code, err, f"pid {proc.pid}")
    assert [p.name for p in kt.iterdir()] == [LOCK_FILE]  # the holder's lock only


def test_export_into_a_folder_being_written_is_refused(raced, holder, tmp_path, capsys):
    storage, _, _ = raced
    out = tmp_path / "export"
    proc = holder(out)
    code, _, err = run_cli(capsys, "export", "same", "--storage", storage, "--out", out, "--overwrite")
    assert_one_line_error(code, err, "export folder", f"pid {proc.pid}")
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(holder, tmp_path, caplog):
    folder = tmp_path / "exp"
    proc = holder(folder)
    with pytest.raises(ExperimentError, match=f"in use by pid {proc.pid}"):
        with writer_lock(folder, "experiment"):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == proc.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="nuclei_search.lock"):
        with writer_lock(folder, "experiment"):
            assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by pid {proc.pid}" in caplog.text
    assert not (folder / LOCK_FILE).exists()


def test_a_lock_recorded_by_another_host_is_refused_not_taken_over(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "other-node", "since": time.time()}))
    with pytest.raises(ExperimentError, match=r"host other-node .*remove .*\.nuclei-search\.lock"):
        with writer_lock(folder, "experiment"):
            pass
    assert (folder / LOCK_FILE).exists()


def test_a_refused_command_leaves_no_folder_of_its_own(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with writer_lock(folder, "export folder"):
            raise RuntimeError("refused")
    assert not folder.exists()


# --------------------------------------------------------------------------- changed space
def test_resume_after_space_yaml_was_edited_is_refused_with_a_summary_and_the_way_on(raced, capsys):
    storage, _, _ = raced
    experiment = storage / "same"
    space_file = experiment / "space.yaml"
    original = space_file.read_text()
    doc = yaml.safe_load(original)
    doc["params"]["learning_rate"]["choice"][0] = 1.0e-4
    try:
        space_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        before = snapshot(experiment)
        code, _, err = run_cli(capsys, "resume", "same", "--storage", storage, "--quiet")
        line = assert_one_line_error(code, err, "space.yaml was changed after the search started",
                                     "params.learning_rate.choice [1e-06,", "-> [0.0001,",
                                     "--warm-start same", f"--space {space_file}")
        assert snapshot(experiment) == before, line
        # comments, spacing and key order are not a change
        space_file.write_text("# a note\n" + original.replace("\n", "\n\n"))
        from nuclei_search.search.experiment import check_space, load_options

        assert check_space(experiment, load_options(experiment))
    finally:
        space_file.write_text(original)
