"""cluster.runtime: address parsing and the shipped runtime_env.

The real local Ray on 127.0.0.1 (no dashboard, nothing listening beyond loopback) is a row of the
reliability matrix: tests/reliability/test_dashboards_loopback.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nuclei_search.cluster.runtime import (
    SUBPACKAGES,
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
    [package] = [Path(p) for p in env["py_modules"]]  # one folder: the installed layout
    assert package.name == "nuclei_search" and (package / "__init__.py").is_file()
    assert all((package / name / "__init__.py").is_file() for name in SUBPACKAGES)
    assert (package / "search" / "spaces" / "quick.yaml").is_file() and (package / "cli" / "__init__.py").is_file()
    assert not list(package.rglob("__pycache__"))
    # a worker given only that folder imports the subpackages from it, not from this checkout
    import subprocess
    import sys

    code = "import nuclei_search.models as m, nuclei_search.search as s, nuclei_search.cli as c; print(m.__file__, s.__file__, c.__file__)"
    where = subprocess.run([sys.executable, "-S", "-c", code], cwd=package.parent, capture_output=True,  # -S: no site
                           text=True, timeout=120, env={"PYTHONPATH": str(package.parent), "PATH": "/usr/bin:/bin"})
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(line.startswith(str(package)) for line in where.stdout.split())
    assert env["env_vars"]["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["env_vars"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "__pycache__" in env["excludes"]
    assert "py_modules" not in project_runtime_env(ship_code=False)
