"""Per-image normalisation and the named augmentation policies.

Normalisation (the one every consumer uses — training, validation, prediction):
each image is stretched between its own 0.5th and 99.8th intensity percentiles
(over all pixels and channels, so colours keep their balance) and clipped to [0, 1].
Percentiles come from the 256-bin histogram of the uint8 image, identically in the
numpy (`normalize_image`) and TensorFlow (`normalize_image_tf`) versions.

Augmentation policies (`config.augment`), applied identically to image and target:

* ``none``   — random crop only;
* ``flip``   — + horizontal/vertical flips and 90° rotations;
* ``light``  — flip + brightness (±0.1) and contrast (×0.8-1.25) jitter, image only;
* ``strong`` — light + scale 0.7-1.4 (crop S·s, resize to S: bilinear image, nearest
  target) + mild gaussian noise (σ ≤ 0.03), image only;
* ``stain``  — light + stain/colour jitter for images unlike most of stage1_train
  (colour histology, brightfield): inversion (p 0.3: bright-on-dark fluorescence
  becomes dark-on-light), a per-channel tint (gain ×0.7-1.3, offset ±0.1), hue
  (±0.08) and saturation (×0.5-1.5) jitter, grayscale (p 0.2), image only;
* ``strong_stain`` — strong + the stain jitter.

Targets stay binary {0, 1}. TensorFlow is imported only by the tf functions.
"""

from __future__ import annotations

import numpy as np


LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.8
POLICIES = ("none", "flip", "light", "strong", "stain", "strong_stain")
SCALE_RANGE = (0.7, 1.4)
BRIGHTNESS = 0.1
CONTRAST = (0.8, 1.25)
NOISE_SIGMA = 0.03
INVERT_P = 0.3
GRAYSCALE_P = 0.2
TINT_GAIN = (0.7, 1.3)
TINT_OFFSET = 0.1
HUE_DELTA = 0.08
SATURATION = (0.5, 1.5)


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; expected one of {', '.join(POLICIES)}")


# --------------------------------------------------------------------------- numpy
def percentile_bounds(image: np.ndarray) -> tuple[int, int]:
    """(low, high) gray levels at the 0.5 / 99.8 percentiles of a uint8 image."""
    if image.dtype != np.uint8:
        raise TypeError(f"normalisation expects a uint8 image, got {image.dtype}")
    flat = image.reshape(-1)
    counts = np.zeros(256, np.int64)
    for start in range(0, flat.size, 1 << 22):  # bincount widens to int64: a chunk at a time
        counts += np.bincount(flat[start : start + (1 << 22)], minlength=256)
    cdf = np.cumsum(counts.astype(np.float64))
    total = cdf[-1]
    low = int(np.searchsorted(cdf, LOW_PERCENTILE / 100.0 * total, side="left"))
    high = int(np.searchsorted(cdf, HIGH_PERCENTILE / 100.0 * total, side="left"))
    return low, high


def stretch(image: np.ndarray, low: int, high: int) -> np.ndarray:
    """float32 (image - low) / max(high - low, 1), clipped to [0, 1]."""
    den = np.float32(max(high - low, 1))
    return np.clip((image.astype(np.float32) - np.float32(low)) / den, 0.0, 1.0).astype(np.float32)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 → float32 HxWx3 in [0, 1] by the per-image percentile stretch."""
    low, high = percentile_bounds(image)
    return stretch(image, low, high)


# --------------------------------------------------------------------------- tensorflow
def stretch_tf(image, low, high):
    import tensorflow as tf

    low = tf.cast(low, tf.float32)
    den = tf.cast(tf.maximum(tf.cast(high, tf.int32) - tf.cast(low, tf.int32), 1), tf.float32)
    return tf.clip_by_value((tf.cast(image, tf.float32) - low) / den, 0.0, 1.0)


def normalize_image_tf(image):
    """TensorFlow twin of `normalize_image` (same histogram percentiles, same maths)."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    flat = tf.reshape(tf.cast(image, tf.int32), [-1])
    cdf = tf.cumsum(tf.math.bincount(flat, minlength=256, maxlength=256, dtype=tf.float64))
    total = cdf[-1]
    bounds = tf.stack([LOW_PERCENTILE / 100.0 * total, HIGH_PERCENTILE / 100.0 * total])
    low_high = tf.searchsorted(cdf, bounds, side="left", out_type=tf.int32)
    return stretch_tf(image, low_high[0], low_high[1])


def crop_scale_range(policy: str) -> tuple[float, float]:
    """Range of the crop side relative to the output size (1, 1) unless `strong`."""
    _check_policy(policy)
    return SCALE_RANGE if policy in ("strong", "strong_stain") else (1.0, 1.0)


def augment_pair(image, target, seed, policy: str):
    """Flip/rotate image and target together, then jitter the image only (by policy).

    `image` float32 SxSx3 in [0, 1], `target` float32 SxSxC in {0, 1}, `seed` a
    shape-[2] integer tensor for the stateless random ops.
    """
    import tensorflow as tf

    _check_policy(policy)
    if policy == "none":
        return image, target
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    channels = image.shape[-1]
    both = tf.concat([image, target], axis=-1)
    both = tf.image.stateless_random_flip_left_right(both, seeds[0])
    both = tf.image.stateless_random_flip_up_down(both, seeds[1])
    k = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=4, dtype=tf.int32)
    both = tf.image.rot90(both, k)
    image, target = both[..., :channels], both[..., channels:]
    if policy in ("stain", "strong_stain"):
        image = stain_jitter(image, tf.random.experimental.stateless_fold_in(seeds[5], 1))
    if policy != "flip":
        delta = tf.random.stateless_uniform([], seeds[3], -BRIGHTNESS, BRIGHTNESS)
        factor = tf.exp(tf.random.stateless_uniform([], seeds[4], float(np.log(CONTRAST[0])), float(np.log(CONTRAST[1]))))
        image = tf.clip_by_value((image - 0.5) * factor + 0.5 + delta, 0.0, 1.0)
    if policy in ("strong", "strong_stain"):
        noise_seeds = tf.random.experimental.stateless_split(seeds[5], num=2)
        sigma = tf.random.stateless_uniform([], noise_seeds[0], 0.0, NOISE_SIGMA)
        image = tf.clip_by_value(image + sigma * tf.random.stateless_normal(tf.shape(image), noise_seeds[1]), 0.0, 1.0)
    return image, target


def stain_jitter(image, seed):
    """Colour/stain jitter of a float32 SxSx3 image in [0, 1] (the `stain` policies)."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    invert = tf.random.stateless_uniform([], seeds[0]) < INVERT_P
    image = tf.where(invert, 1.0 - image, image)
    gain = tf.random.stateless_uniform([1, 1, 3], seeds[1], TINT_GAIN[0], TINT_GAIN[1])
    offset = tf.random.stateless_uniform([1, 1, 3], seeds[2], -TINT_OFFSET, TINT_OFFSET)
    image = tf.clip_by_value(image * gain + offset, 0.0, 1.0)
    image = tf.image.stateless_random_hue(image, HUE_DELTA, seeds[3])
    image = tf.clip_by_value(tf.image.stateless_random_saturation(image, SATURATION[0], SATURATION[1], seeds[4]),
                             0.0, 1.0)
    gray = tf.random.stateless_uniform([], seeds[5]) < GRAYSCALE_P
    return tf.where(gray, tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)), image)
