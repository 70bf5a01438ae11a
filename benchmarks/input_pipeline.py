"""Train-step time with the real tf.data pipeline vs the same batches already in memory.

Real: `make_train_dataset` over the full shared stage1_train (uint8 images in memory,
random crops, per-image normalisation, `light` augmentation, parallel map, prefetch).
In memory: the same number of batches drawn from that pipeline once, kept as float32
tensors and replayed (`from_tensor_slices(...).repeat()`): no cropping, no augmentation.
The same compiled MobileNetV2 U-Net (128 px, batch 16) fits one epoch of each,
alternating, `rounds` times; the figure is the ratio of the medians.
"""

from __future__ import annotations

import logging
import statistics

import numpy as np

from benchmarks.common import dsb2018_zip, result, timer

NAME = "input_pipeline"
MEASURE = "input pipeline: train-step time with the real tf.data + augmentation vs tensors already in memory"
TARGET = "overhead <= 5 %"

log = logging.getLogger(__name__)


def run(quick: bool = False, rounds: int = 5) -> dict:
    import os

    import tensorflow as tf

    from nuclei_search.data_pipeline.loader import make_train_dataset, steps_per_epoch
    from nuclei_search.models.runtime import configure_tensorflow
    from nuclei_search.data_pipeline.loader import load_data
    from nuclei_search.models.train import compile_model
    from nuclei_search.models.unet import build_unet
    from nuclei_search.config import TrialConfig

    data = "synthetic" if quick else str(dsb2018_zip())
    config = TrialConfig(data=data, backbone="mobilenetv2", decoder_depth=4, image_size=64 if quick else 128,
                         batch_size=16, augment="light")
    cpus = os.cpu_count()
    configure_tensorflow(cpus=cpus, seed=0)
    prepared, train_ids, _ = load_data(config)
    steps = 4 if quick else steps_per_epoch(len(train_ids), config)
    real = make_train_dataset(prepared, train_ids, config, cpus=cpus)
    images, targets = [], []
    for x, y in real.take(steps):
        images.append(x.numpy())
        targets.append(y.numpy())
    memory = (tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.concatenate(targets)))
              .batch(config.batch_size, drop_remainder=True).repeat()
              .with_options(real.options()))  # the same tf.data threading and autotune settings
    model = build_unet(config)
    compile_model(model, config, config.learning_rate, decay_steps=10 * steps)
    model.fit(memory, steps_per_epoch=2, epochs=1, verbose=0)  # build and trace once
    model.fit(real, steps_per_epoch=2, epochs=1, verbose=0)
    times = {"real": [], "memory": []}
    for _ in range(2 if quick else rounds):
        for name, dataset in (("memory", memory), ("real", real)):
            with timer() as t:
                model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
            times[name].append(t())
    real_s, memory_s = statistics.median(times["real"]), statistics.median(times["memory"])
    overhead = real_s / memory_s - 1.0
    log.info("epoch of %d steps: real %.2f s, in memory %.2f s (%.1f %%)", steps, real_s, memory_s, 100 * overhead)
    return result(
        NAME, MEASURE, TARGET, 100 * overhead, "%", overhead <= 0.05,
        steps_per_epoch=steps, batch_size=config.batch_size, image_size=config.image_size, augment=config.augment,
        real_epoch_seconds=times["real"], memory_epoch_seconds=times["memory"],
        real_step_seconds=real_s / steps, memory_step_seconds=memory_s / steps, n_train=len(train_ids),
    )
