"""Speed levers: mixed precision as a trial option, several train steps per call into
TensorFlow, inference through one frozen graph, validation where it is read."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nuclei_search.models.inference import GraphPredictor, predict_images
from nuclei_search.models.precision import cpu_has_bf16, dtype_policy, policy_name
from nuclei_search.models.train import compile_model, execution_steps, train, validation_epochs
from nuclei_search.models.unet import build_unet, load_unet
from nuclei_search.config import TrialConfig
from nuclei_search.errors import ConfigError

pytestmark = pytest.mark.slow  # trains, searches or starts Ray (README: the fast lane skips it)

TINY = dict(data="synthetic:12", image_size=32, batch_size=2, base_filters=4, backbone="mobilenetv2",
            decoder_depth=3, instance_method="cc", augment="flip")
# the tests of the training loop (steps, validation plan), not of the model: the plain encoder, no BatchNorm
PLAIN = {**TINY, "backbone": "none", "batch_norm": False}


def test_precision_resolves_per_device_and_is_validated():
    assert policy_name("float32") == "float32"
    assert policy_name("mixed", gpu=True) == "mixed_float16"
    assert policy_name("mixed", gpu=False) == ("mixed_bfloat16" if cpu_has_bf16() else "float32")
    with pytest.raises(ValueError, match="half"):
        policy_name("half")
    with pytest.raises(ConfigError, match="precision"):
        TrialConfig(precision="half").validate()


def test_dtype_policy_is_restored_even_when_building_fails():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with dtype_policy("mixed_float16"):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def test_mixed_trial_trains_saves_reloads_and_predicts_float32(tmp_path):
    result = train(TrialConfig(**TINY, epochs=2, precision="mixed"))
    model = result.model
    expected = policy_name("mixed")
    assert model.get_layer("decoder_stage0_conv1").dtype_policy.name == expected
    assert model.get_layer("mask").dtype_policy.name == "float32"
    assert all(np.isfinite(row["loss"]) for row in result.history)
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks into the next model built
    image = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    before = model.predict_on_batch(image)
    model.save(tmp_path / "model.keras")
    loaded = load_unet(tmp_path / "model.keras", compile=False)
    after = loaded.predict_on_batch(image)
    assert after.dtype == np.float32 and after.shape == (1, 64, 96, 1)
    np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    assert loaded.get_layer("decoder_stage0_conv1").dtype_policy.name == expected


def test_mixed_float16_for_a_gpu_gets_a_loss_scale_optimizer_and_trains():
    config = TrialConfig(**TINY, precision="mixed")
    model = build_unet(config, dtype_policy_name="mixed_float16")
    compile_model(model, config, 1e-3, decay_steps=10)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    y = (x[..., :1] > 0.5).astype(np.float32)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert model.predict_on_batch(x).dtype == np.float32


@pytest.mark.parametrize("steps, expected", [(1, 1), (5, 1), (15, 1), (16, 8), (34, 17), (37, 37), (42, 14)])
def test_execution_steps_divide_the_epoch(steps, expected):
    assert execution_steps(steps) == expected


def test_several_steps_per_execution_run_exactly_the_epochs_steps():
    # 10 training images, batch 2: 5 steps per epoch, run as one execution of 5
    config = TrialConfig(**PLAIN, epochs=2, validation_freq=2)
    result = train(config, steps_per_execution=5)
    steps = -(-result.n_train // config.batch_size)
    assert int(result.model.optimizer.iterations.numpy()) == 2 * steps  # Keras would round up to whole executions
    with pytest.raises(ValueError, match="divide"):
        train(config, steps_per_execution=steps + 1)


def test_graph_predictor_matches_keras_at_any_size_and_is_a_snapshot():
    config = TrialConfig(**TINY, boundary_channel=True)
    model = build_unet(config)
    rng = np.random.default_rng(2)
    images = [rng.random((40, 72, 3), dtype=np.float32), rng.random((8, 8, 3), dtype=np.float32)]
    predictor = GraphPredictor(model)
    for image in images:
        padded = np.pad(image, ((0, (-image.shape[0]) % 8), (0, (-image.shape[1]) % 8), (0, 0)), mode="reflect")
        keras_out = np.asarray(model.predict_on_batch(padded[None]))
        graph_out = predictor.predict_on_batch(padded[None])
        assert graph_out.dtype == np.float32 and graph_out.shape == keras_out.shape
        np.testing.assert_allclose(graph_out, keras_out, atol=1e-5)
    through = predict_images(predictor, images, multiple=8)
    assert [p.shape for p in through] == [(40, 72, 2), (8, 8, 2)]
    assert not GraphPredictor(model, freeze=False)._frozen and predictor._frozen
    # weights changed afterwards are not seen by the snapshot, and are by a new one
    model.get_layer("mask").set_weights([w * 0 for w in model.get_layer("mask").get_weights()])
    np.testing.assert_allclose(predict_images(predictor, images[:1], multiple=8)[0], through[0], atol=1e-6)
    assert np.allclose(predict_images(model, images[:1], multiple=8)[0], 0.5)  # sigmoid(0)


def test_precision_is_a_search_dimension():
    from nuclei_search.search.space import SearchSpace

    space = SearchSpace.from_text("params:\n  precision:\n    choice: [float32, mixed]\n")
    assert {space.resolve({"precision": p}).precision for p in ("float32", "mixed")} == {"float32", "mixed"}
    with pytest.raises(ConfigError, match="precision"):
        space.resolve({"precision": "float16"})


@pytest.mark.parametrize("epochs, freq, tail, milestones, expected", [
    (16, 2, 1.0, (), [2, 4, 6, 8, 10, 12, 14, 16]),  # the default: every validation_freq-th epoch (Keras)
    (7, 3, 1.0, (), [3, 6, 7]),  # and the last
    (16, 2, 0.25, (4, 8, 16), [4, 8, 14, 16]),  # the published exploration trial: ASHA's rungs + the tail
    (80, 2, 0.25, (), [8, 16, 24, 32, 40, 48, 56] + list(range(62, 81, 2))),  # a refit: sparse, then dense
    (5, 1, 0.4, (1, 9), [1, 4, 5]),  # a milestone beyond the schedule is ignored
])
def test_validation_epochs_are_dense_in_the_tail_sparse_before_and_at_every_milestone(epochs, freq, tail,
                                                                                       milestones, expected):
    config = TrialConfig(epochs=epochs, validation_freq=freq, validation_tail=tail)
    assert validation_epochs(config, milestones) == expected


@pytest.mark.parametrize("tail", [0.0, -0.5, 1.5])
def test_validation_tail_outside_0_1_is_refused(tail):
    with pytest.raises(ConfigError, match="validation_tail"):
        TrialConfig(validation_tail=tail).validate()


def test_train_validates_and_reports_only_the_planned_epochs():
    config = TrialConfig(**PLAIN, epochs=5, validation_freq=1, validation_tail=0.4)
    reported = []
    result = train(config, lambda epoch, row, model, state: reported.append(epoch), validation_milestones=(1,))
    assert reported == [1, 4, 5]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]  # every epoch trained and recorded
    assert [r["epoch"] for r in result.history if "val_iou" in r] == [1, 4, 5]
    assert all("validation_seconds" in r for r in result.history if "val_iou" in r)
    assert result.best["epoch"] in (1, 4, 5)
