"""`cluster status` and `cluster.runtime.connect` against a real 3-node Ray cluster on loopback.

Every node of the test cluster is a real raylet on 127.0.0.1 (ray.cluster_utils.Cluster).
Ray on Linux replaces 127.0.0.1 by the machine's outward address when it connects;
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's own switch, read at import, hence also set
on the imported constant) keeps every connection on loopback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import ray

from nuclei_search.cluster.runtime import ClusterConnectionError, connect, connected, disconnect
from nuclei_search.cluster.status import cluster_status, format_table
from nuclei_search.cli import main

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loopback_ray():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        mp.delenv("RAY_ADDRESS", raising=False)
        yield mp


@pytest.fixture(scope="module")
def three_nodes(loopback_ray):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    client_port = free_port()
    # With ray[default] installed the dashboard (on 127.0.0.1) serves Ray's state API and the
    # trial list comes from it; without, from the GCS actor table. Both are real paths.
    dashboard = {"include_dashboard": False}
    if importlib.util.find_spec("aiohttp") is not None:
        dashboard = {"include_dashboard": True, "dashboard_host": LOOPBACK, "dashboard_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": LOOPBACK, "ray_client_server_port": client_port, **dashboard})
    try:
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK, resources={"worker_a": 1})
        cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK, resources={"worker_b": 1})
        cluster.wait_for_nodes()
        cluster.client_port = client_port
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def no_ray_after():
    yield
    disconnect()


def test_status_of_three_nodes(three_nodes, no_ray_after):
    status = cluster_status(three_nodes.address)
    assert not ray.is_initialized()  # joined for the snapshot only
    nodes = status["nodes"]
    assert len(nodes) == 3 and all(n["alive"] for n in nodes)
    assert [n["head"] for n in nodes] == [True, False, False]  # head listed first
    assert {n["address"] for n in nodes} == {LOOPBACK}
    assert [n["cpus_total"] for n in nodes] == [1.0, 1.0, 1.0]
    assert sorted(n["gpus_total"] for n in nodes) == [0.0, 0.0, 1.0]
    assert all(n["cpus_free"] == n["cpus_total"] for n in nodes)
    assert sorted(k for n in nodes for k in n["custom_resources"]) == ["worker_a", "worker_b"]
    t = status["totals"]
    assert (t["nodes_alive"], t["cpus_total"], t["cpus_free"], t["gpus_total"]) == (3, 3.0, 3.0, 1.0)
    assert status["trials"] == [] and status["trials_source"] in ("state_api", "gcs")
    text = format_table(status)
    assert "(head)" in text and "total: 3 alive" in text and "3/3" in text


def test_status_sees_running_tune_trials_and_their_nodes(three_nodes, tmp_path, no_ray_after):
    """A real Tune search in another driver; the status finds its trial actors on the workers."""
    driver = textwrap.dedent(f"""
        import os, time
        import ray
        from ray import tune

        ray.init(address={three_nodes.address!r}, logging_level="ERROR")

        def train_unet(config):  # runs until the test has seen it (the test then stops the driver)
            for step in range(1200):
                time.sleep(0.25)
                tune.report({{"val_iou": step / 1200}})

        trainable = tune.with_resources(train_unet, {{"cpu": 1}})
        tune.Tuner(trainable, param_space={{"lr": tune.grid_search([1, 2])}},
                   run_config=tune.RunConfig(storage_path={str(tmp_path)!r}, name="status", verbose=0)).fit()
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine starts workers slowly
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            status = cluster_status(three_nodes.address)
            if len(status["trials"]) == 2:
                break
            time.sleep(1)
        assert status is not None and len(status["trials"]) == 2, status
        node_ids = {n["node_id"] for n in status["nodes"]}
        for trial in status["trials"]:
            assert trial["class_name"].startswith("ImplicitFunc")
            assert trial["node_id"] in node_ids and trial["pid"]
        assert status["totals"]["running_trials"] == 2
        if status["trials_source"] == "state_api":
            assert all(t["resources"] == {"CPU": 1.0} for t in status["trials"])
        assert status["totals"]["cpus_free"] <= 1.0  # two of the three CPUs are held by trials
        busy = {t["node_id"] for t in status["trials"]}
        assert sum(n["cpus_free"] for n in status["nodes"] if n["node_id"] in busy) == 0.0
        assert "running trials: 2" in format_table(status)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_cli_status_json_and_table(three_nodes, capsys, no_ray_after):
    assert main(["cluster", "status", "--address", three_nodes.address, "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert len(status["nodes"]) == 3 and status["totals"]["cpus_total"] == 3.0
    assert main(["cluster", "status", "--address", three_nodes.address]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Ray cluster at {three_nodes.address}") and "GPU free/total" in out


def test_snapshot_task_runs_on_the_cluster_without_project_code(three_nodes, no_ray_after, monkeypatch, tmp_path):
    """The Ray Client route takes its snapshot in a task; that task must not need this project."""
    from nuclei_search.cluster.status import _make_collector, summarize

    monkeypatch.chdir(tmp_path)  # workers cannot import the checkout through the driver's cwd
    connect(three_nodes.address, ship_code=False)
    task = ray.remote(num_cpus=0, resources={"worker_a": 0.01})(_make_collector())
    raw = ray.get(task.remote(False), timeout=60)
    status = summarize(raw, "task")
    assert len(status["nodes"]) == 3 and status["totals"]["cpus_total"] == 3.0
    assert all(n["cpus_free"] is not None for n in status["nodes"])
    assert status["trials_source"] == "gcs"


def test_connect_ships_the_project_code(three_nodes, no_ray_after, monkeypatch, tmp_path):
    import nuclei_search.cluster.runtime as runtime_module

    # Ray puts the driver's working directory first on a local worker's sys.path; a
    # driver started elsewhere than the checkout shows what a remote node imports.
    monkeypatch.chdir(tmp_path)
    connect(three_nodes.address)
    assert ray.is_initialized()

    @ray.remote(num_cpus=0, resources={"worker_b": 0.01})
    def where_is_the_code():
        import nuclei_search.cluster.runtime as runtime
        import nuclei_search.search as search

        return (runtime.__file__, search.__file__, os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
                ray.get_runtime_context().get_node_id())

    runtime_file, search_file, tf_level, node = ray.get(where_is_the_code.remote(), timeout=60)
    # the worker imports the uploaded copy (runtime_resources), not this working tree
    assert runtime_file != runtime_module.__file__ and "runtime_resources" in runtime_file
    assert "runtime_resources" in search_file
    assert tf_level == "3"
    connect(three_nodes.address)  # already connected: a no-op
    disconnect()
    assert not ray.is_initialized()


def test_connect_refuses_cpu_sizing_for_a_cluster(three_nodes):
    from nuclei_search.errors import ConfigError

    with pytest.raises(ConfigError, match="local Ray"):
        connect(three_nodes.address, num_cpus=2)
    assert not ray.is_initialized()


def test_connected_context_and_auto_via_env(three_nodes, loopback_ray, no_ray_after):
    loopback_ray.setenv("RAY_ADDRESS", three_nodes.address)
    try:
        with connected("auto", ship_code=False):
            assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        assert not ray.is_initialized()
        with connected(None, ship_code=False):  # a Ray Job's driver: $RAY_ADDRESS wins over "local"
            assert ray.cluster_resources()["CPU"] == 3.0
    finally:
        loopback_ray.delenv("RAY_ADDRESS")


def test_cli_status_without_a_cluster_is_one_line_exit_2(loopback_ray, capsys):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    assert main(["cluster", "status", "--address", f"{LOOPBACK}:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err.startswith(f"error: no Ray cluster at {LOOPBACK}:{port}")
    assert "ray start --head" in err and "--address" in err
    assert main(["cluster", "status", "--address", f"ray://{LOOPBACK}:{port}"]) == 2
    assert "no Ray cluster at ray://" in capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert not ray.is_initialized()


def test_cli_status_subprocess_no_cluster(loopback_ray):
    port = free_port()
    env = {**os.environ, "RAY_ADDRESS": f"{LOOPBACK}:{port}"}
    proc = subprocess.run([sys.executable, "-m", "nuclei_search", "cluster", "status"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Ray cluster at auto (RAY_ADDRESS=")


def test_bad_addresses_fail_with_one_clear_error():
    from nuclei_search.errors import NucleiSearchError

    for bad, words in [("http://127.0.0.1:8265", "ray job submit"), ("127.0.0.1", "no port"),
                       ("127.0.0.1:99999", "bad port"), ("grpc://x:1", "unknown scheme"), (":6379", "no host")]:
        with pytest.raises(NucleiSearchError, match=words):
            connect(bad)
    with pytest.raises(ClusterConnectionError, match="unknown host"):
        connect("no-such-host.invalid:6379")
    assert not ray.is_initialized()


def test_trial_resources_drop_placement_group_names():
    from nuclei_search.cluster.status import _trial_resources

    pg = "dc800efd8a30fe0fb0479e88d64102000000"
    required = {f"CPU_group_0_{pg}": 2, f"CPU_group_{pg}": 2, f"GPU_group_0_{pg}": 0.5,
                f"GPU_group_{pg}": 0.5, f"bundle_group_0_{pg}": 0.001, f"bundle_group_{pg}": 0.001}
    assert _trial_resources(required) == {"CPU": 2, "GPU": 0.5}
    assert _trial_resources({"CPU": 1}) == {"CPU": 1}
