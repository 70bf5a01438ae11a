"""Experiment folders: where a search lives, what it was asked to do, and whether it exists.

An experiment is Ray Tune's experiment folder (`<storage>/<name>`) plus two files of
ours: `nuclei_search.json` (the search options, so `resume` needs only the name) and
`space.yaml` (the effective search space; it must not change on resume). The Optuna
study sits beside them in `optuna.db`.

With a URI storage (`s3://bucket/x`, `gs://...`) Ray writes the experiment there; the
driver keeps a local mirror folder under the cache (`~/.cache/nuclei-search/experiments/
s3/bucket/x/<name>`, not the working directory, which a Ray Job changes every time)
holding our two files and the live Optuna study (SQLite needs a local disk). Our two
files are uploaded next to Ray's at the start, a copy of the study after each run;
`find_experiment` brings them (or, for the results commands, the whole experiment)
back into the mirror, so any machine can resume or rank an experiment from the storage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from nuclei_search.cluster import storage as store
from nuclei_search.cluster.storage import is_remote, join, upload
from nuclei_search.contract import EXPERIMENT_FILE, SPACE_FILE, STUDY_FILE
from nuclei_search.data_pipeline.cache import default_cache_dir
from nuclei_search.errors import ConfigError, ExperimentError
from nuclei_search.lock import LOCK_FILE
from nuclei_search.outputs import probe_writable, reason
from nuclei_search.search.space import SearchSpace

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
    grace_period: int | None = None  # epochs before ASHA / the median rule may stop a trial
    data: str | None = None
    storage: str | None = None
    address: str | None = None
    seed: int = 0
    engine: str = "ray"
    kt_tuner: str = "hyperband"
    max_failures: int = 1
    cache_dir: str | None = None
    reuse_actors: bool = True
    refit_top: int = 0  # after exploring, train the top-K configurations again (search.refit)
    refit_epochs: int | None = None  # their length (default: the space's epochs); with refit_minutes, the cap
    refit_minutes: float | None = None  # size each refit's length to fit this wall time (search.refit)
    time_budget: float | None = None  # minutes of search + refit: the refit stage gets what exploration left
    warm_start: list[str] = dataclasses.field(default_factory=list)  # earlier experiments to start from

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
            (self.grace_period is None or self.grace_period >= 1, "--grace-period must be >= 1"),
            (self.grace_period is None or self.scheduler in ("asha", "median"),
             "--grace-period needs --scheduler asha or median"),
            (self.max_failures >= 0, "--max-failures must be >= 0"),
            (self.refit_top >= 0, "--refit-top must be >= 0"),
            (self.refit_epochs is None or self.refit_epochs >= 1, "--refit-epochs must be >= 1"),
            (self.refit_top == 0 or (self.engine == "ray" and self.searcher == "optuna"),
             "--refit-top needs --engine ray with --searcher optuna"),
            (self.refit_top == 0 or self.scheduler in ("asha", "median", "none"),
             "--refit-top needs --scheduler asha, median or none (Hyperband places every trial in its brackets)"),
            (self.refit_epochs is None or self.refit_top > 0, "--refit-epochs needs --refit-top K"),
            (self.refit_minutes is None or self.refit_minutes > 0, "--refit-minutes must be > 0"),
            (self.refit_minutes is None or self.refit_top > 0, "--refit-minutes needs --refit-top K"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget must be > 0"),
            (self.time_budget is None or self.refit_top > 0, "--time-budget needs --refit-top K (it sizes the refits)"),
            (not self.warm_start or (self.engine == "ray" and self.searcher == "optuna"),
             "--warm-start needs --engine ray with --searcher optuna"),
            (self.name not in self.warm_start, "--warm-start cannot name the experiment being started"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "SearchOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def default_storage() -> str:
    """`$NUCLEI_SEARCH_STORAGE`, else ./experiments (absolute: Ray needs absolute paths)."""
    return os.environ.get("NUCLEI_SEARCH_STORAGE") or str(Path("experiments").resolve())


def storage_root(storage: str | None) -> str:
    storage = storage or default_storage()
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    return storage if is_remote(storage) else str(Path(storage).expanduser().resolve())


def local_dir(storage: str | None, name: str) -> Path:
    """The local folder of an experiment: Ray's folder on a filesystem, a local mirror for URIs."""
    root = storage_root(storage)
    if is_remote(root):
        scheme, rest = root.split("://", 1)
        return default_cache_dir() / "experiments" / scheme / rest.split("?", 1)[0].strip("/") / name
    return Path(root) / name


def remote_dir(storage: str | None, name: str) -> str | None:
    """The experiment's folder on a URI storage (where Ray Tune writes it); None for a local one."""

    root = storage_root(storage)
    return join(root, name) if is_remote(root) else None


def _fetch(storage: str | None, name: str, results: bool) -> None:
    """Bring an experiment on a URI storage into its local mirror (nothing to do on a local one)."""

    remote = remote_dir(storage, name) if NAME_PATTERN.match(name) else None
    if remote is None or not store.exists(store.join(remote, EXPERIMENT_FILE)):
        return
    mirror = local_dir(storage, name)
    mirror.mkdir(parents=True, exist_ok=True)
    if results:  # leaderboard, report, export: Ray's state, the trials' results and checkpoints
        store.sync_down(remote, mirror, keep_local=[STUDY_FILE])
    else:  # resume: our files; the study copy only where this machine has none (its own is live)
        store.download(remote, [EXPERIMENT_FILE, SPACE_FILE], mirror)
        store.download(remote, [STUDY_FILE], mirror, overwrite=False)


def find_experiment(ref: str, storage: str | None = None, *, results: bool = True) -> Path:
    """An experiment by folder path or by name under the storage root; clear error if missing.

    On a URI storage the experiment is fetched into its local mirror first: everything
    (results=True) or only what `resume` needs (results=False).
    """
    candidates = [Path(ref).expanduser(), local_dir(storage, ref)]
    if not (candidates[0] / EXPERIMENT_FILE).is_file():
        _fetch(storage, ref, results)
    for path in candidates:
        if (path / EXPERIMENT_FILE).is_file():
            if not results:  # resume writes Ray's state, checkpoints and the study here
                _check_writable(path, "experiment folder", "resume writes there; nothing was changed")
            return path.resolve()
    raise ExperimentError(
        f"no experiment '{ref}' (looked in {', '.join(str(c) for c in candidates)}); "
        f"pass its folder or set --storage / NUCLEI_SEARCH_STORAGE"
    )


def load_options(experiment: Path) -> SearchOptions:
    return SearchOptions.from_dict(json.loads((experiment / EXPERIMENT_FILE).read_text()))


def check_study(experiment: Path) -> None:
    """Refuse to resume an Optuna search whose study is not where Ray's saved searcher will open it."""
    recorded = json.loads((experiment / EXPERIMENT_FILE).read_text()).get("study_db")
    here = experiment.resolve() / STUDY_FILE
    if recorded and (Path(recorded) != here or not here.is_file()):
        raise ExperimentError(
            f"the Optuna study of {experiment.name} is {recorded} on the machine that started the search, "
            f"and Ray's saved searcher reopens it there; resume on that machine (or one with that path, "
            f"e.g. the same image with the same cache volume, $NUCLEI_SEARCH_CACHE)")


def claim(experiment: Path, overwrite: bool, remote: str | None = None) -> None:
    """Make sure `experiment` may be created: refuse an existing one unless --overwrite.

    `remote`: the experiment's folder on a URI storage, checked (and cleared) as well.
    """
    if remote is not None:
        if store.exists(remote):
            if not store.exists(store.join(remote, EXPERIMENT_FILE)):
                raise ExperimentError(f"{remote} exists and is not a nuclei-search experiment: not replacing it")
            if not overwrite:
                raise ExperimentError(
                    f"experiment {remote} already exists; use `nuclei-search resume {experiment.name} "
                    f"--storage {remote.rsplit('/', 1)[0]}` to continue it or --overwrite to replace it")
            store.delete(remote)
    held = [p for p in experiment.iterdir() if p.name != LOCK_FILE] if experiment.is_dir() else []
    if held:
        if not overwrite:
            raise ExperimentError(
                f"experiment {experiment} already exists; use `nuclei-search resume {experiment.name}` "
                f"to continue it or --overwrite to replace it"
            )
        if not (experiment / EXPERIMENT_FILE).is_file():
            raise ExperimentError(f"{experiment} exists and is not a nuclei-search experiment: not replacing it")
        # --overwrite: refuse before anything is deleted
        _check_writable(experiment.parent, "storage folder", f"cannot replace {experiment.name}; nothing was changed")
        for path in held:  # not the lock this command holds
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    _check_writable(experiment, "experiment folder", "pass a writable --storage or set NUCLEI_SEARCH_STORAGE")


def _check_writable(folder: Path, label: str, hint: str) -> None:
    """Create `folder` if needed and write in it; a read-only or full storage is one clear error."""
    try:
        probe_writable(folder)
    except OSError as exc:
        raise ExperimentError(f"{label} {folder} is not writable ({reason(exc)}); {hint}") from None


def save_metadata(experiment: Path, options: SearchOptions, space_yaml: str, remote: str | None = None,
                  data_fingerprint: str | None = None) -> None:
    (experiment / SPACE_FILE).write_text(space_yaml)
    # where the live study is: Ray's saved searcher reopens it at this absolute path on resume;
    # the data fingerprint lets a later search warm-start from this one (search.warm_start)
    # the space as started, and its content hash: resume refuses an edited space.yaml (check_space)
    metadata = {**dataclasses.asdict(options), "study_db": str(experiment.resolve() / STUDY_FILE),
                "data_fingerprint": data_fingerprint, "space_sha256": space_digest(space_yaml),
                "space_started": yaml.safe_load(space_yaml)}
    (experiment / EXPERIMENT_FILE).write_text(json.dumps(metadata, indent=2))
    if remote is not None:
        upload(experiment, [SPACE_FILE, EXPERIMENT_FILE], remote)


def space_digest(space_yaml: str) -> str:
    """Content hash of a space: of what it says, not of its comments, spacing or key order."""
    doc = yaml.safe_load(space_yaml)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def space_changes(before: dict, after: dict, limit: int = 6) -> str:
    """A one-line, diff-like summary: 'params.lr.loguniform [0.0001, 0.01] -> [0.001, 0.01]; params.x added'."""
    def flat(doc, prefix=""):
        items = {}
        for key, value in (doc or {}).items():
            name = f"{prefix}{key}"
            items.update(flat(value, name + ".") if isinstance(value, dict) and value else {name: value})
        return items

    old, new = flat(before), flat(after)
    changes = [f"{k} {old[k]} -> {new[k]}" for k in old if k in new and old[k] != new[k]]
    changes += [f"{k} removed" for k in old if k not in new] + [f"{k} added" for k in new if k not in old]
    more = f"; and {len(changes) - limit} more" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


def check_space(experiment: Path, options: SearchOptions) -> str:
    """The experiment's space.yaml, refused if it was edited since the search started.

    Resume continues the search that was started (its trials, the study's distributions);
    an edited space would be ignored in part and leave the file describing another search.
    """
    path = experiment / SPACE_FILE
    text = path.read_text()
    recorded = json.loads((experiment / EXPERIMENT_FILE).read_text())
    if not recorded.get("space_sha256"):  # started before spaces were hashed
        return text
    try:
        changed = space_digest(text) != recorded["space_sha256"]
        summary = space_changes(recorded.get("space_started") or {}, yaml.safe_load(text) or {}) if changed else ""
    except (yaml.YAMLError, AttributeError):
        changed, summary = True, "it no longer parses as a YAML mapping"
    if not changed:
        return text
    storage = f" --storage {options.storage}" if options.storage else ""
    if options.engine == "ray" and options.searcher == "optuna":
        instead = (f"to search the edited space, start a new experiment warm-started from this one: "
                   f"`nuclei-search run --space {path} --name {experiment.name}-2 --warm-start {experiment.name}"
                   f"{storage}`")
    else:
        instead = f"to search the edited space, start a new experiment: `nuclei-search run --space {path} --name {experiment.name}-2`"
    raise ExperimentError(f"{path} was changed after the search started ({summary or 'content differs'}); "
                          f"resume continues the search as started: restore the file, or {instead}")


def effective_space(options: SearchOptions) -> SearchSpace:
    """The space file with the command line's fixed values; local data and cache paths
    made absolute, since every trial runs in its own working directory."""
    from nuclei_search.data_pipeline.sources import absolute_source

    space = SearchSpace.from_yaml(options.space)
    space = space.with_fixed(data=options.data, epochs=options.max_epochs, cache_dir=options.cache_dir)
    data, cache_dir = space.fixed.get("data"), space.fixed.get("cache_dir")
    return space.with_fixed(
        data=absolute_source(data) if data is not None else None,
        cache_dir=str(Path(cache_dir).expanduser().resolve()) if cache_dir is not None else None,
    )
