"""cluster.runtime: address parsing and the shipped runtime_env.

The real local Ray on 127.0.0.1 (no dashboard, nothing listening beyond loopback) is a row of the
reliability matrix: tests/reliability/test_dashboards_loopback.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.runtime import (
    PROJECT_PACKAGES,
    RayAddress,
    parse_address,
    project_runtime_env,
)
from nuclei_search.errors import ConfigError


@pytest.fixture
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)


@pytest.mark.parametrize("text, expected", [
    (None, RayAddress("local", "local")),
    ("local", RayAddress("local", "local")),
    ("10.1.2.3:6379", RayAddress("gcs", "10.1.2.3:6379", "10.1.2.3", 6379)),
    ("head.example:6380", RayAddress("gcs", "head.example:6380", "head.example", 6380)),
    ("[::1]:6379", RayAddress("gcs", "[::1]:6379", "::1", 6379)),
    ("ray://head.example", RayAddress("client", "ray://head.example", "head.example", 10001)),
    ("ray://127.0.0.1:10002", RayAddress("client", "ray://127.0.0.1:10002", "127.0.0.1", 10002)),
])
def test_parse_address(no_ray_address, text, expected):
    assert parse_address(text) == expected


def test_ray_init_address_forms(no_ray_address):
    assert parse_address(None).ray_init_address == "local"
    assert parse_address("h:1").ray_init_address == "h:1"
    assert parse_address("ray://h").ray_init_address == "ray://h:10001"


def test_none_and_auto_follow_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    assert parse_address(None) == RayAddress("gcs", "127.0.0.1:6390", "127.0.0.1", 6390)
    auto = parse_address("auto")
    assert (auto.kind, auto.port) == ("gcs", 6390) and auto.text == "auto (RAY_ADDRESS=127.0.0.1:6390)"


@pytest.mark.parametrize("bad", ["http://h:8265", "https://h", "h", "h:0", "h:x", "tcp://h:1", ":1"])
def test_bad_addresses_are_config_errors(no_ray_address, bad):
    with pytest.raises(ConfigError):
        parse_address(bad)


def test_runtime_env_ships_every_project_package():
    env = project_runtime_env()
    folders = [Path(p) for p in env["py_modules"]]
    assert [f.name for f in folders] == list(PROJECT_PACKAGES)
    assert all((f / "__init__.py").is_file() for f in folders)
    assert env["env_vars"]["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["env_vars"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "__pycache__" in env["excludes"]
    assert "py_modules" not in project_runtime_env(ship_code=False)
