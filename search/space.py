"""Search spaces: one YAML file, validated on load, translated for each engine.

    fixed:                      # TrialConfig fields every trial shares
      image_size: 64
      epochs: 4
    params:                     # searched dimensions, sampled in this order
      backbone: {choice: [none, mobilenetv2, efficientnet]}
      efficientnet_variant: {choice: [b0, b1], when: {backbone: efficientnet}}
      learning_rate: {loguniform: [1.0e-4, 3.0e-3]}
      decoder_depth: {int: [3, 5]}
      dropout: {uniform: [0.0, 0.3]}

    start_from:                 # optional: configurations evaluated first (partial: the
      - {backbone: mobilenetv2, learning_rate: 2.0e-3}   # searcher samples the rest)

A dimension is `choice`, `int` (optional `step`, `log`), `uniform` or `loguniform`;
`when: {param: value | [values]}` makes it conditional on an earlier categorical one.
The backbone value `efficientnet` with `efficientnet_variant` b0..b3 names the
EfficientNet variant, which only exists when the backbone is EfficientNet.

The same space becomes Ray Tune's `param_space` (random/grid), an Optuna define-by-run
function (TPE with multivariate=True, group=True handles the conditional part) and a
KerasTuner HyperParameters set. `resolve` turns sampled values into a TrialConfig.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nuclei_search.config import BACKBONES, TrialConfig
from nuclei_search.errors import ConfigError

KINDS = ("choice", "int", "uniform", "loguniform")
VARIANT_PARAM = "efficientnet_variant"
EFFICIENTNET = "efficientnet"
EFFICIENTNET_VARIANTS = tuple(b.removeprefix(EFFICIENTNET) for b in BACKBONES if b.startswith(EFFICIENTNET))
MAX_SPACE_BYTES = 256 * 1024
MAX_DESCRIPTION_CHARS = 10_000
TOP_LEVEL_KEYS = ("description", "fixed", "params", "start_from")
MAX_START_POINTS = 100
#: keys a refit trial's config carries besides the sampled values (search.refit)
REFIT_OF = "refit_of"  # the exploration trial whose configuration it trains again
REFIT_EPOCHS = "refit_epochs"  # its training length, replacing the space's epochs


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key repeated in one YAML mapping (yaml.safe_load would keep the last one silently)."""

    def __init__(self, key: Any, mark) -> None:
        super().__init__(problem=f"found duplicate key {key!r}", problem_mark=mark)
        self.key = key
        self.line = mark.line + 1


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a repeated key in a mapping is an error."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # unhashable keys are refused by SafeLoader; keys merged in by `<<` may be overridden
            key = self.construct_object(key_node)
            if key in seen:
                raise DuplicateKeyError(key, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # choice | int | uniform | loguniform
    values: tuple = ()  # choice
    low: float | int | None = None
    high: float | int | None = None
    step: int = 1
    log: bool = False
    when: dict[str, tuple] = field(default_factory=dict)

    def active(self, sampled: dict[str, Any]) -> bool:
        return all(sampled.get(name) in allowed for name, allowed in self.when.items())

    def contains(self, value: Any) -> bool:
        """Whether `value` is a point of this dimension."""
        if self.kind == "choice":
            return any(value == v and type(value) is type(v) or (value == v and _is_number(value) and _is_number(v))
                       for v in self.values)
        if not _is_number(value) or not self.low <= value <= self.high:
            return False
        if self.kind == "int":
            return float(value).is_integer() and (int(value) - int(self.low)) % self.step == 0
        return True

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {list(self.values)}"
        return f"{self.kind} [{self.low}, {self.high}]" + (f" step {self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class SearchSpace:
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    description: str = ""
    source: str = ""
    #: configurations to evaluate before the searcher samples (Ray Tune's points_to_evaluate,
    #: Optuna's enqueue_trial): each maps searched params to values inside their ranges
    start_from: tuple[dict, ...] = ()

    # --- loading ---------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "SearchSpace":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"search space file not found: {path}")
        if path.stat().st_size > MAX_SPACE_BYTES:
            raise ConfigError(f"search space file {path} is larger than {MAX_SPACE_BYTES // 1024} KiB")
        text = path.read_text(errors="replace")
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<space>") -> "SearchSpace":
        try:
            doc = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no Python tags
        except DuplicateKeyError as exc:
            raise ConfigError(f"{source}: key {exc.key!r} appears twice in one mapping (line {exc.line}); "
                              "give each key once") from None
        except yaml.YAMLError as exc:
            first = " ".join(str(exc).split())
            raise ConfigError(f"{source}: not valid YAML ({first[:160]})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: a search space is a mapping with 'fixed' and 'params'")
        return cls.from_dict(doc, source=source)

    @classmethod
    def from_dict(cls, doc: dict, source: str = "<space>") -> "SearchSpace":
        where = source
        unknown = [k for k in doc if k not in TOP_LEVEL_KEYS]
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; expected {', '.join(TOP_LEVEL_KEYS)}")
        fixed = doc.get("fixed") or {}
        raw_params = doc.get("params") or {}
        if not isinstance(fixed, dict) or not isinstance(raw_params, dict):
            raise ConfigError(f"{where}: 'fixed' and 'params' must be mappings")
        if not raw_params:
            raise ConfigError(f"{where}: 'params' is empty: nothing to search")
        hyper = set(TrialConfig.hyperparameter_names())
        for name, value in fixed.items():
            if name not in TrialConfig.field_names():  # env fields (cache_dir) may be fixed, never searched
                raise ConfigError(f"{where}: unknown fixed key '{name}'")
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{where}: fixed '{name}' must be a single value")
        params: list[Param] = []
        for name, spec in raw_params.items():
            params.append(_parse_param(str(name), spec, params, hyper, where))
        names = {p.name for p in params}
        overlap = names & set(fixed)
        if overlap:
            raise ConfigError(f"{where}: {sorted(overlap)} is both fixed and searched")
        space = cls(fixed=dict(fixed), params=tuple(params), description=_parse_description(doc, where),
                    source=source)
        space = dataclasses.replace(space, start_from=space._parse_start_from(doc.get("start_from"), where))
        space._check_backbones(where)
        for sample in space.corner_samples():  # every extreme combination is a valid TrialConfig
            space.resolve(sample)
        return space

    def _check_backbones(self, where: str) -> None:
        by_name = {p.name: p for p in self.params}
        backbone = by_name.get("backbone")
        choices = backbone.values if backbone else (self.fixed.get("backbone", TrialConfig.backbone),)
        for value in choices:
            if value not in BACKBONES and value != EFFICIENTNET:
                raise ConfigError(f"{where}: unknown backbone '{value}'; expected one of "
                                  f"{', '.join(BACKBONES)} or '{EFFICIENTNET}' with {VARIANT_PARAM}")
        if EFFICIENTNET in choices and VARIANT_PARAM not in by_name:
            raise ConfigError(f"{where}: backbone '{EFFICIENTNET}' needs a '{VARIANT_PARAM}' param "
                              f"(choice of {', '.join(EFFICIENTNET_VARIANTS)})")
        variant = by_name.get(VARIANT_PARAM)
        if variant is not None:
            bad = [v for v in variant.values if v not in EFFICIENTNET_VARIANTS]
            if variant.kind != "choice" or bad:
                raise ConfigError(f"{where}: {VARIANT_PARAM} must be a choice of {', '.join(EFFICIENTNET_VARIANTS)}")

    def _parse_start_from(self, points: Any, where: str) -> tuple[dict, ...]:
        """Validate `start_from`: a list of partial configurations inside this space."""
        if points is None:
            return ()
        if not isinstance(points, list) or len(points) > MAX_START_POINTS:
            raise ConfigError(f"{where}: 'start_from' must be a list of at most {MAX_START_POINTS} mappings "
                              "of searched param: value")
        by_name = {p.name: p for p in self.params}
        parsed = []
        for k, point in enumerate(points, 1):
            def fail(why: str) -> ConfigError:
                return ConfigError(f"{where}: start_from entry {k}: {why}")

            if not isinstance(point, dict) or not point:
                raise fail("must be a non-empty mapping of searched param: value")
            for name, value in point.items():
                if not isinstance(name, str):
                    raise fail("keys must be param names")
                param = by_name.get(name)
                if isinstance(value, (dict, list)) or value is None:  # never repr: a YAML bomb would expand
                    raise fail(f"'{name}' must be a single value")
                if param is None:
                    why = "is fixed in this space" if name in self.fixed else "is not a searched param"
                    raise fail(f"'{name}' {why}; searched: {', '.join(by_name)}")
                if not param.contains(value):
                    raise fail(f"{name}={value!r} is outside the space ({param.describe()})")
            inactive = [p.name for p in self.params if p.name in point and not p.active(point)]
            if inactive:
                raise fail(f"{inactive} do(es) not apply with the other values of this entry")
            try:
                self.resolve(point)
            except ConfigError as exc:
                raise fail(str(exc)) from None
            parsed.append(dict(point))
        return tuple(parsed)

    def with_fixed(self, **values: Any) -> "SearchSpace":
        """The same space with some fixed values replaced (e.g. --data, --max-epochs).

        A searched param that becomes fixed leaves the `start_from` entries too."""
        doc = self.to_dict()
        for name, value in values.items():
            if value is None:
                continue
            doc["params"].pop(name, None)
            doc["fixed"][name] = value
            for point in doc.get("start_from", []):
                point.pop(name, None)
        doc["start_from"] = [p for p in doc.get("start_from", []) if p] or None
        return SearchSpace.from_dict(doc, source=self.source)

    def to_dict(self) -> dict[str, Any]:
        params = {}
        for p in self.params:
            spec: dict[str, Any] = {p.kind: list(p.values) if p.kind == "choice" else [p.low, p.high]}
            if p.kind == "int" and p.step != 1:
                spec["step"] = p.step
            if p.log:
                spec["log"] = True
            if p.when:
                spec["when"] = {k: list(v) for k, v in p.when.items()}
            params[p.name] = spec
        doc = {"description": self.description, "fixed": dict(self.fixed), "params": params}
        if self.start_from:
            doc["start_from"] = [dict(p) for p in self.start_from]
        return doc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # --- sampling helpers -------------------------------------------------------
    def corner_samples(self) -> list[dict[str, Any]]:
        """A few samples that reach every choice and both ends of every range."""
        samples = []
        width = max([len(p.values) for p in self.params if p.kind == "choice"] + [2])
        for k in range(width):
            sample: dict[str, Any] = {}
            for p in self.params:
                if not p.active(sample):
                    continue
                if p.kind == "choice":
                    sample[p.name] = p.values[k % len(p.values)]
                else:
                    sample[p.name] = p.low if k % 2 == 0 else p.high
            samples.append(sample)
        return samples

    def resolve(self, sampled: dict[str, Any]) -> TrialConfig:
        """Fixed values + the active sampled values → a validated TrialConfig (a refit trial's
        `refit_epochs` replaces the epochs)."""
        values = dict(self.fixed)
        active: dict[str, Any] = {}
        for p in self.params:
            if p.name in sampled and p.active(active):
                active[p.name] = sampled[p.name]
        variant = active.pop(VARIANT_PARAM, None)
        values.update(active)
        if values.get("backbone") == EFFICIENTNET:
            values["backbone"] = EFFICIENTNET + str(variant or EFFICIENTNET_VARIANTS[0])
        if sampled.get(REFIT_EPOCHS) is not None:
            values["epochs"] = sampled[REFIT_EPOCHS]
        try:
            return TrialConfig.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    # --- engines ------------------------------------------------------------------
    def tune_param_space(self, searcher: str = "random") -> dict[str, Any]:
        """Ray Tune param_space for the random or grid searcher (BasicVariantGenerator)."""
        from ray import tune

        space: dict[str, Any] = dict(self.fixed)
        for p in self.params:
            if searcher == "grid":
                if p.kind == "choice":
                    space[p.name] = tune.grid_search(list(p.values))
                elif p.kind == "int":
                    space[p.name] = tune.grid_search(list(range(int(p.low), int(p.high) + 1, p.step)))
                else:
                    raise ConfigError(f"{self.source}: grid search needs choice or int dimensions; "
                                      f"'{p.name}' is {p.kind}")
            elif p.kind == "choice":
                space[p.name] = tune.choice(list(p.values))
            elif p.kind == "int":
                if p.log:
                    space[p.name] = tune.lograndint(int(p.low), int(p.high) + 1)
                else:
                    space[p.name] = tune.qrandint(int(p.low), int(p.high), p.step)
            elif p.kind == "uniform":
                space[p.name] = tune.uniform(p.low, p.high)
            else:
                space[p.name] = tune.loguniform(p.low, p.high)
        return space

    def define_by_run(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: only declares parameters; returns the fixed values."""
        sampled: dict[str, Any] = {}
        for p in self.params:
            if not p.active(sampled):
                continue
            if p.kind == "choice":
                sampled[p.name] = trial.suggest_categorical(p.name, list(p.values))
            elif p.kind == "int":
                sampled[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step, log=p.log)
            else:
                sampled[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "loguniform")
        return dict(self.fixed)

    def optuna_distributions(self) -> dict[str, Any]:
        """The Optuna distribution of every searched param (what `define_by_run` declares)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "choice":
                out[p.name] = CategoricalDistribution(list(p.values))
            elif p.kind == "int":
                out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log, step=1 if p.log else p.step)
            else:
                out[p.name] = FloatDistribution(float(p.low), float(p.high), log=p.kind == "loguniform")
        return out

    def keras_tuner_values(self, hp) -> dict[str, Any]:
        """Declare the space on a KerasTuner HyperParameters object; return the sampled values."""
        sampled: dict[str, Any] = {}
        for p in self.params:
            parents = list(p.when.items())
            if parents:
                parent, allowed = parents[0]
                with hp.conditional_scope(parent, list(allowed)):
                    value = _declare_kt(hp, p)
                if p.active(sampled):
                    sampled[p.name] = value
            else:
                sampled[p.name] = _declare_kt(hp, p)
        return sampled

    @property
    def size(self) -> float:
        """Number of grid points (inf when a float dimension exists)."""
        total = 1.0
        for p in self.params:
            if p.kind == "choice":
                total *= len(p.values)
            elif p.kind == "int":
                total *= len(range(int(p.low), int(p.high) + 1, p.step))
            else:
                return math.inf
        return total


def _parse_description(doc: dict, where: str) -> str:
    """A plain string of bounded length: never str() of an arbitrary value (a YAML bomb would expand)."""
    description = doc.get("description")
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string (got {type(description).__name__})")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ConfigError(f"{where}: 'description' has {len(description)} characters; "
                          f"at most {MAX_DESCRIPTION_CHARS} are allowed")
    return description


def _declare_kt(hp, p: Param):
    if p.kind == "choice":
        return hp.Choice(p.name, list(p.values))
    if p.kind == "int":
        return hp.Int(p.name, int(p.low), int(p.high), step=p.step, sampling="log" if p.log else "linear")
    return hp.Float(p.name, float(p.low), float(p.high), sampling="log" if p.kind == "loguniform" else "linear")


def _parse_param(name: str, spec: Any, earlier: list[Param], hyper: set[str], where: str) -> Param:
    def fail(why: str) -> ConfigError:
        return ConfigError(f"{where}: param '{name}': {why}")

    if name not in hyper and name != VARIANT_PARAM:
        raise fail("unknown param (not a TrialConfig field)")
    if not isinstance(spec, dict):
        raise fail("expected a mapping like {choice: [...]} or {loguniform: [low, high]}")
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in KINDS + ("when", "step", "log")]
    if len(kinds) != 1 or extra:
        raise fail(f"needs exactly one of {', '.join(KINDS)} (optional: when, step, log); got {sorted(spec)}")
    kind = kinds[0]
    body = spec[kind]
    when = _parse_when(spec.get("when"), earlier, fail)
    if kind == "choice":
        if not isinstance(body, list) or not body:
            raise fail("choice needs a non-empty list")
        if any(isinstance(v, (dict, list)) or v is None for v in body):
            raise fail("choice values must be plain scalars")
        if len(set(map(str, body))) != len(body):
            raise fail("choice values repeat")
        return Param(name, kind, values=tuple(body), when=when)
    if not (isinstance(body, list) and len(body) == 2 and all(_is_number(v) for v in body)):
        raise fail(f"{kind} needs [low, high] numbers")
    low, high = body
    if low > high:
        raise fail(f"low {low} > high {high}")
    if kind == "loguniform" and low <= 0:
        raise fail("loguniform needs low > 0")
    step, log = spec.get("step", 1), bool(spec.get("log", False))
    if kind == "int":
        if not all(float(v).is_integer() for v in body) or not (isinstance(step, int) and step >= 1):
            raise fail("int needs integer low/high and step >= 1")
        if log and low < 1:
            raise fail("int with log needs low >= 1")
        return Param(name, kind, low=int(low), high=int(high), step=step, log=log, when=when)
    return Param(name, kind, low=float(low), high=float(high), when=when)


def _parse_when(when: Any, earlier: list[Param], fail) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise fail("'when' must map an earlier choice param to a value or list of values")
    known = {p.name: p for p in earlier}
    out = {}
    for parent, allowed in when.items():
        if parent not in known or known[parent].kind != "choice":
            raise fail(f"'when' refers to '{parent}', which is not an earlier choice param")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        missing = [v for v in allowed if v not in known[parent].values]
        if missing:
            raise fail(f"'when' value(s) {missing} are not choices of '{parent}'")
        out[str(parent)] = allowed
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
