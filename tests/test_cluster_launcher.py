"""The Ray cluster-launcher YAMLs against Ray's own schema and checks (offline).

A public dashboard refused by `cluster validate` is a row of the reliability matrix:
tests/reliability/test_dashboards_loopback.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from nuclei_search.cluster.launcher import launcher_command, validate_launcher_config
from nuclei_search.cli import main
from nuclei_search.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_CONFIGS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_yaml_matches_rays_schema(name):
    jsonschema.validate(load(name), SCHEMA)  # the file as written


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_yaml_survives_rays_prepare_and_validate(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(load(name))  # defaults.yaml merge: offline, no credentials
    validate_config(prepared)
    assert validate_launcher_config(ROOT / "cluster" / name)["cluster_name"] == "nuclei-search-gpu"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_yaml_declares_gpu_workers_and_a_private_dashboard(name):
    config = load(name)
    head = config["head_node_type"]
    types = config["available_node_types"]
    assert types[head]["resources"].get("GPU", 0) == 0
    workers = {k: v for k, v in types.items() if k != head}
    assert any(v["resources"]["GPU"] >= 1 for v in workers.values())
    for node_type in workers.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]
    head_cmds = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds and "0.0.0.0" not in head_cmds
    assert "$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])
    assert config["file_mounts"] == {"~/nuclei-search": "."}
    setup = " ".join(config["setup_commands"])
    assert '-e "$HOME/nuclei-search[gpu]"' in setup
    assert "--python 3.11" in setup  # pyproject requires-python >= 3.11


def test_aws_and_gcp_specifics():
    aws, gcp = load("aws-gpu.yaml"), load("gcp-gpu.yaml")
    assert aws["provider"]["region"] and aws["provider"]["availability_zone"]
    assert aws["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith(("g5.", "p3."))
    assert "REPLACE-WITH-YOUR-GCP-PROJECT-ID" in gcp["provider"]["project_id"]
    worker = gcp["available_node_types"]["gpu_worker"]["node_config"]
    assert worker["guestAccelerators"][0]["acceleratorType"] == "nvidia-tesla-t4"
    assert {"onHostMaintenance": "TERMINATE"} in worker["scheduling"]


@pytest.mark.parametrize("breakage", ["no provider", "unknown key", "bad head type", "workers > max", "no gpu"])
def test_broken_launcher_config_fails(breakage):
    config = load("aws-gpu.yaml")
    broken = copy.deepcopy(config)
    if breakage == "no provider":
        del broken["provider"]
        with pytest.raises(jsonschema.ValidationError, match="provider"):
            jsonschema.validate(broken, SCHEMA)
    elif breakage == "unknown key":
        broken["available_node_types"]["gpu_worker"]["gpus"] = 1
    elif breakage == "bad head type":
        broken["head_node_type"] = "nope"
    elif breakage == "workers > max":
        broken["available_node_types"]["gpu_worker"]["min_workers"] = 9
    elif breakage == "no gpu":
        broken["available_node_types"]["gpu_worker"]["resources"] = {"CPU": 4}
    with pytest.raises(ConfigError, match="cluster config"):
        validate_launcher_config(broken)
    validate_launcher_config(config)  # the original still passes: the breakage made the difference


def test_cli_validate(capsys, tmp_path):
    assert main(["cluster", "validate", str(ROOT / "cluster" / "aws-gpu.yaml")]) == 0
    assert "valid (aws" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\nmax_workers: 1\n")
    assert main(["cluster", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "provider" in err
    assert main(["cluster", "validate", str(tmp_path / "missing.yaml")]) == 2


def test_up_validates_before_shelling_out(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\n")
    with pytest.raises(ConfigError):
        launcher_command("up", bad)
    cmd = launcher_command("down", ROOT / "cluster" / "aws-gpu.yaml")
    assert cmd[1:] == ["down", "-y", str(ROOT / "cluster" / "aws-gpu.yaml")]
