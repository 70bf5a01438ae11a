"""tf.data input pipelines for training and the arrays for full-image validation.

Training images are loaded into memory once: every image is packed with its
targets as extra uint8 channels (semantic mask, and the boundary map when
``config.boundary_channel``), flattened and concatenated into one uint8 tensor
with per-image offsets and shapes. Cropping and augmentation then run as graph
ops in a parallel, deterministic ``map``; per-element randomness comes from
``tf.data.Dataset.random(config.seed)`` through stateless ops, so results are
reproducible for a given seed however many threads run the map.

Images of any size are handled by random S×S crops (zero-padded when the image
is smaller), never by resizing whole images.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from nuclei_search.data_pipeline.augment import (
    augment_pair,
    crop_scale_range,
    normalize_image,
    percentile_bounds,
    stretch_tf,
)
from nuclei_search.data_pipeline.preprocess import PreparedDataset
from nuclei_search.data_pipeline.split import train_val_split
from nuclei_search.data_pipeline.targets import boundary_map, semantic_mask
from nuclei_search.errors import DataError

log = logging.getLogger(__name__)


def load_data(config, progress: bool = False):
    """(prepared dataset, train ids, val ids): the config's data prepared (cached) and split
    deterministically (its val_fraction and split_seed, stratified by image type)."""
    from nuclei_search.data_pipeline.preprocess import prepare

    prepared = prepare(config.data, cache_dir=config.cache_dir, progress=progress)
    train_ids, val_ids = train_val_split(prepared.ids, prepared.types, config.val_fraction, config.split_seed)
    return prepared, train_ids, val_ids


def steps_per_epoch(n_train_ids: int, config) -> int:
    """Batches per epoch: every image cropped `crops_per_image` times on average."""
    return max(1, math.ceil(n_train_ids * config.crops_per_image / config.batch_size))


def pack_images(prepared: PreparedDataset, ids: Sequence[str], boundary: bool):
    """(data uint8 [total], offsets int64 [N], shapes int32 [N,2], bounds int32 [N,2], channels)."""
    channels = 3 + (2 if boundary else 1)
    shapes = np.array([prepared.shapes[i] for i in ids], np.int64).reshape(-1, 2)
    sizes = shapes[:, 0] * shapes[:, 1] * channels
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    data = np.empty(int(sizes.sum()), np.uint8)
    bounds = np.zeros((len(ids), 2), np.int32)
    for k, image_id in enumerate(ids):
        image, labels = prepared.load(image_id)
        if image.shape[:2] != tuple(shapes[k]):
            raise DataError(f"prepared array of {image_id} is {image.shape[:2]}, index says {tuple(shapes[k])}")
        view = data[offsets[k]: offsets[k] + sizes[k]].reshape(image.shape[0], image.shape[1], channels)
        view[..., :3] = image
        view[..., 3] = semantic_mask(labels)
        if boundary:
            view[..., 4] = boundary_map(labels)
        bounds[k] = percentile_bounds(image)
    return data, offsets, shapes.astype(np.int32), bounds, channels


def crop_sampler(prepared: PreparedDataset, ids: Sequence[str], config):
    """The training images packed into one tensor, and `crop(index, seed) -> (image, target)`:
    one random S×S crop of image `index` (zero-padded when the image is smaller; scaled first
    under the `strong` policies), normalised and augmented, from a shape-[2] stateless seed."""
    import tensorflow as tf

    size = int(config.image_size)
    policy = config.augment
    scale_low, scale_high = crop_scale_range(policy)
    data_np, offsets_np, shapes_np, bounds_np, channels = pack_images(prepared, ids, bool(config.boundary_channel))
    log.info("training data in memory: %d images, %.1f MB", len(ids), data_np.nbytes / 2**20)
    data = tf.constant(data_np)
    del data_np
    offsets, shapes, bounds = tf.constant(offsets_np), tf.constant(shapes_np), tf.constant(bounds_np)
    n_targets = channels - 3

    def crop(index, seed):
        seeds = tf.random.experimental.stateless_split(seed, num=6)
        if scale_low != scale_high:
            scale = tf.random.stateless_uniform([], seeds[0], scale_low, scale_high)
            side = tf.maximum(tf.cast(tf.round(scale * size), tf.int32), 1)
        else:
            side = tf.constant(size, tf.int32)
        height, width = shapes[index][0], shapes[index][1]
        row_bytes = tf.cast(width * channels, tf.int64)
        # rows first: slice only the rows the crop needs out of the flat buffer
        y0 = tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(height - side, 0) + 1, dtype=tf.int32)
        rows = tf.minimum(side, height)
        start = offsets[index] + tf.cast(y0, tf.int64) * row_bytes
        block = tf.reshape(data[start: start + tf.cast(rows, tf.int64) * row_bytes], [rows, width, channels])
        x0 = tf.random.stateless_uniform([], seeds[2], 0, tf.maximum(width - side, 0) + 1, dtype=tf.int32)
        block = block[:, x0: x0 + side]
        pad_h, pad_w = side - tf.shape(block)[0], side - tf.shape(block)[1]
        top = tf.random.stateless_uniform([], seeds[3], 0, pad_h + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], seeds[4], 0, pad_w + 1, dtype=tf.int32)
        block = tf.pad(block, [[top, pad_h - top], [left, pad_w - left], [0, 0]])
        image = stretch_tf(block[..., :3], bounds[index][0], bounds[index][1])
        target = tf.cast(block[..., 3:], tf.float32)
        if scale_low != scale_high:
            image = tf.image.resize(image, [size, size], method="bilinear")
            target = tf.image.resize(target, [size, size], method="nearest")
        image = tf.ensure_shape(tf.reshape(image, [size, size, 3]), [size, size, 3])
        target = tf.reshape(target, [size, size, n_targets])
        image, target = augment_pair(image, target, seeds[5], policy)
        image.set_shape([size, size, 3])
        target.set_shape([size, size, n_targets])
        return image, target

    return crop


def pipeline_options(cpus: int | None):
    """Deterministic tf.data options; with `cpus`, a private pool of that many threads and no autotune."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    if cpus:
        options.threading.private_threadpool_size = int(cpus)
        options.threading.max_intra_op_parallelism = 1
        # Parallelism and prefetch are fixed, so autotune has nothing to tune. Its thread makes
        # freeing the iterator wait seconds, and with Ray's reuse_actors the next trial's reset joins
        # the stopped trial's thread, which frees this iterator; it also competes with training for
        # the trial's cores (BENCHMARKS.md, `orchestration` and `input_pipeline`).
        options.autotune.enabled = False
    return options


def make_train_dataset(prepared: PreparedDataset, ids: Sequence[str], config, cpus: int | None = None):
    """Infinite tf.data.Dataset of batches (image float32 [B,S,S,3], target float32 [B,S,S,C]).

    S = config.image_size, C = 2 if config.boundary_channel else 1 (semantic, boundary).
    Each pass over the data draws `config.crops_per_image` random crops per image in a
    fresh order; use `steps_per_epoch(len(ids), config)` as Keras' steps_per_epoch.
    `cpus` bounds the tf.data thread pool (default: TensorFlow's choice).
    """
    import tensorflow as tf

    ids = list(ids)
    if not ids:
        raise DataError("no training images: the training split is empty")
    crop = crop_sampler(prepared, ids, config)
    per_epoch = len(ids) * int(config.crops_per_image)
    order = (
        tf.data.Dataset.range(len(ids))
        .repeat(int(config.crops_per_image))
        .shuffle(per_epoch, seed=int(config.seed), reshuffle_each_iteration=True)
        .repeat()
    )
    seeds = tf.data.Dataset.random(seed=int(config.seed)).batch(2)
    dataset = (
        tf.data.Dataset.zip((order, seeds))
        .map(crop, num_parallel_calls=int(cpus) if cpus else tf.data.AUTOTUNE, deterministic=True)
        .batch(int(config.batch_size), drop_remainder=True)
        .prefetch(2)
    )
    return dataset.with_options(pipeline_options(cpus))


def val_arrays(prepared: PreparedDataset, ids: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(image float32 normalised HxWx3, labels uint16 HxW)] for full-image validation."""
    out = []
    for image_id in ids:
        image, labels = prepared.load(image_id)
        out.append((normalize_image(image), labels))
    return out
