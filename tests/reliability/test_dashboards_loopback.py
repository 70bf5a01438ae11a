"""Reliability matrix: dashboards (and everything else Ray listens on) bound to 127.0.0.1.

- The local Ray that `nuclei-search run` starts: every TCP port its processes listen on
  is on the loopback interface, the dashboard is off, the node address is 127.0.0.1.
- The shipped cluster configs start the Ray dashboard on 127.0.0.1 (reached through
  `ray dashboard` / `kubectl port-forward`). One documented exception: the RayJob of
  cluster/kuberay-job.yaml binds 0.0.0.0 inside the pod so KubeRay's in-cluster job
  submitter can reach it, behind a ClusterIP service (never exposed outside the cluster).
- `nuclei-search cluster validate` refuses a launcher config whose dashboard listens beyond
  loopback (0.0.0.0, ::, any other host; `=HOST` or `HOST`, quoted or not): exit code 2, one
  line, the file unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import yaml

from nuclei_search.cluster.runtime import connect, connected
from search_helpers import assert_one_line_error, listening_sockets, run_cli

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} write them
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@pytest.fixture
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)


def _descendants(pid: int) -> set[int]:
    tree: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                tree.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_local_ray_listens_on_loopback_only_with_no_dashboard(no_ray_address, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    if ray.is_initialized():
        ray.shutdown()
    with connected(None, num_cpus=1):
        assert ray.cluster_resources()["CPU"] == 1.0
        (node,) = ray.nodes()
        assert node["NodeManagerAddress"] == "127.0.0.1"
        context = ray.get_runtime_context()
        assert context.gcs_address.startswith("127.0.0.1:")
        assert context.runtime_env.get("env_vars", {}).get("TF_CPP_MIN_LOG_LEVEL") == "3"
        assert not ray._private.worker.global_worker.node.address_info.get("webui_url")  # no dashboard
        listening = listening_sockets(_descendants(os.getpid()))
        assert listening, "found no listening socket of Ray's processes"
        public = [entry for entry in listening if entry[1] not in LOOPBACK_HEX]
        assert not public, f"Ray processes listening beyond loopback (pid, address, port): {public}"
        connect(None)  # idempotent while connected
    assert not ray.is_initialized()


def test_shipped_cluster_configs_bind_the_dashboard_to_loopback():
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml"):
        head = " ".join(yaml.safe_load((CLUSTER / name).read_text())["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head, name
    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d}
    head = docs["RayCluster"]["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1" and head["serviceType"] == "ClusterIP"
    # the documented exception: the RayJob's submitter runs in the cluster; ClusterIP only
    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay-job.yaml").read_text()) if d}
    head = docs["RayJob"]["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head["rayStartParams"]["dashboard-host"] in ("127.0.0.1", "0.0.0.0")
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert "0.0.0.0" not in dockerfile


@pytest.mark.parametrize("public, host", [
    ("--dashboard-host=0.0.0.0", "0.0.0.0"),
    ("--dashboard-host 0.0.0.0", "0.0.0.0"),
    ('--dashboard-host="0.0.0.0"', "0.0.0.0"),
    ("--dashboard-host '0.0.0.0'", "0.0.0.0"),
    ("--dashboard-host ::", "::"),
    ("--dashboard-host=::", "::"),
    ("--dashboard-host [::]", "[::]"),
    ("--dashboard-host=[::]", "[::]"),
    ("--dashboard-host=10.0.0.5", "10.0.0.5"),
    ("--dashboard-host=$(hostname -i)", "$(hostname"),
    ("--dashboard-host=127.0.0.1 --dashboard-host 0.0.0.0", "0.0.0.0"),
])
def test_a_public_dashboard_is_refused(capsys, tmp_path, public, host):
    text = (CLUSTER / "aws-gpu.yaml").read_text()
    assert "--dashboard-host=127.0.0.1" in text
    bad = tmp_path / "public-dashboard.yaml"
    bad.write_text(text.replace("--dashboard-host=127.0.0.1", public))
    code, out, err = run_cli(capsys, "cluster", "validate", bad)
    assert_one_line_error(code, err, f"cluster config {bad}", f"dashboard must not listen on {host};",
                          "--dashboard-host=127.0.0.1")
    assert out == "" and bad.read_text() == text.replace("--dashboard-host=127.0.0.1", public)


@pytest.mark.parametrize("loopback", ["--dashboard-host 127.0.0.1", '--dashboard-host="127.0.0.1"',
                                      "--dashboard-host=::1", "--dashboard-host [::1]", "--dashboard-host=localhost"])
def test_a_loopback_dashboard_in_any_form_is_accepted(capsys, tmp_path, loopback):
    good = tmp_path / "loopback-dashboard.yaml"
    good.write_text((CLUSTER / "aws-gpu.yaml").read_text().replace("--dashboard-host=127.0.0.1", loopback))
    code, _, err = run_cli(capsys, "cluster", "validate", good)
    assert code == 0, err
