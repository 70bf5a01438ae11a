"""Reading sources: the real DSB2018 zip, folders, zips with prefixes, the competition zip."""

import json
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from nuclei_search.data_pipeline.cache import default_cache_dir, resolve_cache_dir
from nuclei_search.data_pipeline.fingerprint import describe, source_fingerprint
from nuclei_search.data_pipeline.images import decode_image
from nuclei_search.data_pipeline.sources import open_source, safe_extract
from nuclei_search.cli import main
from nuclei_search.errors import DataError


def zip_folder(folder, zip_path, prefix=""):
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*.png")):
            zf.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


# --------------------------------------------------------------------------- real data
def test_cli_info_on_the_real_zip(dsb2018_zip, capsys):
    assert main(["data", "info", str(dsb2018_zip), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 664 and info["masks"] == 28986
    assert info["image_sizes"]["256x256"] == 334 and info["image_sizes"]["1040x1388"] == 1
    assert sum(info["image_sizes"].values()) == 664


def test_cli_info_table(dsb2018_zip, capsys):
    assert main(["data", "info", str(dsb2018_zip)]) == 0
    out = capsys.readouterr().out
    assert "664" in out and "28986" in out and "520x696" in out


def test_read_a_few_real_images(dsb2018_zip):
    source = open_source(dsb2018_zip)
    assert len(source.ids) == 664
    for image_id in source.ids[:: 664 // 4][:4]:
        image, labels = source.read_labels(image_id)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert labels.dtype == np.uint16 and labels.shape == image.shape[:2]
        assert source.image_shape(image_id) == labels.shape
        assert len(np.unique(labels)) - 1 == len(source.mask_names(image_id))
    assert source.image_path(source.ids[0]).startswith(f"{dsb2018_zip.resolve()}:")


def test_real_zip_fingerprint_is_fast_and_stable(dsb2018_zip):
    a = source_fingerprint(open_source(dsb2018_zip))
    assert a == source_fingerprint(open_source(dsb2018_zip)) and len(a) == 16


# --------------------------------------------------------------------------- layouts
def test_folder_nested_one_level(tmp_path, synthetic_folder):
    nested = tmp_path / "download"
    shutil.copytree(synthetic_folder, nested / "stage1_train")
    source = open_source(nested)
    assert source.ids == open_source(synthetic_folder).ids and source.kind == "folder"


def test_zip_with_prefix_folder_reads_like_the_folder(tmp_path, synthetic_folder):
    zipped = open_source(zip_folder(synthetic_folder, tmp_path / "s.zip", prefix="stage1_train/"))
    folder = open_source(synthetic_folder)
    assert zipped.kind == "zip" and zipped.ids == folder.ids
    image_id = folder.ids[1]
    for a, b in zip(zipped.read_labels(image_id), folder.read_labels(image_id)):
        np.testing.assert_array_equal(a, b)
    assert describe(zipped)["masks"] == describe(folder)["masks"]


def test_competition_zip_holding_stage1_train_zip(tmp_path, synthetic_folder):
    inner = zip_folder(synthetic_folder, tmp_path / "stage1_train.zip")
    outer = tmp_path / "data-science-bowl-2018.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "stage1_train.zip")
        zf.writestr("stage1_sample_submission.csv", "ImageId,EncodedPixels\n")
    cache = tmp_path / "cache"
    source = open_source(outer, cache_dir=cache)
    assert source.ids == open_source(synthetic_folder).ids
    assert source.path.is_relative_to(cache)  # extracted into the cache, once
    assert open_source(outer, cache_dir=cache).path == source.path


def test_unlabelled_images_are_allowed_when_masks_are_not_required(tmp_path, synthetic_folder):
    test_set = tmp_path / "stage1_test"
    shutil.copytree(synthetic_folder, test_set)
    for masks in test_set.glob("*/masks"):
        shutil.rmtree(masks)
    source = open_source(test_set, require_masks=False)
    assert len(source.ids) == 12 and source.mask_names(source.ids[0]) == []
    assert source.read_image(source.ids[0]).shape[2] == 3
    with pytest.raises(DataError, match="has no masks"):
        open_source(test_set)


def test_safe_extract(tmp_path, synthetic_folder):
    archive = zip_folder(synthetic_folder, tmp_path / "s.zip")
    written = safe_extract(archive, tmp_path / "out")
    assert len(written) == len(list(synthetic_folder.rglob("*.png")))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ok/images/ok.png", b"x")
        zf.writestr("../../evil.txt", b"x")
    with pytest.raises(DataError, match=r"\.\./\.\./evil\.txt"):
        safe_extract(bad, tmp_path / "out2")
    assert not (tmp_path / "out2" / "ok").exists()  # refused before writing anything
    assert not (tmp_path.parent / "evil.txt").exists()


# --------------------------------------------------------------------------- decoding
def png(array):
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_image_decoding_variants():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = decode_image(png(gray), "g.png")
    assert rgb.shape == (3, 4, 3) and (rgb[..., 0] == gray).all() and (rgb[..., 2] == gray).all()
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 255  # blue 10, red 200
    assert decode_image(png(bgra), "c.png")[0, 0].tolist() == [200, 0, 10]
    deep = np.array([[0, 1000], [2000, 4000]], np.uint16)
    eight = decode_image(png(deep), "d.png")
    assert eight.dtype == np.uint8 and eight[1, 1, 0] == 255 and eight[0, 1, 0] == 64
    with pytest.raises(DataError, match="corrupt PNG x.png"):
        decode_image(b"\x89PNG\r\n\x1a\nnot really", "x.png")


# --------------------------------------------------------------------------- cache dir
def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEI_SEARCH_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("NUCLEI_SEARCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nuclei-search"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().parts[-2:] == (".cache", "nuclei-search")
    assert resolve_cache_dir(tmp_path / "c").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match="NUCLEI_SEARCH_CACHE"):
        resolve_cache_dir(blocker / "cache")
