"""Connect a driver to Ray and ship this project's code to the workers.

Three routes lead from a laptop to a cluster; all of them end in `connect()`:

* local: `connect(None)` starts a private Ray on this machine (dashboard off, or on
  127.0.0.1 only).
* an existing cluster: `connect("auto")` (the cluster `ray start` made on this
  machine, or `$RAY_ADDRESS`), `connect("HOST:6379")` (the head's GCS port, from a
  machine inside the cluster's network) or `connect("ray://HOST:10001")` (Ray Client,
  from outside it). The driver then passes a `runtime_env` whose `py_modules` are this
  project's packages, so every worker imports the same code version as the driver;
  third-party packages (TensorFlow, Ray, Optuna...) must already be on the nodes (see
  cluster/Dockerfile and the launcher YAMLs).
* a Ray Job: `ray job submit --address http://127.0.0.1:8265 --working-dir . --
  python -m nuclei_search run ...` uploads the working copy and runs the driver on the
  head node. Ray sets `$RAY_ADDRESS` (and the job's runtime_env) for that driver, so
  `connect(None)` joins the cluster and ships nothing: the job already did.

A bad or unreachable address is a one-line `ClusterConnectionError` (exit code 2 at
the CLI), found by a TCP probe in about a second rather than by Ray's own minutes of
retries.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nuclei_search.errors import ConfigError, NucleiSearchError
from nuclei_search.internals import RAY_TOKEN_AUTH_LOGGER, keep_ray_on_loopback, ray_address_from_environment

log = logging.getLogger(__name__)

# The project's subpackages (nuclei_search.<name>): with nuclei_search itself, what a worker
# needs besides pip packages.
SUBPACKAGES = ("data_pipeline", "models", "cluster", "search", "results")

# Environment every trial process gets (also on remote nodes, via runtime_env).
WORKER_ENV_VARS = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # no TensorFlow/CUDA C++ log lines (cuInit, oneDNN, absl) from trials
    # Belt and braces: models.runtime.configure_tensorflow also sets memory growth per
    # trial; the variable covers TF code that runs before it. Fractional GPUs
    # (--gpus-per-trial 0.5) only share a card when memory grows on demand.
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
}

# Files never uploaded with py_modules.
UPLOAD_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache", "*.egg-info"]

RAY_CLIENT_DEFAULT_PORT = 10001
PROBE_TIMEOUT_S = 3.0
# Set by Ray in the environment of a driver started by `ray job submit`.
_RAY_JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class ClusterConnectionError(NucleiSearchError, ConnectionError):
    """No Ray cluster answers at the given address."""


@dataclass(frozen=True)
class RayAddress:
    """A parsed `--address`: where and how to reach Ray."""

    kind: str  # "local" | "gcs" | "client"
    text: str  # what the user gave (for messages)
    host: str | None = None
    port: int | None = None

    @property
    def ray_init_address(self) -> str:
        if self.kind == "local":
            return "local"
        if self.kind == "client":
            return f"ray://{self.host}:{self.port}"
        return f"{self.host}:{self.port}"


def no_cluster_message(text: str, why: str = "") -> str:
    reason = f" ({why})" if why else ""
    return (f"no Ray cluster at {text}{reason}; start one with `ray start --head` "
            "or pass --address")


def _split_host_port(hostport: str, text: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, ""
    host = host.strip("[]")  # [::1]:6379
    if not host:
        raise ConfigError(f"Ray address {text!r} has no host; expected auto, HOST:PORT or ray://HOST:10001")
    if not port:
        if default_port is None:
            raise ConfigError(f"Ray address {text!r} has no port; expected HOST:PORT (the head's GCS port, "
                              "usually 6379) or ray://HOST:10001")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"Ray address {text!r} has a bad port {port!r}")
    return host, int(port)


def parse_address(address: str | None) -> RayAddress:
    """Parse `None|local|auto|HOST:PORT|ray://HOST[:PORT]`; "auto" is resolved here.

    `None` means: the cluster in `$RAY_ADDRESS` if set (a Ray Job's driver), else a
    new local Ray.
    """
    if address is None:
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if not env:
            return RayAddress("local", "local")
        log.info("joining the Ray cluster in $RAY_ADDRESS=%s", env)
        address = env
    text = address.strip()
    if text in ("", "local"):
        return RayAddress("local", "local")
    if text == "auto":
        return _resolve_auto()
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        raise ConfigError(
            f"{text} is a dashboard/job-submission address; use it with "
            f"`ray job submit --address {text} ...`, and give this command the GCS address "
            "HOST:6379, ray://HOST:10001 or auto")
    if lowered.startswith("ray://"):
        host, port = _split_host_port(text[len("ray://"):], text, RAY_CLIENT_DEFAULT_PORT)
        return RayAddress("client", text, host, port)
    if "://" in text:
        raise ConfigError(f"Ray address {text!r}: unknown scheme; expected auto, HOST:PORT or ray://HOST:10001")
    host, port = _split_host_port(text, text)
    return RayAddress("gcs", text, host, port)


def _resolve_auto() -> RayAddress:
    """What `ray.init(address="auto")` would join: $RAY_ADDRESS, else the last `ray start`."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        resolved = parse_address(env)
        return RayAddress(resolved.kind, f"auto (RAY_ADDRESS={env})", resolved.host, resolved.port)
    try:  # Ray's own lookup: /tmp/ray/ray_current_cluster, then running GCS processes
        found = ray_address_from_environment()
    except ConnectionError:
        raise ClusterConnectionError(no_cluster_message(
            "auto", "no $RAY_ADDRESS and no cluster started with `ray start` on this machine")) from None
    except ImportError:  # pragma: no cover - Ray moved its helper
        found = None
    if not found:
        raise ClusterConnectionError(no_cluster_message("auto"))
    host, port = _split_host_port(found, found)
    return RayAddress("gcs", f"auto ({found})", host, port)


def probe(address: RayAddress, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at the address (Ray itself retries for minutes)."""
    if address.kind == "local":
        return
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        raise ClusterConnectionError(no_cluster_message(address.text, f"unknown host: {exc.strerror}")) from None
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise ClusterConnectionError(no_cluster_message(address.text, why)) from None


def project_py_modules() -> list[str]:
    """The project's code as `runtime_env["py_modules"]` wants it: one folder named
    `nuclei_search` holding every subpackage, so a worker imports `nuclei_search.models`
    as the driver does. An install has that layout already; in a checkout the subpackages
    are top-level folders (pyproject.toml maps them), so they are copied into one staging
    folder, removed when this process exits."""
    import atexit
    import shutil
    import tempfile

    import nuclei_search

    root = Path(nuclei_search.__file__).resolve().parent
    folders = {name: Path(importlib.import_module(f"nuclei_search.{name}").__file__).resolve().parent
               for name in SUBPACKAGES}
    if all(folder == root / name for name, folder in folders.items()):
        return [str(root)]
    staging = Path(tempfile.mkdtemp(prefix="nuclei-search-code-"))
    atexit.register(shutil.rmtree, staging, ignore_errors=True)
    package = staging / "nuclei_search"
    shutil.copytree(root, package, ignore=shutil.ignore_patterns(*UPLOAD_EXCLUDES))
    for name, folder in folders.items():
        shutil.copytree(folder, package / name, ignore=shutil.ignore_patterns(*UPLOAD_EXCLUDES))
    return [str(package)]


def project_runtime_env(ship_code: bool = True, env_vars: dict[str, str] | None = None) -> dict:
    """The runtime_env for a driver joining an existing cluster."""
    runtime_env: dict = {"env_vars": {**WORKER_ENV_VARS, **(env_vars or {})}}
    if ship_code:
        runtime_env["py_modules"] = project_py_modules()
        runtime_env["excludes"] = list(UPLOAD_EXCLUDES)
    return runtime_env


def in_ray_job() -> bool:
    """True in a driver started by `ray job submit` (its runtime_env already ships the code)."""
    return _RAY_JOB_ENV_VAR in os.environ


class _TokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def connect(
    address: str | RayAddress | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    include_dashboard: bool = False,
    *,
    ship_code: bool = True,
    namespace: str | None = None,
    log_to_driver: bool = True,
) -> None:
    """`ray.init` for the search driver; a no-op when Ray is already initialised.

    address: None (local Ray, or `$RAY_ADDRESS` when set), "local", "auto",
    "HOST:PORT" or "ray://HOST:10001". num_cpus/num_gpus size a local Ray only (a
    cluster's resources come from its nodes). ship_code=False joins without any
    runtime_env (no upload; enough for read-only calls such as `cluster status`).
    log_to_driver=False keeps the workers' output (Ray's per-trial lines, library warnings)
    out of this process's stdout/stderr; a Ray Client connection always forwards it.
    """
    import ray

    if ray.is_initialized():
        log.info("Ray already initialised in this process; reusing the connection")
        return
    target = address if isinstance(address, RayAddress) else parse_address(address)
    if target.kind == "local":
        _start_local_ray(num_cpus, num_gpus, include_dashboard, namespace, log_to_driver)
        return
    if num_cpus is not None or num_gpus is not None:
        raise ConfigError(
            f"num_cpus/num_gpus only size a local Ray; the cluster at {target.text} gets its "
            "resources from its nodes (`ray start --num-cpus/--num-gpus` or the launcher YAML)")
    probe(target)
    _join_cluster(target, _cluster_runtime_env(ship_code), namespace, log_to_driver)


def _start_local_ray(num_cpus, num_gpus, include_dashboard: bool, namespace, log_to_driver: bool) -> None:
    """A private Ray on this machine, on 127.0.0.1 (its dashboard too, when on)."""
    import ray

    log.info("starting a local Ray (dashboard %s)", "on 127.0.0.1" if include_dashboard else "off")
    kwargs: dict = {
        "address": "local",
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "include_dashboard": include_dashboard,
        "runtime_env": {"env_vars": dict(WORKER_ENV_VARS)},
        "namespace": namespace,
        "logging_level": logging.WARNING,
        "log_to_driver": log_to_driver,
    }
    if include_dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    keep_ray_on_loopback()
    # Ray turns token authentication on for a new local cluster (good) and says so on every
    # start (a line the user cannot act on): the setting stays, the line goes
    logging.getLogger(RAY_TOKEN_AUTH_LOGGER).addFilter(_TokenAuthNotice())
    ray.init(**kwargs)


def _cluster_runtime_env(ship_code: bool) -> dict | None:
    """What to ship when joining a cluster: the project's code, unless a Ray Job already did
    (its --working-dir / runtime_env) or nothing will run (`ship_code=False`)."""
    if in_ray_job():
        log.info("inside a Ray Job: code comes with the job's runtime_env")
        return None
    return project_runtime_env() if ship_code else None


def _join_cluster(target: RayAddress, runtime_env: dict | None, namespace, log_to_driver: bool) -> None:
    """`ray.init` against a running cluster; its failures become one-line ClusterConnectionErrors."""
    import ray

    log.info("connecting to the Ray cluster at %s", target.text)
    # A fresh Ray Client proxy sometimes fails to start the per-client server on the
    # first connection ("Initialization failure from server"); a second try succeeds.
    attempts = 2 if target.kind == "client" else 1
    for attempt in range(1, attempts + 1):
        try:
            extra = {} if target.kind == "client" else {"log_to_driver": log_to_driver}  # Ray Client has no such switch
            ray.init(address=target.ray_init_address, runtime_env=runtime_env, namespace=namespace,
                     logging_level=logging.WARNING, **extra)
            return
        except ConnectionError as exc:
            _reset_ray()
            first = _first_line(exc)
            if attempt < attempts and "Initialization failure" in first:
                log.warning("Ray Client at %s: %s; retrying once", target.text, first)
                continue
            raise ClusterConnectionError(no_cluster_message(target.text, first)) from None
        except (RuntimeError, ValueError) as exc:
            _reset_ray()
            raise ClusterConnectionError(
                f"could not join the Ray cluster at {target.text}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(":") if text else type(exc).__name__


def _reset_ray() -> None:
    """Drop what a failed `ray.init` left behind, so the next one starts clean."""
    import ray

    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - nothing to reset
        log.debug("ray.shutdown after a failed ray.init raised", exc_info=True)


def disconnect() -> None:
    """`ray.shutdown()`: leaves the cluster (or stops the local Ray this process started)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextmanager
def connected(address: str | None = None, **kwargs) -> Iterator[None]:
    """Connect for the duration of a block; disconnect only if this block connected."""
    import ray

    already = ray.is_initialized()
    connect(address, **kwargs)
    try:
        yield
    finally:
        if not already:
            disconnect()
