"""Predict with an exported model: masks, instance label maps and a Kaggle submission.

`Predictor.load(model_dir)` reads an export folder (`model.keras` + `model_card.json`)
and predicts whole images of any size: each is normalised as in training, padded to
the network's stride and cropped back, or — when large — predicted in overlapping
tiles blended smoothly (models.inference); images are never resized. Test-time
augmentation averages the 8 flips/rotations, each exactly inverted; it is on when the
card says it was chosen on validation, unless the caller says otherwise.

`collect_inputs` turns image files, folders of images, Kaggle-layout folders and zips
(e.g. stage1_test.zip, images only) into a list of `InputImage`; `predict_to_folder`
writes `<id>_mask.png` (0/255), optionally `<id>_instances.png` (uint16 labels) and a
submission CSV (`ImageId,EncodedPixels`, one row per instance, one empty row for an
image without nuclei). `evaluate_model_dir` scores an export on labelled data.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from nuclei_search.config import TrialConfig
from nuclei_search.data_pipeline.augment import normalize_image, percentile_bounds, stretch
from nuclei_search.errors import ConfigError, DataError
from nuclei_search.models.inference import (
    TTA_TRANSFORMS,
    GraphPredictor,
    predict_images,
    predict_images_tta,
    predict_tiled,
    tta_forward,
    tta_inverse,
)
from nuclei_search.outputs import check_output_dir
from nuclei_search.results.export import load_exported_model, load_model_card
from nuclei_search.results.rle import submission_rows

if TYPE_CHECKING:
    from nuclei_search.models.postprocess import Postprocess

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Images with more pixels than this are predicted in tiles unless a tile size is given.
AUTO_TILE_PIXELS = 2048 * 2048
AUTO_TILE = 512  # activations of one tile ~160 MB (benchmarks/predict_memory.py)
MASK_SUFFIX = "_mask.png"
INSTANCES_SUFFIX = "_instances.png"


# --------------------------------------------------------------------------- model
@dataclass
class Predictor:
    """An exported model and the settings its card prescribes."""

    model: object
    card: dict
    config: TrialConfig
    model_dir: Path

    @classmethod
    def load(cls, model_dir: str | Path) -> "Predictor":
        card = load_model_card(model_dir)
        config = TrialConfig.from_dict(card["config"])

        model = GraphPredictor(load_exported_model(model_dir))  # traced once, reused for every image
        return cls(model=model, card=card, config=config, model_dir=Path(model_dir))

    @property
    def multiple(self) -> int:
        return int(self.card.get("input", {}).get("stride_multiple") or 2 ** int(self.config.decoder_depth))

    @property
    def threshold(self) -> float:
        return self.postprocess().threshold

    def postprocess(self, **overrides) -> "Postprocess":
        """The card's postprocessing (chosen on validation at export), with non-None `overrides`
        (threshold, min_size, h, boundary_threshold, tta) from the command line winning."""
        from nuclei_search.models.postprocess import Postprocess

        section = self.card.get("postprocess") or {"threshold": self.config.threshold}
        return Postprocess.from_dict(section, **overrides)

    @property
    def instance_method(self) -> str:
        return self.config.instance_method

    def check_tile(self, tile: int | None) -> int | None:
        if tile is None:
            return None
        if tile < self.multiple or tile % self.multiple:
            raise ConfigError(f"--tile {tile} must be a positive multiple of the model's stride {self.multiple}")
        return int(tile)

    def tile_for(self, shape: tuple[int, int], tile: int | None) -> int | None:
        """The tile size to use for an image (None: whole image, padded)."""
        if tile is not None:
            return tile
        if shape[0] * shape[1] > AUTO_TILE_PIXELS:
            return AUTO_TILE - AUTO_TILE % self.multiple
        return None

    @property
    def tta(self) -> bool:
        """Whether the card's validation choice includes test-time augmentation."""
        return self.postprocess().tta

    def predict(self, image: np.ndarray, *, tta: bool | None = None, tile: int | None = None) -> np.ndarray:
        """HxWxC probabilities for a uint8 HxWx3 image (C: nucleus [, boundary]): float32, or
        float16 for an image predicted in tiles (normalised tile by tile, to bound memory).
        `tta` None: the card's choice."""

        tta = self.tta if tta is None else tta
        tile = self.tile_for(image.shape[:2], self.check_tile(tile))
        if tile is None or max(image.shape[:2]) <= tile:
            predict = predict_images_tta if tta else predict_images
            return predict(self.model, [normalize_image(image)], multiple=self.multiple)[0]
        low, high = percentile_bounds(image)

        def tiled(view: np.ndarray) -> np.ndarray:
            return predict_tiled(self.model, view, tile, self.multiple, dtype=np.float16,
                                 prepare=lambda cut: stretch(cut, low, high))

        if not tta:
            return tiled(image)
        total = None
        for k, flip in TTA_TRANSFORMS:  # one transformed view of the uint8 image at a time
            pred = tta_inverse(tiled(tta_forward(image, k, flip)), k, flip)
            total = pred.astype(np.float32) if total is None else np.add(total, pred, out=total)
        return (total / len(TTA_TRANSFORMS)).astype(np.float16)

    def instances(self, probs: np.ndarray, post: "Postprocess | None" = None) -> np.ndarray:
        from nuclei_search.models.postprocess import instances_from_prediction

        post = post or self.postprocess()
        return instances_from_prediction(probs, threshold=post.threshold, method=self.instance_method,
                                         **post.instance_kwargs())


# --------------------------------------------------------------------------- inputs
@dataclass
class InputImage:
    """One image to predict: its id, where it comes from, and how to read it (uint8 RGB)."""

    image_id: str
    name: str  # for messages
    read: Callable[[], np.ndarray] = field(repr=False)


def _file_reader(path: Path) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        from nuclei_search.data_pipeline.images import decode_image

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
        return decode_image(data, str(path))
    return read


def _zip_reader(path: Path, entry: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        from nuclei_search.data_pipeline.images import decode_image
        from nuclei_search.data_pipeline.sources import read_zip_entry

        with zipfile.ZipFile(path) as zf:
            return decode_image(read_zip_entry(zf, entry, f"{path}:{entry}"), f"{path}:{entry}")
    return read


def _source_reader(source, image_id: str) -> Callable[[], np.ndarray]:
    return lambda: source.read_image(image_id)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _from_kaggle_layout(path: Path) -> list[InputImage] | None:
    """The images of a Kaggle-layout folder or zip, or None if `path` is not one."""
    from nuclei_search.data_pipeline.sources import open_source

    try:
        source = open_source(str(path), require_masks=False)
    except DataError as exc:
        if "no Kaggle-layout images" in str(exc):
            return None
        raise
    return [InputImage(i, source.image_path(i), _source_reader(source, i)) for i in source.ids]


def _one_input(path: Path) -> list[InputImage]:
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    if path.is_dir():
        found = _from_kaggle_layout(path)
        if found is not None:
            return found
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_image_name(p.name))
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}, and it is not in "
                            "Kaggle layout (<id>/images/<id>.png)")
        return [InputImage(p.stem, str(p), _file_reader(p)) for p in files]
    if zipfile.is_zipfile(path):
        found = _from_kaggle_layout(path)
        if found is not None:
            return found
        from nuclei_search.data_pipeline.sources import open_zip

        with open_zip(path) as zf:  # refuses zip-slip names
            entries = sorted(n for n in zf.namelist() if not n.endswith("/") and _is_image_name(n))
        if not entries:
            raise DataError(f"no images found in zip {path}")
        return [InputImage(PurePosixPath(e).stem, f"{path}:{e}", _zip_reader(path, e)) for e in entries]
    if path.suffix.lower() == ".zip":
        raise DataError(f"{path} is not a zip file")
    if not _is_image_name(path.name):
        raise DataError(f"unsupported input {path}: expected an image ({', '.join(IMAGE_SUFFIXES)}), "
                        "a folder of images, a Kaggle-layout folder or a .zip")
    return [InputImage(path.stem, str(path), _file_reader(path))]


def collect_inputs(inputs: Sequence[str | Path]) -> list[InputImage]:
    """All images named by `inputs`, in order; DataError for a missing input or a repeated id."""
    if not inputs:
        raise DataError("no input images given")
    images: list[InputImage] = []
    seen: dict[str, str] = {}
    for item in inputs:
        for image in _one_input(Path(item).expanduser()):
            if image.image_id in seen:
                raise DataError(f"image id '{image.image_id}' appears twice: {seen[image.image_id]} and {image.name}")
            seen[image.image_id] = image.name
            images.append(image)
    return images


# --------------------------------------------------------------------------- outputs
@dataclass
class PredictionRecord:
    image_id: str
    shape: tuple[int, int]
    foreground: float  # fraction of pixels predicted nucleus
    n_instances: int | None
    files: list[str]


@dataclass
class PredictSummary:
    out: Path
    images: list[PredictionRecord]
    submission: Path | None

    @property
    def n_instances(self) -> int:
        return sum(r.n_instances or 0 for r in self.images)


def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), array):
        raise DataError(f"cannot write {path}")


def prepare_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty --out unless overwrite (files of the same name are replaced);
    the folder itself is made when the staged output moves in (`staged_output`)."""
    check_output_dir(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def check_submission_path(rle: Path | None, overwrite: bool) -> None:
    """Refuse to replace an existing --rle file without --overwrite (like --out)."""
    if rle is None:
        return
    if rle.is_dir():
        raise DataError(f"--rle {rle} is a folder; give the path of a CSV file")
    if rle.exists() and not overwrite:
        raise DataError(f"--rle {rle} already exists; pass --overwrite to replace it")


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A fresh folder beside `out` to write into; its files move into `out` when the block ends
    without an error, and it is removed either way, so a failed run leaves `out` as it was."""
    import os
    import shutil
    import tempfile

    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become --out's mode
    except OSError as exc:
        raise DataError(f"cannot write beside --out {out}: {exc.strerror or exc}") from None
    try:
        yield staging
        if not out.exists():
            staging.rename(out)
            return
        for path in sorted(staging.iterdir()):
            path.replace(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def predict_to_folder(
    predictor: Predictor,
    images: Iterable[InputImage],
    out: str | Path,
    *,
    threshold: float | None = None,
    instances: bool = False,
    rle: str | Path | None = None,
    tta: bool | None = None,
    tile: int | None = None,
    overwrite: bool = False,
    on_image: Callable[[PredictionRecord], None] | None = None,
    postprocess: dict | None = None,
) -> PredictSummary:
    """Predict every image into `out`; `on_image` is called after each (for a progress bar).

    The mask threshold and instance settings are the model card's unless `threshold` or
    `postprocess` (min_size, h, boundary_threshold; None values ignored) override them.
    Files are written into a folder beside `out` and moved in at the end (the submission
    CSV likewise), so a run that fails half way leaves `out` and `rle` as they were."""

    out = Path(out)
    post = _postprocess(predictor, threshold, {**(postprocess or {}), "tta": tta})
    threshold = post.threshold
    predictor.check_tile(tile)
    rle_path = Path(rle) if rle else None
    check_submission_path(rle_path, overwrite)
    prepare_output_dir(out, overwrite)
    rows: list[tuple[str, str]] = []
    records: list[PredictionRecord] = []
    with staged_output(out) as staging:
        for item in images:
            image = item.read()
            probs, shape = predictor.predict(image, tta=post.tta, tile=tile), image.shape[:2]
            del image  # a huge image need not stay while its masks are written
            if probs.shape[:2] != shape:  # cannot happen with padding/tiling: guard the contract
                raise RuntimeError(f"prediction of {item.name} is {probs.shape[:2]}, image is {shape}")
            mask = np.greater(probs[..., 0], threshold).view(np.uint8)
            mask *= 255  # in place: 0/255, one byte a pixel
            files = [item.image_id + MASK_SUFFIX]
            _write_png(staging / files[0], mask)
            n_instances = None
            if instances or rle_path is not None:
                labels = predictor.instances(probs, post)
                n_instances = int(labels.max())
                if instances:
                    files.append(item.image_id + INSTANCES_SUFFIX)
                    _write_png(staging / files[-1], labels.astype(np.uint16))
                if rle_path is not None:
                    rows.extend(submission_rows(item.image_id, labels))
            record = PredictionRecord(item.image_id, tuple(shape), float(mask.mean()) / 255, n_instances, files)
            records.append(record)
            log.info("%s: %dx%d, %.1f%% nucleus, %s instances", item.image_id, *shape,
                     100 * record.foreground, n_instances if n_instances is not None else "-")
            if on_image is not None:
                on_image(record)
        if rle_path is not None:
            write_submission_atomically(rows, rle_path)
    return PredictSummary(out=out, images=records, submission=rle_path)


def write_submission_atomically(rows: list[tuple[str, str]], path: Path) -> None:
    """Write the submission CSV beside `path` and move it into place (never half a file)."""
    import os
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise DataError(f"cannot write --rle {path}: {exc.strerror or exc}") from None
    try:
        write_submission(rows, partial)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


@dataclass
class Evaluation:
    """Scores of an exported model on labelled images."""

    source: str
    per_image: list[dict]
    iou: float  # IoU of all nucleus pixels pooled over the images
    dice: float  # Dice of all nucleus pixels pooled over the images
    threshold: float
    instance_method: str
    postprocess: dict = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        """Means over images of the per-image foreground IoU, Dice and Kaggle mAP."""
        return {k: float(np.mean([r[k] for r in self.per_image])) if self.per_image else float("nan")
                for k in ("iou", "dice", "map")}

    @property
    def by_type(self) -> dict[str, dict]:
        """Per image type (as data_pipeline.preprocess.image_type tells it): images, pooled
        foreground IoU, mean per-image IoU and mean mAP."""
        out = {}
        for kind in sorted({r["type"] for r in self.per_image if "type" in r}):
            rows = [r for r in self.per_image if r.get("type") == kind]
            inter, union = sum(r["inter"] for r in rows), sum(r["union"] for r in rows)
            out[kind] = {"images": len(rows), "iou": inter / union if union else 1.0,
                         "iou_per_image": float(np.mean([r["iou"] for r in rows])),
                         "map": float(np.mean([r["map"] for r in rows]))}
        return out

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "images": len(self.per_image),
            "threshold": self.threshold,
            "instance_method": self.instance_method,
            "postprocess": self.postprocess,
            "mean": self.mean,
            "pooled": {"iou": self.iou, "dice": self.dice},
            "by_type": self.by_type,
            "per_image": self.per_image,
        }


def evaluate_model_dir(
    model_dir: str | Path,
    data: str | None = None,
    *,
    limit: int | None = None,
    threshold: float | None = None,
    tta: bool | None = None,
    tile: int | None = None,
    split: str = "all",
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[dict], None] | None = None,
    postprocess: dict | None = None,
) -> Evaluation:
    """Foreground IoU, Dice and Kaggle mAP@[0.5:0.95] of an export on Kaggle-layout data with masks.

    Per image with the same scoring as validation (models.evaluation.score_predictions),
    plus the IoU/Dice of all nucleus pixels pooled over the images. `split="val"` scores
    only the validation images named in the model card (the search's held-out split);
    `limit` takes the first N image ids (sorted). `data` defaults to the card's data source.
    """
    from nuclei_search.data_pipeline.sources import open_source
    from nuclei_search.models.evaluation import score_predictions

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1 (got {limit})")
    from nuclei_search.data_pipeline.preprocess import image_type

    predictor = Predictor.load(model_dir)
    post = _postprocess(predictor, threshold, {**(postprocess or {}), "tta": tta})
    threshold = post.threshold
    if split not in ("all", "val"):
        raise ConfigError(f"--split must be all or val (got {split!r})")
    data = data or (predictor.card.get("data") or {}).get("source") or predictor.config.data
    source = open_source(data, require_masks=True)
    rows: list[dict] = []
    inter = union = pred_sum = true_sum = 0
    try:
        ids = _card_validation_ids(predictor.card, source.ids, model_dir, data) if split == "val" else source.ids
        ids = ids[:limit] if limit else ids
        if on_start is not None:
            on_start(len(ids))
        for image_id in ids:
            image, labels = source.read_labels(image_id)
            probs = predictor.predict(image, tta=post.tta, tile=tile)
            row = score_predictions([probs], [labels], threshold, predictor.instance_method, ids=[image_id],
                                    types=[image_type(image)], postprocess=post.instance_kwargs()).per_image[0]
            pred, true = probs[..., 0] > threshold, labels > 0
            row["inter"], row["union"] = int(np.count_nonzero(pred & true)), int(np.count_nonzero(pred | true))
            inter += row["inter"]
            union += row["union"]
            pred_sum, true_sum = pred_sum + int(pred.sum()), true_sum + int(true.sum())
            row["shape"] = [int(image.shape[0]), int(image.shape[1])]
            rows.append(row)
            if on_image is not None:
                on_image(row)
    finally:
        source.close()
    return Evaluation(
        source=str(data), per_image=rows,
        iou=inter / union if union else 1.0, dice=2 * inter / (pred_sum + true_sum) if pred_sum + true_sum else 1.0,
        threshold=threshold, instance_method=predictor.instance_method, postprocess=post.to_dict(),
    )


def _postprocess(predictor: Predictor, threshold: float | None, overrides: dict | None):
    """The card's postprocessing with the command line's overrides (a bad value: one clear error)."""
    values = dict(overrides or {})
    if threshold is not None and not 0.0 < float(threshold) < 1.0:
        raise ConfigError(f"--threshold must be in (0, 1) (got {threshold})")
    try:
        return predictor.postprocess(threshold=threshold, **values)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (check --threshold, --min-size, --watershed-h, --boundary-threshold)") from None


def _card_validation_ids(card: dict, ids: list[str], model_dir, data: str) -> list[str]:
    """The model card's validation ids that the source holds; an error if they are not held out or absent."""
    if (card.get("training") or {}).get("retrained_full"):
        raise ConfigError(f"{model_dir} was retrained on its validation images (export --retrain): "
                          f"--split val would score training data; use --split all on other images")
    wanted = set((card.get("data") or {}).get("val_ids") or [])
    chosen = [i for i in ids if i in wanted]
    if not chosen:
        raise ConfigError(f"none of the {len(wanted)} validation images of {model_dir}'s model card is in {data}")
    return chosen


def write_submission(rows: Iterable[tuple[str, str]], path: str | Path) -> None:
    """The Kaggle submission CSV: header ImageId,EncodedPixels, one row per instance."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ImageId", "EncodedPixels"])
        writer.writerows(rows)
