"""Ray cluster-launcher configs (cluster/aws-gpu.yaml, cluster/gcp-gpu.yaml): check, up, down.

`validate_launcher_config` runs the part of `ray up` that needs no cloud account:
Ray's JSON schema (ray/autoscaler/ray-schema.json) on the file as written, then Ray's
own `prepare_config` (merges the provider's defaults.yaml, setup commands, per-type
worker bounds) and `validate_config` on the result. What it cannot check offline is
the provider's `bootstrap_config` (key pairs, IAM roles, subnets, image ids, quotas):
that needs cloud credentials and happens at `ray up`.

`up`/`down` shell out to the `ray` CLI (from `ray[default]`), after the offline check.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from nuclei_search.errors import ConfigError
from nuclei_search.internals import RAY_AUTOSCALER_UTIL_LOGGER, prepare_launcher_config

log = logging.getLogger(__name__)

PACKAGED_CONFIGS = ("aws-gpu.yaml", "gcp-gpu.yaml")
START_COMMAND_KEYS = ("head_start_ray_commands", "worker_start_ray_commands")


def ray_schema() -> dict:
    """The cluster-launcher JSON schema shipped inside the installed Ray."""
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def load_launcher_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cluster config {path} not found; the packaged ones are "
                          f"{', '.join('cluster/' + c for c in PACKAGED_CONFIGS)}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"cluster config {path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"cluster config {path}: expected a mapping at the top level")
    return config


def _schema_error(where: str, exc) -> ConfigError:
    location = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
    first = str(exc.message).splitlines()[0]
    return ConfigError(f"cluster config {where}: {location}: {first}")


def validate_launcher_config(config: dict | str | Path) -> dict:
    """Validate offline as `ray up` would; return Ray's prepared config.

    Raises ConfigError naming the first offending field.
    """
    import jsonschema

    where = str(config) if not isinstance(config, dict) else config.get("cluster_name", "(dict)")
    raw = load_launcher_config(config) if not isinstance(config, dict) else copy.deepcopy(config)
    try:
        jsonschema.validate(raw, ray_schema())
    except jsonschema.ValidationError as exc:
        raise _schema_error(where, exc) from None

    ray_util_log = logging.getLogger(RAY_AUTOSCALER_UTIL_LOGGER)
    level = ray_util_log.level
    ray_util_log.setLevel(logging.WARNING)  # its INFO lines are about defaults we set on purpose
    try:
        prepared = prepare_launcher_config(raw)
    except jsonschema.ValidationError as exc:
        raise _schema_error(where, exc) from None
    except (ValueError, KeyError, RuntimeError, AssertionError) as exc:
        raise ConfigError(f"cluster config {where}: {exc}") from None
    finally:
        ray_util_log.setLevel(level)
    _check_project_rules(where, prepared)
    return prepared


def _check_project_rules(where: str, config: dict) -> None:
    """What this project asks of a GPU cluster beyond Ray's schema."""
    types = config["available_node_types"]
    head = config["head_node_type"]
    gpu_types = [name for name, t in types.items()
                 if name != head and float(t.get("resources", {}).get("GPU", 0)) > 0]
    if not gpu_types:
        raise ConfigError(f"cluster config {where}: no worker node type declares resources.GPU > 0")
    for key in START_COMMAND_KEYS:
        for command in config.get(key) or []:
            for host in dashboard_hosts(str(command), f"cluster config {where}: {key}"):
                if not _is_loopback(host):
                    raise ConfigError(f"cluster config {where}: the dashboard must not listen on {host or repr(host)}; "
                                      "use --dashboard-host=127.0.0.1 and `ray dashboard CONFIG`")


def dashboard_hosts(command: str, where: str = "command") -> list[str]:
    """Every `--dashboard-host` value in a shell command line, in either form (`=HOST` or `HOST`), unquoted."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")  # `;`, `&&`, `|` are tokens of their own
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:  # unbalanced quotes: the shell would refuse it too
        raise ConfigError(f"{where}: cannot parse {command!r} ({exc})") from None
    hosts = []
    for flag, value in zip(tokens, [*tokens[1:], ""]):
        if flag == "--dashboard-host":
            hosts.append(value)
        elif flag.startswith("--dashboard-host="):
            hosts.append(flag.partition("=")[2])
    return hosts


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also bracketed or IPv4-mapped) and localhost; anything else is public."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:  # a host name or a shell variable: it may resolve to any interface
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _ray_cli() -> list[str]:
    exe = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(exe).exists():
        raise ConfigError("the `ray` command is missing; install it with `pip install \"ray[default]\"`")
    return [exe]


def launcher_command(action: str, config: str | Path, yes: bool = True) -> list[str]:
    """The `ray up|down` command line for a config (validated first)."""
    if action not in ("up", "down"):
        raise ConfigError(f"unknown launcher action {action!r}; expected up or down")
    validate_launcher_config(config)
    return [*_ray_cli(), action, *(["-y"] if yes else []), str(config)]


def run_launcher(action: str, config: str | Path, yes: bool = True) -> int:
    """Run `ray up|down` in the foreground, its output going to this terminal."""
    cmd = launcher_command(action, config, yes)
    log.info("running %s", " ".join(cmd))
    return subprocess.call(cmd)
