"""Numeric precision of a trial: `float32`, or `mixed` (16-bit compute, float32 weights).

`mixed` resolves per machine, as Keras' mixed-precision guide advises: `mixed_float16`
on a GPU (Keras wraps the optimizer in a `LossScaleOptimizer` when the model is
compiled), `mixed_bfloat16` on a CPU with bfloat16 instructions (AVX512_BF16 or AMX:
oneDNN runs the convolutions in bfloat16), and plain `float32` elsewhere, where
emulated bfloat16 would only be slower. The mask head of every U-Net stays float32,
so predictions and losses are float32 whatever the policy.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def policy_name(precision: str, gpu: bool | None = None) -> str:
    """The Keras dtype policy of `precision` on this machine (`gpu`: default, a GPU is visible)."""
    if precision == "float32":
        return "float32"
    if precision != "mixed":
        raise ValueError(f"unknown precision {precision!r}; expected float32 or mixed")
    if gpu is None:
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        return "mixed_float16"
    if cpu_has_bf16():
        return "mixed_bfloat16"
    log.warning("precision 'mixed': this CPU has no bfloat16 instructions (%s); training in float32",
                " or ".join(BF16_CPU_FLAGS))
    return "float32"


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under Keras dtype policy `name`, then restore the previous global policy."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
