"""The best trial's predictions on a few validation images: image, true and predicted contours.

The trial's best checkpoint predicts whole validation images of its own split (the
same images and scoring as during the search); each panel shows the image with the
true nucleus outlines in green and the predicted instance outlines in magenta, titled
with the image's foreground IoU and Kaggle AP.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from nuclei_search.data_pipeline.augment import normalize_image
from nuclei_search.errors import NucleiSearchError
from nuclei_search.models.inference import predict_images
from nuclei_search.results.plots import PlotUnavailable
from nuclei_search.results.trials import TrialRecord

log = logging.getLogger(__name__)

TRUE_COLOUR = (0, 255, 0)
PRED_COLOUR = (255, 0, 255)


def _outline(image: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int], width: int = 1) -> np.ndarray:
    import cv2
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(labels, mode="inner")
    if width > 1:
        edges = cv2.dilate(edges.astype(np.uint8), np.ones((width, width), np.uint8)).astype(bool) & (labels > 0)
    image = image.copy()
    image[edges] = colour
    return image


def _display_size(image: np.ndarray, labels: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize for display only: large images shrink (area-averaged), small ones grow by an
    integer factor (nearest) so that 1-pixel outlines stay thin; labels always nearest."""
    import cv2

    scale = max_side / max(image.shape[:2])
    if scale >= 2:
        scale = float(int(scale))
        interpolation = cv2.INTER_NEAREST
    elif scale < 1:
        interpolation = cv2.INTER_AREA
    else:
        return image, labels
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    resized = cv2.resize(image, size, interpolation=interpolation)
    return resized, cv2.resize(labels.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)


def prediction_panels(trial: TrialRecord, n_images: int = 4, max_side: int = 400) -> tuple[bytes, list[dict]]:
    """(PNG bytes of the figure, per-image scores) for up to `n_images` validation images."""
    from matplotlib.figure import Figure

    from nuclei_search.data_pipeline.loader import load_data
    from nuclei_search.models.evaluation import score_predictions
    from nuclei_search.models.postprocess import instances_from_prediction
    from nuclei_search.models.unet import load_unet, pad_multiple

    checkpoint = trial.best_checkpoint
    if checkpoint is None:
        raise PlotUnavailable(f"trial {trial.trial_id} has no checkpoint of its best epoch")
    config = trial.trial_config()
    try:
        prepared, _, val_ids = load_data(config)
    except NucleiSearchError as exc:  # data not available where the report is made
        raise PlotUnavailable(f"validation data {config.data!r} is not available here: {exc}") from None
    ids = val_ids[:n_images]
    if not ids:
        raise PlotUnavailable("the validation split is empty")
    model = load_unet(checkpoint / "model.keras", compile=False)
    raw = [prepared.load(i) for i in ids]
    probs = predict_images(model, [normalize_image(img) for img, _ in raw], multiple=pad_multiple(config))
    scores = score_predictions(probs, [lab for _, lab in raw], config.threshold, config.instance_method,
                               ids=ids).per_image

    fig = Figure(figsize=(3.2 * len(ids), 6.6), dpi=120)
    axes = fig.subplots(2, len(ids), squeeze=False)
    for k, ((image, labels), prob, score) in enumerate(zip(raw, probs, scores)):
        predicted = instances_from_prediction(prob, threshold=config.threshold, method=config.instance_method)
        shown, true_small = _display_size(image, labels, max_side)
        _, pred_small = _display_size(image, predicted, max_side)
        # truth drawn 2 px wide under the 1 px prediction, so both stay visible where they agree
        overlay = _outline(_outline(shown, true_small, TRUE_COLOUR, width=2), pred_small, PRED_COLOUR)
        axes[0, k].imshow(shown)
        axes[0, k].set_title(f"{ids[k][:18]}\n{image.shape[0]}×{image.shape[1]}", fontsize=8)
        axes[1, k].imshow(overlay, interpolation="nearest")
        axes[1, k].set_title(f"IoU {score['iou']:.3f}  AP {score.get('map', float('nan')):.3f}\n"
                             f"true {score.get('n_true', 0)}  predicted {score.get('n_pred', 0)}", fontsize=8)
        for ax in axes[:, k]:
            ax.set_axis_off()
    fig.suptitle(f"trial {trial.trial_id}, epoch {trial.best_epoch}: green = truth, magenta = prediction",
                 fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue(), scores
