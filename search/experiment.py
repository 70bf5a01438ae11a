"""Experiment folders: where a search lives, what it was asked to do, and whether it exists.

An experiment is Ray Tune's experiment folder (`<storage>/<name>`) plus two files of
ours: `nuclei_search.json` (the search options, so `resume` needs only the name) and
`space.yaml` (the effective search space; it must not change on resume). The Optuna
study sits beside them in `optuna.db`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nuclei_search.errors import ConfigError, ExperimentError

EXPERIMENT_FILE = "nuclei_search.json"
SPACE_FILE = "space.yaml"
SEARCHERS = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "hyperband", "median", "none")
ENGINES = ("ray", "keras-tuner")
KT_TUNERS = ("hyperband", "bayesian")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class SearchOptions:
    name: str
    space: str  # path of the space file as given
    num_samples: int = 4
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    searcher: str = "optuna"
    scheduler: str = "asha"
    max_epochs: int | None = None
    data: str | None = None
    storage: str | None = None
    address: str | None = None
    seed: int = 0
    engine: str = "ray"
    kt_tuner: str = "hyperband"
    max_failures: int = 1
    cache_dir: str | None = None

    def validate(self) -> "SearchOptions":
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"experiment name {self.name!r}: use letters, digits, '_', '-', '.' (max 100)")
        checks = [
            (self.searcher in SEARCHERS, f"--searcher must be one of {', '.join(SEARCHERS)}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (self.kt_tuner in KT_TUNERS, f"--kt-tuner must be one of {', '.join(KT_TUNERS)}"),
            (self.num_samples >= 1, "--num-samples must be >= 1"),
            (self.max_concurrent >= 1, "--max-concurrent must be >= 1"),
            (self.cpus_per_trial > 0, "--cpus-per-trial must be > 0"),
            (self.gpus_per_trial >= 0, "--gpus-per-trial must be >= 0"),
            (self.max_epochs is None or self.max_epochs >= 1, "--max-epochs must be >= 1"),
            (self.max_failures >= 0, "--max-failures must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "SearchOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def default_storage() -> str:
    """`$NUCLEI_SEARCH_STORAGE`, else ./experiments (absolute: Ray needs absolute paths)."""
    return os.environ.get("NUCLEI_SEARCH_STORAGE") or str(Path("experiments").resolve())


def storage_root(storage: str | None) -> str:
    storage = storage or default_storage()
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def local_dir(storage: str | None, name: str) -> Path:
    """The local folder of an experiment: Ray's folder on a filesystem, a local mirror for URIs."""
    root = storage_root(storage)
    if is_uri(root):
        scheme, rest = root.split("://", 1)
        return Path(default_storage()) / "_remote" / scheme / rest / name
    return Path(root) / name


def find_experiment(ref: str, storage: str | None = None) -> Path:
    """An experiment by folder path or by name under the storage root; clear error if missing."""
    candidates = [Path(ref).expanduser(), local_dir(storage, ref)]
    for path in candidates:
        if (path / EXPERIMENT_FILE).is_file():
            return path.resolve()
    raise ExperimentError(
        f"no experiment '{ref}' (looked in {', '.join(str(c) for c in candidates)}); "
        f"pass its folder or set --storage / NUCLEI_SEARCH_STORAGE"
    )


def load_options(experiment: Path) -> SearchOptions:
    return SearchOptions.from_dict(json.loads((experiment / EXPERIMENT_FILE).read_text()))


def claim(experiment: Path, overwrite: bool) -> None:
    """Make sure `experiment` may be created: refuse an existing one unless --overwrite."""
    if experiment.exists() and any(experiment.iterdir()):
        if not overwrite:
            raise ExperimentError(
                f"experiment {experiment} already exists; use `nuclei-search resume {experiment.name}` "
                f"to continue it or --overwrite to replace it"
            )
        if not (experiment / EXPERIMENT_FILE).is_file():
            raise ExperimentError(f"{experiment} exists and is not a nuclei-search experiment: not replacing it")
        shutil.rmtree(experiment)
    try:
        experiment.mkdir(parents=True, exist_ok=True)
        probe = experiment / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ExperimentError(f"cannot write the experiment folder {experiment}: {exc.strerror or exc}") from None


def save_metadata(experiment: Path, options: SearchOptions, space_yaml: str) -> None:
    (experiment / SPACE_FILE).write_text(space_yaml)
    (experiment / EXPERIMENT_FILE).write_text(json.dumps(dataclasses.asdict(options), indent=2))
