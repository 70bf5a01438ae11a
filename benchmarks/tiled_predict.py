"""Tiled prediction of a 1040×1388 image vs one forward pass over the same pixels.

The largest DSB2018 images are 1040×1388. Tiling bounds memory on any image size; its
cost is the pixels predicted twice in tile overlaps plus per-batch overhead. Both
paths run the same MobileNetV2 U-Net (untrained weights: speed does not depend on
them) over the same image, alternating, best of `repeats`. Agreement of the two
probability maps is reported too (tiles must not change the answer).
"""

from __future__ import annotations

import logging

import numpy as np

from benchmarks.common import result, timer

NAME = "tiled_predict"
MEASURE = "tiled predict (tile 512) on 1040×1388 vs one forward pass over the same pixels"
TARGET = "overhead <= 25 %"

log = logging.getLogger(__name__)


def run(quick: bool = False, tile: int = 512) -> dict:
    from nuclei_search.models.inference import predict_images, predict_tiled
    from nuclei_search.models.runtime import configure_tensorflow
    from nuclei_search.models.unet import build_unet, pad_multiple
    from nuclei_search.config import TrialConfig

    configure_tensorflow(seed=0)
    config = TrialConfig(backbone="mobilenetv2", decoder_depth=4)
    model = build_unet(config)
    multiple = pad_multiple(config)
    shape = (272, 352) if quick else (1040, 1388)
    tile = 128 if quick else tile
    image = np.random.default_rng(0).random((*shape, 3), dtype=np.float32)
    whole = predict_images(model, [image], multiple=multiple)[0]  # warm-up (traces the shape)
    tiled = predict_tiled(model, image, tile=tile, multiple=multiple)
    best_whole = best_tiled = float("inf")
    for _ in range(2 if quick else 5):
        with timer() as t:
            predict_images(model, [image], multiple=multiple)
        best_whole = min(best_whole, t())
        with timer() as t:
            predict_tiled(model, image, tile=tile, multiple=multiple)
        best_tiled = min(best_tiled, t())
    overhead = best_tiled / best_whole - 1.0
    agree = float(np.mean((whole[..., 0] > 0.5) == (tiled[..., 0] > 0.5)))
    log.info("whole %.3f s, tiled %.3f s: overhead %.1f %%", best_whole, best_tiled, 100 * overhead)
    return result(
        NAME, MEASURE, TARGET, 100 * overhead, "%", overhead <= 0.25,
        image=list(shape), tile=tile, whole_seconds=best_whole, tiled_seconds=best_tiled,
        mean_abs_difference=float(np.abs(whole - tiled).mean()), mask_agreement=agree,
    )
