"""How close one training step comes to this CPU's limit, where an epoch's time goes, and which levers pay.

1. **FLOPs** of one training step (forward, backward, Adam) of the U-Nets the spaces use
   (MobileNetV2 and plain encoders, depth 4 and 5, 128 px, batch 16), counted from the
   traced graph by TensorFlow's profiler (`float_operation`), and the forward pass alone.
2. **Peak** of this CPU: cores × clock (read from /proc/cpuinfo) × FP32 FLOP per cycle per
   core (AVX-512 with two FMA units: 64; AVX2 with two: 32). The achieved fraction is
   images/s × FLOP per image / peak.
3. **Levers**, each in a fresh process on real batches already in memory (the input
   pipeline is measured apart, below), with 1 thread (a search trial on a 2-core machine;
   today's and the kept setting also with 2 threads, as `nuclei-search train` runs): today's
   float32 step; Keras' `steps_per_execution`; `mixed_bfloat16` (oneDNN's bfloat16 kernels, AMX where the CPU
   has it); XLA (`jit_compile=True`); batch 32; crops of 96 and 192 px; Keras 3's JAX backend
   (when jax is installed; its steps always go through XLA).
4. **Where an epoch goes** (1 thread, MobileNetV2 depth 4, real data): forward, forward +
   backward, the optimizer, Keras' fit loop with metrics and callbacks, the tf.data input
   pipeline, and whole-image validation (prediction and scoring), before and after.

The figure is the images/s ratio of the best kept setting to today's, 1 thread.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from benchmarks.common import cpu_model, dsb2018_zip, result, run_in_subprocess

NAME = "train_step"
MEASURE = "training images/s of one 1-thread trial (MobileNetV2 U-Net, 128 px, batch 16), kept levers / today"
TARGET = "report FLOP/s against peak; >= 1.5x"

log = logging.getLogger(__name__)

MODELS = (("mobilenetv2", 4), ("mobilenetv2", 5), ("none", 4), ("none", 5))
#: lever name -> settings of one throughput measurement (see `throughput`)
LEVERS = {
    "float32 (today)": {},
    "steps_per_execution 8": {"spe": 8},
    "mixed_bfloat16": {"precision": "mixed"},
    "mixed_bfloat16 + steps_per_execution 8 (kept)": {"precision": "mixed", "spe": 8},
    "XLA jit_compile": {"xla": True},
    "batch 32": {"batch": 32},
    "crop 96 px": {"size": 96},
    "crop 192 px": {"size": 192},
    "JAX backend (XLA)": {"backend": "jax"},
}
KEPT = "mixed_bfloat16 + steps_per_execution 8 (kept)"


def cpu_peak() -> dict:
    """Cores, clock and FP32 peak read from this machine."""
    from nuclei_search.models.precision import cpu_flags

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    flags = cpu_flags()
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    cores = os.cpu_count() or 1
    ghz = (max(mhz) if mhz else 0.0) / 1000.0
    return {"model": cpu_model(), "cores": cores, "ghz": ghz, "fp32_flop_per_cycle_per_core": per_cycle,
            "peak_gflops": cores * ghz * per_cycle, "peak_gflops_per_core": ghz * per_cycle,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def _config(backbone: str, depth: int, size: int = 128, batch: int = 16, precision: str = "float32", **_):
    from nuclei_search.config import TrialConfig

    return TrialConfig(data="synthetic", backbone=backbone, decoder_depth=depth, image_size=size,
                       batch_size=batch, base_filters=16, precision=precision)


def count_flops(backbone: str, depth: int) -> dict:
    """GFLOP of one training step and of one forward pass (batch 16, 128 px) from the graph."""
    import keras
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    from nuclei_search.models.losses import get_loss
    from nuclei_search.models.unet import build_unet

    config = _config(backbone, depth)
    model = build_unet(config)
    loss_fn, optimizer = get_loss("bce_dice"), keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    @tf.function
    def forward(x):
        return model(x, training=False)

    x = tf.TensorSpec([16, 128, 128, 3], tf.float32)
    y = tf.TensorSpec([16, 128, 128, 1], tf.float32)
    options = (option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    train_flops = model_analyzer.profile(graph=step.get_concrete_function(x, y).graph, options=options).total_float_ops
    forward_flops = model_analyzer.profile(graph=forward.get_concrete_function(x).graph, options=options).total_float_ops
    return {"train_step_gflop": train_flops / 1e9, "forward_gflop": forward_flops / 1e9,
            "train_gflop_per_image": train_flops / 16e9, "parameters": int(model.count_params())}


def _real_batches(config, threads: int, steps: int):
    """`steps` batches of the real training pipeline (stage1_train, light augmentation), as numpy arrays."""
    from nuclei_search.data_pipeline.loader import make_train_dataset
    from nuclei_search.data_pipeline.loader import load_data

    prepared, train_ids, val_ids = load_data(config)
    real = make_train_dataset(prepared, train_ids, config, cpus=threads)
    batches = [(x.numpy(), y.numpy()) for x, y in real.take(steps)]
    return batches, real, prepared, val_ids


def throughput(backbone: str = "mobilenetv2", depth: int = 4, threads: int = 1, size: int = 128, batch: int = 16,
               precision: str = "float32", spe: int = 1, xla: bool = False, steps: int = 32,
               quick: bool = False) -> dict:
    """Training images/s of `fit` on real batches already in memory, with the trial's tf.data options
    (run in a fresh process: thread pools, dtype policy and backend are per process)."""
    import keras
    import numpy as np

    from nuclei_search.models.train import compile_model
    from nuclei_search.models.unet import build_unet

    tensorflow = keras.backend.backend() == "tensorflow"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    config = _config(backbone, depth, size, batch, precision).replace(
        data="synthetic:24" if quick else str(dsb2018_zip()), augment="light")
    batches, real, _, _ = _real_batches(config, threads, 8)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    model = build_unet(config)
    compile_model(model, config, 1e-3, decay_steps=10 * steps, steps_per_execution=spe,
                  jit_compile=True if xla or not tensorflow else "auto")
    if tensorflow:
        data = (tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()
                .with_options(real.options()))
        fit, warm = dict(x=data, steps_per_epoch=steps), dict(x=data, steps_per_epoch=spe)
    else:  # the JAX backend iterates numpy arrays itself
        reps = steps * batch // len(x)
        fit = dict(x=np.concatenate([x] * reps), y=np.concatenate([y] * reps), batch_size=batch, shuffle=False)
        warm = dict(x=x[: spe * batch], y=y[: spe * batch], batch_size=batch, shuffle=False)
    model.fit(epochs=1, verbose=0, **warm)  # trace / compile once
    started = time.perf_counter()
    model.fit(epochs=1, verbose=0, **fit)
    seconds = time.perf_counter() - started
    return {"images_per_s": steps * batch / seconds, "step_s": seconds / steps,
            "pixels_per_s": steps * batch * size * size / seconds, "backend": keras.backend.backend()}


def epoch_breakdown(precision: str, spe: int, graph_validation: bool, threads: int = 1) -> dict:
    """Seconds per epoch (real stage1_train, MobileNetV2 depth 4) split into its parts, by difference."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from nuclei_search.data_pipeline.loader import steps_per_epoch, val_arrays
    from nuclei_search.models.evaluation import score_predictions
    from nuclei_search.models.inference import GraphPredictor, predict_images
    from nuclei_search.models.train import compile_model
    from nuclei_search.models.unet import build_unet, pad_multiple

    config = _config("mobilenetv2", 4, precision=precision).replace(data=str(dsb2018_zip()), augment="light")
    steps = steps_per_epoch(int(0.8 * 664), config)
    batches, real, prepared, val_ids = _real_batches(config, threads, steps)
    memory = tf.data.Dataset.from_tensor_slices((np.concatenate([b[0] for b in batches]),
                                                 np.concatenate([b[1] for b in batches])))
    memory = memory.batch(config.batch_size, drop_remainder=True).repeat().with_options(real.options())
    model = build_unet(config)
    compile_model(model, config, 1e-3, decay_steps=10 * steps, steps_per_execution=spe)
    optimizer, loss_fn = model.optimizer, model.loss

    @tf.function
    def forward(x):
        return model(x, training=True)

    @tf.function
    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def full_step(x, y):
        optimizer.apply(forward_backward(x, y), model.trainable_variables)

    def timed(fn, repeats: int = 2) -> float:
        fn()  # trace
        return min(_seconds(fn) for _ in range(repeats))

    tensors = [(tf.constant(x), tf.constant(y)) for x, y in batches]
    parts = {
        "forward": timed(lambda: [forward(x) for x, _ in tensors]),
        "forward_backward": timed(lambda: [forward_backward(x, y) for x, y in tensors]),
        "train_step": timed(lambda: [full_step(x, y) for x, y in tensors]),
        "fit_in_memory": timed(lambda: model.fit(memory, steps_per_epoch=steps, epochs=1, verbose=0)),
        "fit_real_pipeline": timed(lambda: model.fit(real, steps_per_epoch=steps, epochs=1, verbose=0)),
    }
    val = val_arrays(prepared, val_ids)
    images, labels = [v[0] for v in val], [v[1] for v in val]
    multiple = pad_multiple(config)
    keras_predict = GraphPredictor(model, freeze=False)
    predict_images(keras_predict, images[:4], multiple=multiple)  # trace
    parts["validation_predict_keras"] = _seconds(lambda: predict_images(keras_predict, images, multiple=multiple))
    parts["validation_predict_graph"] = _seconds(lambda: predict_images(model, images, multiple=multiple))
    probs = predict_images(model, images, multiple=multiple)
    parts["validation_score"] = _seconds(lambda: score_predictions(probs, labels, 0.5, "watershed"))
    predict = parts["validation_predict_graph" if graph_validation else "validation_predict_keras"]
    return {"steps": steps, "images": steps * config.batch_size, "seconds": parts,
            "split": {"forward": parts["forward"],
                      "backward": parts["forward_backward"] - parts["forward"],
                      "optimizer": parts["train_step"] - parts["forward_backward"],
                      "keras_loop_metrics_callbacks": parts["fit_in_memory"] - parts["train_step"],
                      "input_pipeline": parts["fit_real_pipeline"] - parts["fit_in_memory"],
                      "validation (every 2 epochs, per epoch)": (predict + parts["validation_score"]) / 2}}


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(quick: bool = False) -> dict:
    peak = cpu_peak()
    import importlib.util

    has_jax = importlib.util.find_spec("jax") is not None
    models = MODELS[:1] if quick else MODELS
    flops = {f"{b} d{d}": run_in_subprocess(__name__, "count_flops", backbone=b, depth=d) for b, d in models}
    levers: dict[str, dict] = {}
    steps = 8 if quick else 32
    for threads in (1,) if quick else (1, 2):
        for name, settings in LEVERS.items():
            if threads == 2 and name not in ("float32 (today)", KEPT):
                continue  # every lever with 1 thread (a search trial); 2 threads (`train`) for today and the kept one
            if settings.get("backend") == "jax" and not has_jax:
                levers.setdefault(name, {})[f"{threads} thread"] = "jax not installed"
                continue
            env = {}
            if settings.get("backend") == "jax":  # XLA's CPU thread pool, bounded like TensorFlow's
                env = {"KERAS_BACKEND": "jax",
                       "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false" if threads == 1 else ""}
            try:
                measured = run_in_subprocess(__name__, "throughput", env=env, threads=threads, steps=steps,
                                             quick=quick, **{k: v for k, v in settings.items() if k != "backend"})
            except RuntimeError as exc:  # the JAX backend: record why it does not run
                levers.setdefault(name, {})[f"{threads} thread"] = "fails: " + str(exc).strip().splitlines()[-1]
                log.warning("%s, %d thread(s): %s", name, threads, levers[name][f"{threads} thread"])
                continue
            levers.setdefault(name, {})[f"{threads} thread"] = measured
            log.info("%s, %d thread(s): %.1f images/s", name, threads, measured["images_per_s"])
    plain = {}
    for name in ("float32 (today)", KEPT):
        plain[name] = run_in_subprocess(__name__, "throughput", backbone="none", depth=5, threads=1, steps=steps,
                                        quick=quick, **LEVERS[name])
    per_image = flops["mobilenetv2 d4"]["train_gflop_per_image"]
    for name, by_threads in levers.items():
        for threads, measured in by_threads.items():
            if isinstance(measured, dict):
                cores = int(threads.split()[0])
                size = LEVERS[name].get("size", 128)
                gflops = measured["images_per_s"] * per_image * (size / 128) ** 2
                measured["gflops"] = gflops
                measured["fraction_of_fp32_peak"] = gflops / (peak["peak_gflops_per_core"] * cores)
    breakdown = {} if quick else {
        "before": run_in_subprocess(__name__, "epoch_breakdown", precision="float32", spe=1, graph_validation=False),
        "after": run_in_subprocess(__name__, "epoch_breakdown", precision="mixed", spe=17, graph_validation=True),
    }
    today = levers["float32 (today)"]["1 thread"]["images_per_s"]
    kept = levers[KEPT]["1 thread"]["images_per_s"]
    ratio = kept / today
    return result(NAME, MEASURE, TARGET, ratio, "x", ratio >= 1.5, cpu=peak, flops=flops, levers=levers,
                  plain_encoder_depth5_1_thread=plain, epoch_breakdown=breakdown, jax_installed=has_jax)
