"""Peak memory of `nuclei-search predict` on huge images, before and after streamed tiling.

Each run is `nuclei-search predict MODEL image.png --out DIR` in a fresh process; its peak
resident memory is the kernel's (`os.wait4`'s ru_maxrss). The model is the published
space's architecture (MobileNetV2 encoder, decoder depth 4; untrained: memory does not
depend on the weights) written as an export folder. The images are synthetic nuclei
tiled up to 4000×4000 (16 Mpx) and 8000×8000 (64 Mpx); both are tiled automatically
(above 2048×2048). `before` is `BEFORE_REV` (the whole image normalised to float32,
padded, and blended in full-size float32 sums) in a temporary git worktree, `after`
this checkout (tiles cut and normalised one at a time from the uint8 image, blended one
row of tiles at a time into a float16 map). The masks of both must agree.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import result, source_trees

NAME = "predict_memory"
MEASURE = "peak memory of `nuclei-search predict` on a 64-Mpx (8000×8000) image, before and after streamed tiling"
TARGET = "<= 1.5 GiB (1536 MiB) at 64 Mpx"
BEFORE_REV = "2a2dc37"
LIMIT_MB = 1536

log = logging.getLogger(__name__)


def write_export(out: Path) -> None:
    """An export folder of an untrained MobileNetV2 U-Net (depth 4), as `predict` reads it."""
    from nuclei_search.models.unet import build_unet
    from nuclei_search.config import TrialConfig
    from nuclei_search.results.export import input_spec, output_spec, save_model_files, write_card

    config = TrialConfig(backbone="mobilenetv2", decoder_depth=4, encoder_weights="none")
    out.mkdir(parents=True)
    save_model_files(build_unet(config), out, saved_model=False)
    write_card(out, {"config": config.to_dict(), "input": input_spec(config), "output": output_spec(config)})


def write_image(path: Path, side: int, scratch: Path) -> None:
    """A side×side RGB PNG: one synthetic nuclei image repeated."""
    import cv2

    from nuclei_search.data_pipeline.synthetic import generate_dataset

    root = generate_dataset(scratch / f"synthetic-{side}", n_images=1, seed=0)
    tile = cv2.imread(str(next(root.glob("*/images/*.png"))), cv2.IMREAD_COLOR)
    reps = -(-side // min(tile.shape[:2]))
    assert cv2.imwrite(str(path), np.tile(tile, (reps, reps, 1))[:side, :side])


def peak_rss(tree: Path, model: Path, image: Path, out: Path) -> tuple[float, float]:
    """(peak resident MiB, seconds) of one `predict` in a fresh process against source `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nuclei_search", "predict", str(model), str(image),
                             "--out", str(out), "--quiet"], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"predict in {tree} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def run(quick: bool = False) -> dict:
    import cv2

    sides = (1024, 2400) if quick else (4000, 8000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict_memory_") as tmp, \
            source_trees({"before": BEFORE_REV, "after": None}) as trees:
        scratch = Path(tmp)
        write_export(scratch / "model")
        for side in sides:
            image = scratch / f"image-{side}.png"
            write_image(image, side, scratch)
            masks = {}
            for setting, tree in trees.items():
                out = scratch / f"out-{setting}-{side}"
                mb, seconds = peak_rss(tree, scratch / "model", image, out)
                masks[setting] = cv2.imread(str(next(out.glob("*_mask.png"))), cv2.IMREAD_GRAYSCALE) > 0
                rows.append({"setting": setting, "side": side, "megapixels": side * side / 1e6,
                             "peak_mb": mb, "seconds": seconds})
                log.info("%s %d×%d: peak %.0f MiB, %.0f s", setting, side, side, mb, seconds)
            agreement = float(np.mean(masks["before"] == masks["after"]))
            for row in rows[-2:]:
                row["mask_agreement"] = agreement
            image.unlink()
    peak = {(r["setting"], r["side"]): r["peak_mb"] for r in rows}
    largest = sides[-1]
    after = peak[("after", largest)]
    return result(NAME, MEASURE, TARGET, after, "MiB", after <= LIMIT_MB, rows=rows,
                  before_mb=peak[("before", largest)], ratio=peak[("before", largest)] / after,
                  before_rev=BEFORE_REV, limit_mb=LIMIT_MB)
