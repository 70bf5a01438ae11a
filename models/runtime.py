"""Per-process TensorFlow set-up for one trial: threads, GPU memory growth, seeds."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from nuclei_search.quiet import import_tensorflow, native_stderr_silenced, wants_quiet

log = logging.getLogger(__name__)


def configure_tensorflow(cpus: int | None = None, seed: int | None = None) -> dict:
    """Bound TF's thread pools to the trial's CPUs and let GPU memory grow on demand.

    Call at the start of a trial, before TensorFlow runs any op. Fractional GPUs
    (several trials on one device) only work with memory growth on: without it the
    first trial grabs the whole card. Returns what was applied, for the trial's log.
    """

    import_tensorflow()
    import keras
    import tensorflow as tf

    applied: dict = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if cpus:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(cpus))
            tf.config.threading.set_inter_op_parallelism_threads(max(1, int(cpus)))
            applied["threads"] = int(cpus)
        except RuntimeError:  # TF already initialised in this process: keep its pools
            log.debug("TensorFlow already initialised; thread pools left as they are")
    with native_stderr_silenced(wants_quiet("error")):  # device discovery logs cuInit's failure on CPU machines
        gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            log.debug("memory growth could not be set on %s (already initialised)", gpu.name)
    applied["gpus"] = [g.name for g in gpus]
    keras.backend.clear_session()  # no Keras state leaks from an earlier trial in this process
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    return applied


@contextmanager
def released_custom_gradients() -> Iterator[None]:
    """Drop the custom gradients TensorFlow registered while the block ran (training).

    Keras' TF train step all-reduces gradients through `tf.custom_gradient`, and in graph
    mode TensorFlow registers each such gradient in its process-global gradient registry
    for ever; the closure pins the whole traced train step, the model's variables with
    it: ~85 MB per MobileNetV2 trial for every trial run in one process (KerasTuner's, a
    notebook loop). Once a train step is traced its gradient graph is built, so the
    entries are dead weight (tensorflow/tensorflow#97697; keras-team/tf-keras#898 does
    the same in `clear_session`). A no-op if TensorFlow's internals change.
    """
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [k for k in registry if k not in before and str(k).startswith("CustomGradient-")]:
                registry.pop(name, None)
