"""tf.data training pipeline, normalisation and validation arrays."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from nuclei_search.data_pipeline.augment import POLICIES, normalize_image, normalize_image_tf
from nuclei_search.data_pipeline.loader import make_train_dataset, steps_per_epoch, val_arrays
from nuclei_search.data_pipeline.preprocess import prepare
from nuclei_search.config import TrialConfig

SIZE = 32


@pytest.fixture(scope="module")
def prepared(synthetic_folder, session_cache_dir):
    return prepare(synthetic_folder, cache_dir=session_cache_dir, workers=1)


def config(**changes):
    values = dict(image_size=SIZE, decoder_depth=3, batch_size=4, crops_per_image=1, seed=0)
    values.update(changes)
    return TrialConfig(**values).validate()


def take(dataset, n=2):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


@pytest.mark.parametrize("policy", POLICIES)
def test_shapes_ranges_and_determinism_per_policy(prepared, policy):
    cfg = config(augment=policy, boundary_channel=True)
    ids = prepared.ids[:6]
    first = take(make_train_dataset(prepared, ids, cfg, cpus=2))
    for x, y in first:
        assert x.shape == (4, SIZE, SIZE, 3) and x.dtype == np.float32
        assert y.shape == (4, SIZE, SIZE, 2) and y.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) <= {0.0, 1.0}
        assert (y[..., 1] <= y[..., 0]).all()  # contours lie on nuclei
    again = take(make_train_dataset(prepared, ids, cfg, cpus=1))  # other thread count, same data
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other = take(make_train_dataset(prepared, ids, cfg.replace(seed=1), cpus=2))
    assert not np.array_equal(first[0][0], other[0][0])


def test_a_ray_trial_pipeline_has_fixed_threads_and_no_autotune_thread(prepared):
    """With the trial's CPUs known (a Ray trial), parallelism is fixed and autotune is off: its
    model thread made freeing the iterator wait seconds, which idled a reused worker's slot."""
    ids = prepared.ids[:6]
    pinned = make_train_dataset(prepared, ids, config(), cpus=1).options()
    assert pinned.threading.private_threadpool_size == 1 and pinned.threading.max_intra_op_parallelism == 1
    assert pinned.autotune.enabled is False
    free = make_train_dataset(prepared, ids, config()).options()  # no CPU count: tf.data tunes itself
    assert free.autotune.enabled is not False and free.threading.private_threadpool_size is None


def test_semantic_only_and_epochs_reshuffle(prepared):
    cfg = config(augment="none", boundary_channel=False, crops_per_image=2)
    ids = prepared.ids[:4]
    steps = steps_per_epoch(len(ids), cfg)
    assert steps == 2
    batches = take(make_train_dataset(prepared, ids, cfg), 3 * steps)  # infinite: spans epochs
    assert all(y.shape == (4, SIZE, SIZE, 1) for _, y in batches)
    assert any(y.max() == 1.0 for _, y in batches)
    assert steps_per_epoch(1, config(batch_size=8)) == 1


def write_sample(root, image_id, image_bgr, masks):
    (root / image_id / "images").mkdir(parents=True)
    (root / image_id / "masks").mkdir()
    cv2.imwrite(str(root / image_id / "images" / f"{image_id}.png"), image_bgr)
    for k, mask in enumerate(masks):
        cv2.imwrite(str(root / image_id / "masks" / f"m{k}.png"), mask.astype(np.uint8) * 255)


def test_wide_and_small_images_are_cropped_never_squashed(tmp_path):
    root = tmp_path / "data"
    # 100x300: vertical nucleus stripes 5 px wide every 10 px
    stripes = [np.zeros((100, 300), bool) for _ in range(30)]
    for k, mask in enumerate(stripes):
        mask[:, 10 * k: 10 * k + 5] = True
    image = np.where(np.any(stripes, axis=0), 200, 20).astype(np.uint8)
    write_sample(root, "wide", image, stripes)
    # 20x24, smaller than the crop: zero-padded
    small = np.zeros((20, 24), bool)
    small[5:15, 5:15] = True
    write_sample(root, "small", np.where(small, 220, 30).astype(np.uint8), [small])
    prepared = prepare(root, cache_dir=tmp_path / "cache", workers=1)
    cfg = config(image_size=64, augment="none", batch_size=1)
    x, y = next(iter(make_train_dataset(prepared, ["wide"], cfg)))
    assert x.shape == (1, 64, 64, 3)
    row = y.numpy()[0, 10, :, 0]
    runs = np.diff(np.flatnonzero(np.diff(row) != 0))
    assert set(runs.tolist()) == {5}  # 5 px stripes kept: cropped, not resized
    x, y = next(iter(make_train_dataset(prepared, ["small"], cfg)))
    assert y.numpy().sum() == 100  # the whole 10x10 nucleus, nothing scaled
    assert (x.numpy() > 0).any(axis=-1).sum() <= 20 * 24  # the rest is zero padding


def test_normalize_numpy_and_tf_agree():
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        rng.integers(10, 40, (64, 64, 3), dtype=np.uint8),
        np.full((8, 8, 3), 77, np.uint8),  # constant image: no division by zero
    ]
    for image in images:
        expected = normalize_image(image)
        assert expected.dtype == np.float32 and expected.shape == image.shape
        assert expected.min() >= 0.0 and expected.max() <= 1.0
        np.testing.assert_array_equal(normalize_image_tf(tf.constant(image)).numpy(), expected)
    stretched = normalize_image(images[1])
    assert stretched.max() == 1.0 and stretched.min() == 0.0


def test_val_arrays(prepared):
    arrays = val_arrays(prepared, prepared.ids[:3])
    assert len(arrays) == 3
    for image_id, (image, labels) in zip(prepared.ids, arrays):
        assert image.dtype == np.float32 and image.shape == (*prepared.shapes[image_id], 3)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert labels.dtype == np.uint16 and labels.shape == prepared.shapes[image_id]
        np.testing.assert_array_equal(image, normalize_image(prepared.load(image_id)[0]))


def test_stain_policy_recolours_and_inverts_but_keeps_the_target():
    """`stain`: a grey image comes out tinted (channels differ) in some crops and inverted
    (dark nuclei on light) in others; `light` never changes the colour balance; targets move
    only with the flips/rotations both policies share."""
    from nuclei_search.data_pipeline.augment import augment_pair

    yy, xx = np.mgrid[:SIZE, :SIZE]
    nucleus = ((yy - 16) ** 2 + (xx - 16) ** 2 < 36).astype(np.float32)
    grey = np.repeat((0.1 + 0.8 * nucleus)[..., None], 3, axis=-1)  # bright nucleus on dark ground
    target = nucleus[..., None]
    tinted = inverted = 0
    for k in range(40):
        seed = tf.constant([k, 7], tf.int64)
        image, out = (t.numpy() for t in augment_pair(tf.constant(grey), tf.constant(target), seed, "stain"))
        light, out_light = (t.numpy() for t in augment_pair(tf.constant(grey), tf.constant(target), seed, "light"))
        np.testing.assert_array_equal(out, out_light)
        assert np.ptp(light, axis=-1).max() < 1e-6  # light keeps grey grey
        assert image.min() >= 0.0 and image.max() <= 1.0
        tinted += np.ptp(image, axis=-1).max() > 0.05
        mask = out[..., 0] > 0.5
        inverted += image[mask].mean() < image[~mask].mean()
    assert tinted >= 20 and 3 <= inverted <= 25, (tinted, inverted)
