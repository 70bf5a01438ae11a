"""The one typed configuration of a trial.

`TrialConfig` flows from the YAML search space (search/) to the trainable
(models.train) to the exported model card (results.export). Every field is a plain
JSON/YAML scalar so a config survives Ray, Optuna, KerasTuner and json round trips.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nuclei_search.errors import ConfigError

BACKBONES = (
    "none",
    "mobilenetv2",
    "mobilenetv3small",
    "mobilenetv3large",
    "resnet50",
    "resnet50v2",
    "efficientnetb0",
    "efficientnetb1",
    "efficientnetb2",
    "efficientnetb3",
)
LOSSES = ("bce", "dice", "bce_dice", "focal")
AUGMENT_POLICIES = ("none", "flip", "light", "strong", "stain", "strong_stain")
INSTANCE_METHODS = ("cc", "watershed")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "mixed")


@dataclass
class TrialConfig:
    """Everything that determines one trained U-Net (data, model, training)."""

    # --- data -----------------------------------------------------------------
    data: str = "synthetic"  # synthetic | synthetic:N | kaggle | folder | .zip
    image_size: int = 128  # side of the square random training crops
    val_fraction: float = 0.2
    split_seed: int = 0
    augment: str = "light"  # named policy, see data_pipeline.augment
    batch_size: int = 8
    crops_per_image: int = 1  # random crops drawn per training image per epoch
    # --- model ----------------------------------------------------------------
    backbone: str = "mobilenetv2"
    encoder_weights: str = "none"  # none | imagenet | path to a local weights file
    decoder_depth: int = 4  # number of Conv2DTranspose up-blocks (3..5)
    base_filters: int = 16
    batch_norm: bool = True
    dropout: float = 0.0
    boundary_channel: bool = False  # second sigmoid output: nucleus contours
    # --- training -------------------------------------------------------------
    epochs: int = 10
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # constant | cosine (decay to 5 % over each training phase)
    loss: str = "bce_dice"
    freeze_epochs: int = 0  # encoder frozen for the first N epochs
    fine_tune_lr_factor: float = 0.1  # learning rate multiplier after unfreezing
    validation_freq: int = 1  # validate (and report) every N epochs and after the last one
    # the last fraction of the epochs validated every validation_freq; before it every
    # SPARSE_FACTOR × validation_freq (and at the search scheduler's rungs), see models.train
    validation_tail: float = 1.0
    threshold: float = 0.5
    instance_method: str = "watershed"  # how instances are cut from the mask (mAP)
    # float32 | mixed: 16-bit compute (bfloat16 on CPUs that have it, float16 on GPUs), see models.precision
    precision: str = "float32"
    seed: int = 0
    # --- environment (not a hyperparameter) -------------------------------------
    cache_dir: str | None = field(default=None, metadata={"env": True})

    # ------------------------------------------------------------------------
    def validate(self) -> "TrialConfig":
        """Raise ConfigError naming the first bad field."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"config field '{name}': {why} (got {getattr(self, name)!r})")

        if self.backbone not in BACKBONES:
            raise bad("backbone", f"unknown backbone; expected one of {', '.join(BACKBONES)}")
        if self.loss not in LOSSES:
            raise bad("loss", f"expected one of {', '.join(LOSSES)}")
        if self.augment not in AUGMENT_POLICIES:
            raise bad("augment", f"expected one of {', '.join(AUGMENT_POLICIES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"expected one of {', '.join(LR_SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"expected one of {', '.join(PRECISIONS)}")
        if self.instance_method not in INSTANCE_METHODS:
            raise bad("instance_method", f"expected one of {', '.join(INSTANCE_METHODS)}")
        if not 3 <= self.decoder_depth <= 5:
            raise bad("decoder_depth", "must be between 3 and 5")
        if self.image_size < 2**self.decoder_depth or self.image_size % 2**self.decoder_depth:
            raise bad("image_size", f"must be a positive multiple of 2**decoder_depth = {2**self.decoder_depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            raise bad("val_fraction", "must be in (0, 1)")
        if not 0.0 < self.threshold < 1.0:
            raise bad("threshold", "must be in (0, 1)")
        if not 0.0 < self.validation_tail <= 1.0:
            raise bad("validation_tail", "must be in (0, 1]")
        for name in ("batch_size", "crops_per_image", "epochs", "base_filters", "validation_freq"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        if self.freeze_epochs < 0:
            raise bad("freeze_epochs", "must be >= 0")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        if self.encoder_weights not in ("none", "imagenet") and self.backbone == "none":
            raise bad("encoder_weights", "a weights file needs a pretrained-style backbone, not 'none'")
        return self

    # ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def hyperparameter_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if not f.metadata.get("env"))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        """Build from a mapping, coercing types; unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(known)}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            kwargs[name] = _coerce(name, known[name], value)
        return cls(**kwargs).validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrialConfig":
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field: value")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes).validate()


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce YAML/Ray/Optuna values (numpy scalars, strings) to the field's type."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"config field '{name}' may not be empty")
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "yes", "1", "on"):
                    return True
                if low in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not float(value).is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config field '{name}' expects {kind}, got {value!r}") from None
