"""Predict and evaluate with an export of the tiny real experiment: any size, RLE, TTA, tiles, errors."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuclei_search.cli import main
from nuclei_search.models.inference import TTA_TRANSFORMS, predict_images, tta_forward, tta_inverse
from nuclei_search.results.predict import Predictor, collect_inputs
from nuclei_search.results.rle import rle_decode
from results_helpers import build_export, one_line_error

pytestmark = pytest.mark.slow

SIZES = {"odd-260x347": (260, 347), "big-1040x1388": (1040, 1388), "tiny-37x53": (37, 53)}


def _nuclei_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Bright discs on a dark noisy background, uint8 RGB (a fluorescence-like image)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(20, 4, size=shape).clip(0, 255).astype(np.uint8)
    for _ in range(max(2, shape[0] * shape[1] // 4000)):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        cv2.circle(image, centre, int(rng.integers(5, 14)), int(rng.integers(120, 230)), -1)
    return np.repeat(image[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def model_dir(tiny_experiment, tmp_path_factory) -> Path:
    return build_export(tmp_path_factory, tiny_experiment, saved_model=False)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for k, (name, shape) in enumerate(SIZES.items()):
        assert cv2.imwrite(str(folder / f"{name}.png"), _nuclei_image(shape, k))
    return folder


def _read_submission(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["ImageId", "EncodedPixels"]
        return list(reader)


def _coverage(rles: list[str], shape: tuple[int, int]) -> np.ndarray:
    """How many instances cover each pixel (runs added straight into a column-major count)."""
    flat = np.zeros(shape[0] * shape[1], np.int32)
    for rle in rles:
        numbers = np.array(rle.split(), dtype=np.int64)
        for start, length in zip(numbers[0::2] - 1, numbers[1::2]):
            flat[start:start + length] += 1
    return flat.reshape(shape, order="F")


def test_predict_keeps_every_size_and_writes_a_valid_submission(model_dir, image_dir, tmp_path, capsys):
    out, sub = tmp_path / "pred", tmp_path / "submission.csv"
    assert main(["predict", str(model_dir), str(image_dir), "--out", str(out), "--rle", str(sub),
                 "--instances", "--quiet"]) == 0
    assert "wrote 3 masks" in capsys.readouterr().out
    rows = _read_submission(sub)
    assert {r["ImageId"] for r in rows} == set(SIZES)
    for name, shape in SIZES.items():
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(out / f"{name}_instances.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert labels.shape == shape and labels.dtype == np.uint16
        assert not (labels[mask == 0]).any()  # instances lie inside the mask
        mine = [r["EncodedPixels"] for r in rows if r["ImageId"] == name]
        if labels.max() == 0:
            assert mine == [""]  # one empty row for an image without nuclei
            continue
        assert len(mine) == len(np.unique(labels)) - 1 and all(mine)
        cover = _coverage(mine, shape)
        assert cover.max() == 1  # instances never overlap
        np.testing.assert_array_equal(cover > 0, labels > 0)  # and cover exactly the labelled pixels
        first = rle_decode(mine[0], shape)  # a row is exactly one instance of the label map
        (label,) = np.unique(labels[first])
        np.testing.assert_array_equal(first, labels == label)


def test_an_image_without_nuclei_gets_one_empty_row(model_dir, image_dir, tmp_path):
    """A real export whose output layer is set to say 'background' everywhere."""
    from nuclei_search.results.export import load_exported_model

    blank = tmp_path / "blank-model"
    shutil.copytree(model_dir, blank)
    model = load_exported_model(blank)
    kernel, bias = model.get_layer("mask").get_weights()
    model.get_layer("mask").set_weights([np.zeros_like(kernel), np.full_like(bias, -30.0)])
    model.save(blank / "model.keras")
    out, sub = tmp_path / "pred", tmp_path / "empty.csv"
    assert main(["predict", str(blank), str(image_dir / "odd-260x347.png"), str(image_dir / "tiny-37x53.png"),
                 "--out", str(out), "--rle", str(sub), "--quiet"]) == 0
    assert _read_submission(sub) == [{"ImageId": "odd-260x347", "EncodedPixels": ""},
                                     {"ImageId": "tiny-37x53", "EncodedPixels": ""}]
    assert not cv2.imread(str(out / "odd-260x347_mask.png"), cv2.IMREAD_UNCHANGED).any()


def test_tta_transforms_are_exactly_inverted_and_tiles_keep_the_size(model_dir, image_dir, tmp_path):
    from nuclei_search.data_pipeline.augment import normalize_image

    x = np.random.default_rng(1).random((5, 7, 2)).astype(np.float32)
    assert len({(k, f) for k, f in TTA_TRANSFORMS}) == 8
    for k, flip in TTA_TRANSFORMS:
        np.testing.assert_array_equal(tta_inverse(tta_forward(x, k, flip), k, flip), x)
    predictor = Predictor.load(model_dir)
    image = cv2.cvtColor(cv2.imread(str(image_dir / "odd-260x347.png")), cv2.COLOR_BGR2RGB)
    plain = predictor.predict(image, tta=False)
    tta = predictor.predict(image, tta=True)
    assert plain.shape == tta.shape == (260, 347, 1) and 0.0 <= tta.min() <= tta.max() <= 1.0
    views = [tta_inverse(predict_images(predictor.model, [tta_forward(normalize_image(image), k, flip)],
                                        multiple=predictor.multiple)[0], k, flip) for k, flip in TTA_TRANSFORMS]
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-6)
    assert float(np.abs(tta - plain).max()) > 1e-4  # the views differ: the average is not the plain map
    # the card's choice (made on validation at export) is the default; a caller's choice wins
    for chosen_tta, expected, other in ((True, tta, plain), (False, plain, tta)):
        chosen = tmp_path / f"tta-{chosen_tta}"
        shutil.copytree(model_dir, chosen)
        card = json.loads((chosen / "model_card.json").read_text())
        card["postprocess"] = {**(card.get("postprocess") or {}), "tta": chosen_tta}
        (chosen / "model_card.json").write_text(json.dumps(card))
        with_card = Predictor.load(chosen)
        assert with_card.tta is chosen_tta
        np.testing.assert_allclose(with_card.predict(image), expected, atol=1e-6)
        np.testing.assert_allclose(with_card.predict(image, tta=not chosen_tta), other, atol=1e-6)
    big = cv2.cvtColor(cv2.imread(str(image_dir / "big-1040x1388.png")), cv2.COLOR_BGR2RGB)
    whole = predictor.predict(big, tta=False)
    tiled = predictor.predict(big, tile=256, tta=False)
    assert whole.shape == tiled.shape == (1040, 1388, 1)
    assert whole.dtype == np.float32 and tiled.dtype == np.float16  # a tiled map is stitched in half precision
    # blended tiles agree with the whole-image prediction away from tile seams
    assert float(np.abs(whole - tiled.astype(np.float32)).mean()) < 0.02
    tiled_tta = predictor.predict(big, tile=512, tta=True)  # one transformed view at a time
    assert tiled_tta.shape == (1040, 1388, 1) and tiled_tta.dtype == np.float16
    whole_tta = predictor.predict(big, tta=True)
    assert float(np.abs(whole_tta - tiled_tta.astype(np.float32)).mean()) < 0.02


def test_kaggle_layout_zip_of_images_only(model_dir, image_dir, tmp_path):
    archive = tmp_path / "stage1_test.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("odd-260x347", "tiny-37x53"):
            zf.write(image_dir / f"{name}.png", f"{name}/images/{name}.png")
    inputs = collect_inputs([archive])
    assert [i.image_id for i in inputs] == ["odd-260x347", "tiny-37x53"]
    out = tmp_path / "pred"
    assert main(["predict", str(model_dir), str(archive), "--out", str(out), "--quiet", "--tta"]) == 0
    assert cv2.imread(str(out / "tiny-37x53_mask.png"), cv2.IMREAD_UNCHANGED).shape == (37, 53)


def test_bad_inputs_are_one_line_errors(model_dir, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    image = str(image_dir / "tiny-37x53.png")
    assert main(["predict", str(tmp_path / "missing"), image, "--out", str(out)]) == 2
    assert "does not exist" in one_line_error(capsys)
    (tmp_path / "not-a-model").mkdir()
    assert main(["predict", str(tmp_path / "not-a-model"), image, "--out", str(out)]) == 2
    assert "model_card.json" in one_line_error(capsys)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert main(["predict", str(model_dir), str(corrupt), "--out", str(out), "--quiet"]) == 2
    assert "corrupt.png" in one_line_error(capsys)
    assert main(["predict", str(model_dir), str(tmp_path / "nope.png"), "--out", str(out)]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert main(["predict", str(model_dir), image, "--out", str(out), "--tile", "100"]) == 2
    assert "multiple of the model's stride 8" in one_line_error(capsys)
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text("x")
    assert main(["predict", str(model_dir), image, "--out", str(out)]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert main(["evaluate", str(tmp_path / "not-a-model"), "--data", "synthetic:12"]) == 2
    assert "model_card.json" in one_line_error(capsys)


def test_evaluate_on_real_dsb_images(model_dir, dsb2018_zip, capsys):
    assert main(["evaluate", str(model_dir), "--data", str(dsb2018_zip), "--limit", "3", "--quiet"]) == 0
    table = capsys.readouterr().out
    for word in ("iou", "dice", "map", "mean over images", "all pixels pooled"):
        assert word in table
    assert main(["evaluate", str(model_dir), "--data", str(dsb2018_zip), "--limit", "3", "--format", "json",
                 "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == len(doc["per_image"]) == 3
    for row in doc["per_image"]:
        assert {"id", "iou", "dice", "map", "shape"} <= set(row)
        assert all(0.0 <= row[k] <= 1.0 for k in ("iou", "dice", "map"))
    assert all(0.0 <= doc["mean"][k] <= 1.0 for k in ("iou", "dice", "map"))
    assert 0.0 <= doc["pooled"]["iou"] <= 1.0
    assert [r["id"] for r in doc["per_image"]] == sorted(r["id"] for r in doc["per_image"])


def test_tile_layout_covers_evenly_with_the_overlap_and_little_rework():
    from nuclei_search.models.inference import tile_layout

    for length, tile, overlap in [(1392, 512, 32), (1040, 512, 32), (1040, 256, 64), (512, 512, 32), (528, 512, 32)]:
        side, starts = tile_layout(length, tile, overlap, multiple=16)
        assert side <= tile and side % 16 == 0 or side == length
        assert starts[0] == 0 and starts[-1] + side == length  # covers [0, length)
        for a, b in zip(starts, starts[1:]):
            assert a + side - b >= overlap  # neighbours share at least the overlap
        assert len(starts) * side <= length + len(starts) * (overlap + 16)  # no whole spare tile
    assert tile_layout(1392, 512, 32, 16) == (496, [0, 448, 896])  # 3 tiles, not 4 of 512


def test_evaluate_split_val_scores_the_cards_validation_images_and_reproduces_its_val_iou(model_dir, dsb2018_zip,
                                                                                          capsys):
    card = json.loads((model_dir / "model_card.json").read_text())
    assert main(["evaluate", str(model_dir), "--data", card["data"]["source"], "--split", "val", "--format", "json",
                 "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(r["id"] for r in doc["per_image"]) == sorted(card["data"]["val_ids"])
    # the same images, the same score: with the card's chosen postprocessing (TTA included when chosen) ...
    assert doc["postprocess"]["tta"] is card["postprocess"]["tta"]
    assert abs(doc["pooled"]["iou"] - card["postprocess"]["metrics"]["val_iou"]) < 1e-3
    # ... and, without TTA at the training threshold, the trial's own val_iou
    assert main(["evaluate", str(model_dir), "--data", card["data"]["source"], "--split", "val", "--format", "json",
                 "--quiet", "--no-tta", "--threshold", str(card["config"]["threshold"])]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert abs(plain["pooled"]["iou"] - card["metrics"]["val_iou"]) < 1e-3
    # data without those images: one line, exit 2
    assert main(["evaluate", str(model_dir), "--data", str(dsb2018_zip), "--split", "val", "--quiet"]) == 2
    assert "none of the" in one_line_error(capsys)


def test_evaluate_split_val_is_refused_for_an_export_trained_on_its_validation_images(model_dir, tmp_path, capsys):
    retrained = tmp_path / "retrained"
    shutil.copytree(model_dir, retrained)
    card = json.loads((retrained / "model_card.json").read_text())
    card["training"] = {**(card.get("training") or {}), "retrained_full": True}
    (retrained / "model_card.json").write_text(json.dumps(card))
    assert main(["evaluate", str(retrained), "--data", card["data"]["source"], "--split", "val", "--quiet"]) == 2
    assert "retrained on its validation images" in one_line_error(capsys)
