"""Encoder weights: ``"none"``, ``"imagenet"`` or a local weights file.

* ``"none"``: random initialisation. keras.applications backbones use BatchNorm
  momentum 0.999, with which a from-scratch encoder's moving statistics never catch up
  in a short search (validation predicts all background); ``set_bn_momentum`` is used
  to bring them to 0.9 in that case.
* ``"imagenet"``: the keras.applications download. Without internet it fails within a
  few seconds with a ConfigError saying what to do instead (no hanging download).
* a path: ``*.weights.h5`` saved by ``save_weights`` from the same keras.applications
  backbone (full model, or the U-Net's ``encoder`` sub-model), or a legacy ``*.h5``
  such as the keras.applications ImageNet "notop" file copied by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from pathlib import Path

import keras

from nuclei_search.models.backbones import Backbone
from nuclei_search.errors import ConfigError

logger = logging.getLogger(__name__)

IMAGENET_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 3.0
SCRATCH_BN_MOMENTUM = 0.9


def keras_cache_dirs() -> list[Path]:
    """Where keras.utils.get_file may already hold downloaded weights."""
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]).expanduser())
    dirs.append(Path("~/.keras").expanduser())
    dirs.append(Path("/tmp/.keras"))  # get_file's fallback when ~/.keras is read-only
    return [d / "models" for d in dirs]


def cached_imagenet_file(backbone: Backbone) -> Path | None:
    if not backbone.imagenet_file:
        return None
    for d in keras_cache_dirs():
        candidate = d / backbone.imagenet_file
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def host_reachable(host: str = IMAGENET_HOST[0], port: int = IMAGENET_HOST[1], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to host:port opens within ``timeout`` seconds.

    DNS resolution has no timeout of its own, so the probe runs in a daemon thread
    that is abandoned (not waited for) after ``timeout``.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="imagenet-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _imagenet_error(backbone: Backbone, why: str) -> ConfigError:
    cache = keras_cache_dirs()[0]
    return ConfigError(
        f"could not download ImageNet weights for {backbone.name} ({why}): "
        "pass --encoder-weights none or a local weights file"
        + (f", or put {backbone.imagenet_file} into {cache}" if backbone.imagenet_file else "")
    )


def build_imagenet(backbone: Backbone) -> keras.Model:
    """The full backbone with ImageNet weights; fails fast (ConfigError) when offline."""
    cached = cached_imagenet_file(backbone)
    if cached is None:
        if not host_reachable():
            raise _imagenet_error(backbone, "no internet?")
        logger.info("downloading ImageNet weights for %s", backbone.name)
    else:
        logger.info("ImageNet weights for %s from the Keras cache: %s", backbone.name, cached)
    try:
        return backbone.build(weights="imagenet")
    except Exception as exc:  # urllib/HTTP/hash errors from keras.utils.get_file
        raise _imagenet_error(backbone, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _load_strict(target: keras.Model, path: Path) -> None:
    """``target.load_weights(path)`` turning partial loads (warnings) into errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target.load_weights(str(path))
    problems = [str(w.message) for w in caught if "load" in str(w.message).lower() or "skipping" in str(w.message).lower()]
    if problems:
        raise ValueError(problems[0].splitlines()[0])


def load_local_weights(backbone: Backbone, full: keras.Model, encoder: keras.Model, path: str | os.PathLike) -> None:
    """Load a local weights file into ``encoder`` (sharing layers with ``full``).

    ``*.weights.h5`` is loaded into the (truncated) encoder — files saved from the
    full backbone or from a U-Net's ``encoder`` sub-model both fit, entries for
    stages the encoder does not use are ignored. A legacy ``*.h5`` is loaded into the
    full backbone (keras' legacy loader matches the whole layer list).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"encoder weights file not found: {p} (encoder_weights must be 'none', 'imagenet' "
            "or the path of a .weights.h5 file saved from the same keras.applications backbone)"
        )
    name = p.name.lower()
    if name.endswith(".weights.h5"):
        target = encoder
    elif name.endswith(".h5"):
        target = full
    else:
        raise ConfigError(f"encoder weights file {p}: expected a '.weights.h5' (or legacy '.h5') file")
    try:
        _load_strict(target, p)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"encoder weights file {p} does not fit backbone {backbone.name!r}: {first} "
            f"(save it with `keras.applications.{backbone.constructor}(input_shape=(None, None, 3), "
            "include_top=False).save_weights(...)` or from a U-Net encoder of the same backbone)"
        ) from None
    logger.info("loaded encoder weights for %s from %s", backbone.name, p)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in ``model``, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


def set_bn_momentum(model: keras.Model, momentum: float = SCRATCH_BN_MOMENTUM) -> int:
    """Set the momentum of every BatchNorm layer in ``model``; returns how many.

    The momentum is part of the layer config, so it survives ``model.save``/load.
    """
    bns = batchnorm_layers(model)
    for bn in bns:
        bn.momentum = float(momentum)
    return len(bns)
