"""Reliability matrix: a worker node is killed mid-search.

A search through `--address` on a real 3-node Ray cluster on 127.0.0.1 survives losing a worker
node: the driver exits 0 and prints "trials: 3 (3 finished, 0 errored)"; the lost trial is
retried once on the surviving worker from its last checkpoint, and every result written
before the loss is kept unchanged.

The cluster (ray.cluster_utils.Cluster, started by this test process): a head with no
CPU for trials (the driver attaches to it) and two worker nodes with one CPU each,
every raylet on loopback. The search driver is the real CLI in a subprocess
(`python -m nuclei_search run --address 127.0.0.1:PORT`), so losing a node cannot
take it down. Trials run on both workers; once a trial has finished and another has
reported (and checkpointed) an epoch, that other trial's node dies the way a machine
does: its raylet and every process under it (the trial included) get SIGKILL at once,
then `Cluster.remove_node(allow_graceful=False)` ends what is left of it. The search
must still finish: the lost trial is retried on the surviving worker (FailureConfig
max_failures=1) from its last checkpoint, and no result written before the loss is
lost or changed.

Each worker keeps Ray's session folder (sockets, logs, shipped code, Tune's staging
folders) in a temp dir of its own, as separate machines would: a trial that wrote
into a folder only the driver's machine has fails here as it would on a real cluster.
Shared, as on a real cluster's volume: the experiment storage (one tmp folder). The trials
are the tiny trainable's (tests/tiny_trainable.py: the U-Net's trial harness, no U-Net),
shipped to the workers by value. The FIFO scheduler
keeps the test deterministic (ASHA could stop the trial we mean to lose before its
node dies); ASHA is covered by the single-node search tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import ray
from search_helpers import trial_dirs, trial_results, trial_starts, write_space

pytestmark = pytest.mark.slow

LOOPBACK = "127.0.0.1"
EPOCHS = 20  # 8 s of the tiny trainable's epochs: room to lose a trial's node mid-training
TINY_CLI = Path(__file__).resolve().parents[1] / "tiny_trainable.py"  # `nuclei-search` with the tiny trainable
SAMPLES = 3
NAME = "multinode"
WORKERS = ("worker_a", "worker_b")


# --------------------------------------------------------------------------- processes
def _children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc (no psutil in the venv)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = {p for p in pids if _alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {p for p in alive if _alive(p)}
    return alive


def _lose_node(cluster, node) -> set[int]:
    """Kill a worker node like a dead machine: raylet and all its descendants at once."""
    raylet = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    victims = {raylet, *_descendants(raylet)}
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.remove_node(node, allow_graceful=False)  # the node's other processes + Cluster's bookkeeping
    return victims


# --------------------------------------------------------------------------- cluster
@pytest.fixture
def loopback_cluster(tmp_path):
    """Head (0 CPUs) + worker_a + worker_b (1 CPU each), all on 127.0.0.1; shut down afterwards."""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    # Cluster() records its address in /tmp/ray/ray_current_cluster (what `auto` finds) and
    # deletes it at shutdown: put back what another engineer's `ray start` wrote there.
    address_file = Path(get_ray_address_file(None))
    previous_address = address_file.read_text() if address_file.is_file() else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch: stay on loopback
        mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        mp.delenv("RAY_ADDRESS", raising=False)
        if ray.is_initialized():
            ray.shutdown()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False})
        # Each worker keeps Ray's session files (sockets, logs, runtime_env, Tune's staging
        # folders) on a disk of its own, as on separate machines; short paths: Unix sockets
        # live there. Only the storage and the data cache are shared.
        node_disks = [Path(tempfile.mkdtemp(prefix=f"rn-{name[-1]}-", dir="/tmp")) for name in WORKERS]
        try:
            cluster.workers = {
                name: cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK, resources={name: 1},
                                       temp_dir=str(disk))
                for name, disk in zip(WORKERS, node_disks)
            }
            cluster.wait_for_nodes()
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
            for disk in node_disks:
                shutil.rmtree(disk, ignore_errors=True)
            if previous_address is not None and not address_file.exists():
                address_file.write_text(previous_address)


# --------------------------------------------------------------------------- search
def _driver(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONUNBUFFERED="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(TINY_CLI), *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _trials(experiment: Path) -> list[Path]:
    return trial_dirs(experiment) if experiment.is_dir() else []


def _kill_point(experiment: Path, worker_ids: dict[str, str]) -> tuple[str, Path] | None:
    """(worker, trial) once trials ran on both workers, one finished and one on a worker is mid-training."""
    nodes_used, finished, running = set(), 0, []
    for trial in _trials(experiment):
        starts, rows = trial_starts(trial), trial_results(trial)
        nodes_used |= {s["node_id"] for s in starts}
        if rows and rows[-1]["training_iteration"] >= EPOCHS:
            finished += 1
        elif starts and rows and rows[-1]["training_iteration"] <= EPOCHS // 2:
            running.append((starts[-1]["node_id"], trial))
    if len(nodes_used) < 2 or not finished:
        return None
    for node_id, trial in running:
        for name, worker_id in worker_ids.items():
            if node_id == worker_id:
                return name, trial
    return None


def test_search_loses_a_worker_node_and_still_finishes_every_trial(loopback_cluster, tmp_path):
    from nuclei_search.cluster.status import cluster_status

    cluster = loopback_cluster
    workers = cluster.workers
    worker_ids = {name: node.node_id for name, node in workers.items()}
    storage = tmp_path / "shared-storage"  # one folder every node reaches (here: the same disk)
    experiment = storage / NAME
    space = write_space(tmp_path, epochs=EPOCHS)
    log = tmp_path / "driver.log"
    workdir = tmp_path / "elsewhere"  # not the checkout: workers import the code the driver ships
    workdir.mkdir()
    started = time.monotonic()
    driver = _driver(["run", "--address", cluster.address, "--space", str(space), "--name", NAME,
                      "--num-samples", str(SAMPLES), "--max-concurrent", "2", "--cpus-per-trial", "1",
                      "--scheduler", "none", "--max-failures", "1", "--seed", "3",
                      "--storage", str(storage), "--quiet"], workdir, log)

    def output() -> str:
        return log.read_text(errors="replace")[-6000:] if log.is_file() else ""

    try:
        # 1. trials on both workers, one finished, one mid-training with a checkpoint
        point = None
        deadline = time.monotonic() + 180
        while point is None and time.monotonic() < deadline:
            assert driver.poll() is None, f"driver ended before the kill (exit {driver.returncode})\n{output()}"
            point = _kill_point(experiment, worker_ids)
            time.sleep(0.1)
        assert point, f"no kill point (trials on both workers, one finished, one running) in 180 s\n{output()}"
        victim_name, victim_trial = point
        rows_before = {t.name: trial_results(t) for t in _trials(experiment)}
        starts_before = {t.name: trial_starts(t) for t in _trials(experiment)}
        finished_before = [name for name, rows in rows_before.items()
                           if rows and rows[-1]["training_iteration"] >= EPOCHS]
        killed_at = time.time()
        # 2. the node dies with everything on it
        killed = _lose_node(cluster, workers[victim_name])
        assert not _wait_dead(killed, 10), "processes of the lost node outlived it"
        assert {s["pid"] for s in starts_before[victim_trial.name]} <= killed
        assert trial_results(victim_trial)[-1]["training_iteration"] < EPOCHS, "the trial ended before its node"
        # 3. the search goes on with one worker and ends by itself
        try:
            driver.wait(timeout=240)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"search did not finish after the node was lost\n{output()}") from None
        wall = time.monotonic() - started
        text = output()
        assert driver.returncode == 0, text
        assert f"trials: {SAMPLES} ({SAMPLES} finished, 0 errored)" in text, text
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    # every requested trial is there and TERMINATED; the lost one failed once, no other
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == SAMPLES
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * SAMPLES, [(t, t.status) for t in analysis.trials]
    assert {t.trial_id: t.num_failures for t in analysis.trials} == {
        t.trial_id: int(f"trial_{t.trial_id}" == victim_trial.name) for t in analysis.trials}
    trials = _trials(experiment)
    assert len(trials) == SAMPLES

    lost_id = worker_ids[victim_name]
    survivor_id = next(i for n, i in worker_ids.items() if n != victim_name)
    all_starts = {t.name: trial_starts(t) for t in trials}
    start_nodes = {s["node_id"] for starts in all_starts.values() for s in starts}
    assert start_nodes == set(worker_ids.values())  # both workers ran trials; the head (0 CPUs) none

    for trial in trials:
        rows, starts = trial_results(trial), all_starts[trial.name]
        # ran to its last epoch; what was written before the loss is still there, unchanged
        assert [r["training_iteration"] for r in rows][-1] == EPOCHS, trial.name
        assert rows[: len(rows_before.get(trial.name, []))] == rows_before.get(trial.name, [])
        assert starts[: len(starts_before.get(trial.name, []))] == starts_before.get(trial.name, [])
        assert not [s for s in starts if s["node_id"] == lost_id and s["time"] > killed_at]
        assert {r["node_id"] for r in rows} <= {s["node_id"] for s in starts}
        assert {r["trainable"] for r in rows} == {"tiny"}
        if trial.name in finished_before:  # finished before the loss: never touched again
            assert rows == rows_before[trial.name] and len(starts) == 1

    # the lost trial: a second start on the surviving worker, from its last checkpoint
    first, *more = all_starts[victim_trial.name]
    assert len(more) == 1, all_starts[victim_trial.name]
    second = more[0]
    assert first["node_id"] == lost_id and first["resumed_from_epoch"] is None
    assert second["node_id"] == survivor_id
    checkpointed = rows_before[victim_trial.name][-1]["training_iteration"]
    assert second["resumed_from_epoch"] is not None and checkpointed <= second["resumed_from_epoch"] < EPOCHS
    rows = trial_results(victim_trial)
    after = [r for r in rows[len(rows_before[victim_trial.name]):] if r["node_id"] == survivor_id]
    assert [r["training_iteration"] for r in after] == list(range(second["resumed_from_epoch"] + 1, EPOCHS + 1))

    # the Optuna study agrees: every trial complete, none left running
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{experiment / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == SAMPLES, states
    assert optuna.trial.TrialState.RUNNING not in states

    # `cluster status` sees the loss: two nodes alive, one dead, no trial left running. The GCS
    # marks a node dead only after several missed health checks: wait for that first.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(
            n["NodeID"] == lost_id and n["Alive"] for n in cluster.global_state.node_table()):
        time.sleep(1)
    status = cluster_status(cluster.address)
    assert not ray.is_initialized()
    dead = [n["node_id"] for n in status["nodes"] if not n["alive"]]
    assert dead == [lost_id] and status["totals"]["nodes_alive"] == 2, status["nodes"]
    assert status["trials"] == []

    # every process of the cluster (nodes, their workers) and every trial process ends with it
    ours = {s["pid"] for starts in all_starts.values() for s in starts}
    for node in cluster.list_all_nodes():
        for info in (i for infos in node.all_processes.values() for i in infos):
            ours |= {info.process.pid, *_descendants(info.process.pid)}
    assert len(ours) > 6  # gcs, raylets, agents, workers...
    cluster.shutdown()
    assert not _wait_dead(ours, 30), "processes left after the cluster shut down"
    print(f"multinode search: {wall:.0f} s wall; lost {victim_name} while trial {victim_trial.name} was at "
          f"epoch {checkpointed}, resumed from epoch {second['resumed_from_epoch']} on the other worker")
