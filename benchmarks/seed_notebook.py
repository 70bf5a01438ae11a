"""The seed notebook's fixed recipe, trained on our split and scored with our metric.

The classic Kaggle DSB2018 "Keras U-Net starter": every image squashed (aspect ratio
ignored) to 128×128 RGB, the masks of all nuclei merged and squashed the same way (a
pixel touched by any nucleus is nucleus, as the notebook's cast to bool made it;
skimage's bilinear `resize` without anti-aliasing, as in 2018: today's default
anti-aliasing would turn 13 % foreground into 24 % under that cast), a
plain U-Net (x/255; 16-32-64-128-256 filters, 3×3 elu he_normal convolutions with
dropout 0.1/0.1/0.2/0.2/0.3 between the two of each block; 2×2 transposed-convolution
up-sampling), Adam, binary cross-entropy, batch 16, 20 epochs. It trains on all of our
training ids (the notebook's own 10 % Keras validation split and checkpointing are left
out) and is scored the way the notebook made its submission: predict at 128×128, resize
the probability map back to the native size (bilinear), threshold 0.5; then the same
`models.evaluation.score_predictions` as our models, on the same validation ids.

It is a baseline, not a target: `met` only says the run produced a finite figure.
`NUCLEI_SEARCH_SEED_BUDGET_S=SECONDS` (or `run(budget_seconds=...)`) trains epoch by
epoch instead, for as many epochs as fit in that many seconds of training, so the recipe
gets the same budget as the search's winner; `NUCLEI_SEARCH_SEED_EPOCHS=N` trains N epochs
instead of 20 (the same number of 128×128 samples and steps as a search trial of N epochs).
Pixel accuracy, the notebook's metric, is reported next to that of an all-background
prediction to show how little it says.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from benchmarks import common

NAME = "seed_notebook"
MEASURE = "validation foreground IoU of the seed notebook's fixed recipe (128×128 squash, plain U-Net, BCE)"
TARGET = "reference: ~0.80 val IoU (issue 3)"
SIZE = 128
BATCH_SIZE = 16
BLOCKS = ((16, 0.1), (32, 0.1), (64, 0.2), (128, 0.2), (256, 0.3))  # (filters, dropout), shallow to deep
BUDGET_ENV = "NUCLEI_SEARCH_SEED_BUDGET_S"
EPOCHS_ENV = "NUCLEI_SEARCH_SEED_EPOCHS"

log = logging.getLogger(__name__)


def build_seed_unet():
    """The notebook's U-Net, with Rescaling instead of its Lambda (loadable in safe mode)."""
    import keras
    from keras import layers

    def conv(filters, name):
        return layers.Conv2D(filters, 3, activation="elu", kernel_initializer="he_normal", padding="same", name=name)

    def block(x, filters, dropout, name):
        x = conv(filters, f"{name}_conv1")(x)
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
        return conv(filters, f"{name}_conv2")(x)

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    skips = []
    for i, (filters, dropout) in enumerate(BLOCKS[:-1], start=1):
        x = block(x, filters, dropout, f"encoder_stage{i}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"encoder_stage{i}_pool")(x)
    x = block(x, *BLOCKS[-1], "bottleneck")
    for i, ((filters, dropout), skip) in enumerate(zip(BLOCKS[-2::-1], skips[::-1]), start=1):
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"decoder_stage{i}_up")(x)
        x = layers.Concatenate(name=f"decoder_stage{i}_concat")([x, skip])
        x = block(x, filters, dropout, f"decoder_stage{i}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name="seed_notebook_unet")


def resize(array: np.ndarray, shape) -> np.ndarray:
    """The notebook's skimage resize (bilinear, range kept; no anti-aliasing, as in 2018)."""
    from skimage.transform import resize as sk_resize

    return sk_resize(array, shape, mode="constant", preserve_range=True, anti_aliasing=False)


def squash(prepared, ids) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8) and merged masks (float 0/1) of `ids`, all resized to SIZE×SIZE."""

    x = np.zeros((len(ids), SIZE, SIZE, 3), np.uint8)
    y = np.zeros((len(ids), SIZE, SIZE, 1), np.float32)
    for n, image_id in enumerate(ids):
        image, labels = prepared.load(image_id)
        x[n] = resize(image, (SIZE, SIZE))
        mask = resize((labels > 0).astype(np.uint8) * 255, (SIZE, SIZE))
        y[n, ..., 0] = mask > 0
    return x, y


def fit(model, x, y, epochs: int, budget_seconds: float | None) -> tuple[list[float], list[dict]]:
    """Train `epochs` epochs, or with a budget as many as fit in it (at least one)."""
    epoch_seconds: list[float] = []
    history: list[dict] = []
    with common.timer() as elapsed:
        while True:
            if budget_seconds is None and len(epoch_seconds) >= epochs:
                break
            if budget_seconds is not None and epoch_seconds and elapsed() + epoch_seconds[-1] > budget_seconds:
                break  # the next epoch would overrun the budget
            start = elapsed()
            logs = model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=True, verbose=0).history
            epoch_seconds.append(elapsed() - start)
            history.append({k: float(v[-1]) for k, v in logs.items()})
            log.info("epoch %d (%.1f s): %s", len(epoch_seconds), epoch_seconds[-1], history[-1])
    return epoch_seconds, history


def _env_number(name: str, kind, what: str):
    try:
        return kind(os.environ[name])
    except ValueError:
        raise SystemExit(f"error: {name} must be {what} (got {os.environ[name]!r})") from None


def run(quick: bool, epochs: int = 20, budget_seconds: float | None = None) -> dict:
    import keras

    from nuclei_search.models.evaluation import score_predictions
    from nuclei_search.models.runtime import configure_tensorflow
    from nuclei_search.data_pipeline.loader import load_data
    from nuclei_search.config import TrialConfig

    if budget_seconds is None and not quick and os.environ.get(BUDGET_ENV):
        budget_seconds = _env_number(BUDGET_ENV, float, "a number of seconds")
    if not quick and os.environ.get(EPOCHS_ENV):
        epochs = _env_number(EPOCHS_ENV, int, "a whole number of epochs")
    if quick:
        epochs = 1
    configure_tensorflow(cpus=os.cpu_count(), seed=0)
    prepared, train_ids, val_ids = load_data(TrialConfig(data=str(common.dsb2018_zip())))
    if quick:
        train_ids, val_ids = train_ids[:8], val_ids[:4]

    with common.timer() as prep_seconds:
        x_train, y_train = squash(prepared, train_ids)
    model = build_seed_unet()
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy", metrics=["accuracy"])
    epoch_seconds, history = fit(model, x_train, y_train, epochs, budget_seconds)

    with common.timer() as predict_seconds:
        val = prepared.load_many(val_ids)
        x_val = np.stack([resize(image, (SIZE, SIZE)).astype(np.uint8) for image, _ in val])
        small = model.predict(x_val, batch_size=BATCH_SIZE, verbose=0)
        probs = [resize(p[..., 0], lab.shape).astype(np.float32)[..., None] for p, (_, lab) in zip(small, val)]
    labels = [lab for _, lab in val]
    scores = score_predictions(probs, labels, threshold=0.5, instance_method="watershed", ids=val_ids,
                               types=[prepared.types.get(i, "unknown") for i in val_ids])
    n_pixels = sum(lab.size for lab in labels)
    correct = sum(int(np.count_nonzero((p[..., 0] > 0.5) == (lab > 0))) for p, lab in zip(probs, labels))
    background = sum(int(np.count_nonzero(lab == 0)) for lab in labels)

    value = scores.iou
    return common.result(
        NAME, MEASURE, TARGET, value, "IoU", met=math.isfinite(value),
        val_iou=scores.iou, val_iou_per_image=scores.iou_per_image, val_dice=scores.dice, val_map=scores.map,
        by_type=scores.by_type, val_pixel_accuracy=correct / n_pixels, all_background_pixel_accuracy=background / n_pixels,
        epochs=len(epoch_seconds), budget_seconds=budget_seconds, train_seconds=round(sum(epoch_seconds), 2),
        epoch_seconds=[round(s, 2) for s in epoch_seconds], final_train=history[-1],
        squash_seconds=round(prep_seconds(), 2), predict_and_resize_seconds=round(predict_seconds(), 2),
        n_train=len(train_ids), n_val=len(val_ids), params=model.count_params(),
        recipe={"input": f"{SIZE}x{SIZE}x3 squashed", "blocks": BLOCKS, "optimizer": "adam", "loss": "bce",
                "batch_size": BATCH_SIZE, "threshold": 0.5, "resize": "skimage bilinear, no anti-aliasing",
                "scored_at": "native size (bilinear up-sampling)"},
        split={"val_fraction": 0.2, "split_seed": 0},
    )
