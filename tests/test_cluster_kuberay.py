"""KubeRay manifests and the worker Dockerfile: the structure that matters (no CRD schema offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def docs(name: str) -> dict[str, dict]:
    loaded = [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]
    return {d["kind"]: d for d in loaded}


def cluster_spec(name: str) -> dict:
    d = docs(name)
    return d["RayCluster"]["spec"] if "RayCluster" in d else d["RayJob"]["spec"]["rayClusterSpec"]


def ray_version_pins() -> dict[str, str]:
    pins = {}
    for name in ("kuberay.yaml", "kuberay-job.yaml"):
        pins[name] = cluster_spec(name)["rayVersion"]
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml"):
        pins[name] = re.search(r"RAY_VERSION=([\d.]+)", (CLUSTER / name).read_text()).group(1)
    pins["Dockerfile"] = re.search(r"ARG RAY_VERSION=([\d.]+)", (CLUSTER / "Dockerfile").read_text()).group(1)
    return pins


@pytest.mark.parametrize("name", ["kuberay.yaml", "kuberay-job.yaml"])
def test_kuberay_cluster_structure(name):
    d = docs(name)
    assert d["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = d["PersistentVolumeClaim"]["metadata"]["name"]
    kind = "RayCluster" if name == "kuberay.yaml" else "RayJob"
    assert d[kind]["apiVersion"] == "ray.io/v1"
    spec = cluster_spec(name)
    assert spec["enableInTreeAutoscaling"] is True

    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # never LoadBalancer/NodePort
    assert head["rayStartParams"]["num-cpus"] == "0"
    if name == "kuberay.yaml":
        assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"

    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert gpu["maxReplicas"] >= 1
    container = gpu["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"] == "1"
    assert limits["cpu"] == gpu["rayStartParams"]["num-cpus"]
    for params in (head["rayStartParams"], gpu["rayStartParams"]):
        assert all(isinstance(v, str) for v in params.values())  # KubeRay wants strings

    for group in (head, gpu):
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        c = pod["containers"][0]
        assert c["image"].endswith(":0.1.0-gpu")
        assert {"name": "results", "mountPath": "/mnt/results"} in c["volumeMounts"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["results"]["persistentVolumeClaim"]["claimName"] == claim


def test_rayjob_entrypoint_runs_the_search_on_gpus():
    job = docs("kuberay-job.yaml")["RayJob"]["spec"]
    entry = job["entrypoint"].split()
    assert entry[:2] == ["nuclei-search", "run"]
    opts = dict(zip(entry[2::2], entry[3::2]))
    assert opts == {"--space": "search/spaces/default.yaml", "--name": "dsb", "--address": "auto",
                    "--storage": "/mnt/results", "--gpus-per-trial": "0.5"}
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/nuclei-search"  # WORKDIR of cluster/Dockerfile
    assert (ROOT / opts["--space"]).is_file()
    assert job["shutdownAfterJobFinishes"] is True and job["submissionMode"] == "K8sJobMode"


def test_run_command_accepts_the_job_flags():
    from nuclei_search.cli import build_parser

    job = docs("kuberay-job.yaml")["RayJob"]["spec"]
    args = build_parser().parse_args(job["entrypoint"].split()[1:])
    assert args.gpus_per_trial == 0.5 and args.address == "auto" and args.storage == "/mnt/results"


def test_dockerfile():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^ARG TF_IMAGE=tensorflow/tensorflow:[\d.]+-gpu$", text, re.M)
    assert re.search(r"^FROM \$\{TF_IMAGE\}$", text, re.M)
    assert re.search(r"^USER ray$", text, re.M)
    assert "useradd --uid 1000" in text
    assert '"ray[default,tune]==${RAY_VERSION}"' in text
    assert "WORKDIR /home/ray/nuclei-search" in text
    assert "docker build -f cluster/Dockerfile" in text and "docker push" in text


def test_ray_pins_agree_and_meet_pyproject():
    import tomllib

    pins = ray_version_pins()
    assert len(set(pins.values())) == 1, pins
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if d.startswith("ray[")]
    from packaging.requirements import Requirement

    pin = next(iter(pins.values()))
    assert Requirement(ray_dep).specifier.contains(pin), (ray_dep, pin)  # the configs' Ray is one pyproject allows
    constraints = (ROOT / "constraints.txt").read_text().split()
    assert f"ray=={pin}" in constraints, "constraints.txt and the cluster configs pin different Rays"
