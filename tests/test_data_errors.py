"""Every bad input is one line on stderr, exit code 2, and names the offending file."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuclei_search.cli import main

FAKE_KEY = "0123456789abcdef-fake-kaggle-key"


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def data_copy(tmp_path, synthetic_folder):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_folder, folder)
    return folder


def first_id(folder: Path) -> str:
    return sorted(p.name for p in folder.iterdir())[0]


def test_corrupt_png(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    bad = data_copy / image_id / "images" / f"{image_id}.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code, _, err = run_cli(capsys, "data", "prepare", str(data_copy), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "corrupt PNG", str(bad))


def test_corrupt_mask_png(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    bad = sorted((data_copy / image_id / "masks").glob("*.png"))[0]
    bad.write_bytes(b"not a png at all")
    code, _, err = run_cli(capsys, "data", "prepare", str(data_copy), "--cache-dir", str(tmp_path / "c"),
                           "--workers", "1")
    assert_one_line_error(code, err, "corrupt PNG", str(bad))


def test_mask_size_mismatch(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    height, width = cv2.imread(str(data_copy / image_id / "images" / f"{image_id}.png")).shape[:2]
    bad = sorted((data_copy / image_id / "masks").glob("*.png"))[-1]
    cv2.imwrite(str(bad), np.full((height + 3, width), 255, np.uint8))
    code, _, err = run_cli(capsys, "data", "prepare", str(data_copy), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, str(bad), f"{height + 3}x{width}", f"{height}x{width}")


def test_image_without_masks(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    shutil.rmtree(data_copy / image_id / "masks")
    code, _, err = run_cli(capsys, "data", "prepare", str(data_copy), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "has no masks", f"{image_id}.png")


def test_empty_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "data", "info", str(empty))
    assert_one_line_error(code, err, "no Kaggle-layout images (<id>/images/<id>.png) found in", str(empty))


def test_zip_without_images(capsys, tmp_path):
    archive = tmp_path / "nothing.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    code, _, err = run_cli(capsys, "data", "info", str(archive))
    assert_one_line_error(code, err, "no Kaggle-layout images", str(archive))


def test_not_a_zip(capsys, tmp_path):
    fake = tmp_path / "stage1_train.zip"
    fake.write_text("this is not a zip")
    code, _, err = run_cli(capsys, "data", "info", str(fake))
    assert_one_line_error(code, err, f"{fake} is not a zip file")


def test_zip_slip_entry(capsys, tmp_path, synthetic_folder):
    archive = tmp_path / "evil.zip"
    image_id = first_id(synthetic_folder)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(synthetic_folder / image_id / "images" / f"{image_id}.png", f"{image_id}/images/{image_id}.png")
        zf.writestr("../../outside/evil.png", b"x")
    code, _, err = run_cli(capsys, "data", "prepare", str(archive), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "../../outside/evil.png", "zip-slip", str(archive))


@pytest.mark.parametrize("entry", ["/etc/evil.png", "C:/evil/images/evil.png"])
def test_absolute_and_drive_entries(capsys, tmp_path, entry):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(entry, b"x")
    code, _, err = run_cli(capsys, "data", "info", str(archive))
    assert_one_line_error(code, err, entry, "zip-slip")


@pytest.mark.parametrize("spec", ["does/not/exist", "synthetic:zero", "imagenet"])
def test_unknown_source(capsys, tmp_path, spec):
    code, _, err = run_cli(capsys, "data", "info", spec, "--cache-dir", str(tmp_path))
    if spec.startswith("synthetic"):
        assert_one_line_error(code, err, spec, "positive image count")
    else:
        assert_one_line_error(code, err, f"unknown data source '{spec}'", "synthetic, synthetic:N, kaggle")


def test_unknown_file_type(capsys, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    code, _, err = run_cli(capsys, "data", "info", str(other))
    assert_one_line_error(code, err, f"unknown data source '{other}'")


def test_unwritable_cache_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "data", "prepare", "synthetic:2", "--cache-dir", str(blocker / "cache"))
    assert_one_line_error(code, err, str(blocker / "cache"), "--cache-dir", "NUCLEI_SEARCH_CACHE")


def clear_kaggle_env(monkeypatch, tmp_path):
    config = tmp_path / "kaggle-config"
    config.mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_kaggle_without_credentials(capsys, monkeypatch, tmp_path):
    clear_kaggle_env(monkeypatch, tmp_path)
    code, out, err = run_cli(capsys, "data", "info", "kaggle", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "Kaggle credentials not found", "kaggle.json", "KAGGLE_USERNAME")
    assert out == ""


def test_kaggle_with_a_fake_key_fails_cleanly_without_leaking_it(capsys, caplog, monkeypatch, tmp_path):
    clear_kaggle_env(monkeypatch, tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "nuclei-search-test")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    code, out, err = run_cli(capsys, "-vv", "data", "prepare", "kaggle", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(code, err, "Kaggle")
    assert FAKE_KEY not in out + err + caplog.text
    assert not list((tmp_path / "c").rglob("*.zip"))


def test_installed_entry_point(tmp_path, synthetic_folder):
    exe = Path(sys.executable).with_name("nuclei-search")
    assert exe.is_file(), f"the console script is not installed beside {sys.executable}"
    ok = subprocess.run([str(exe), "data", "info", str(synthetic_folder), "--format", "json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and '"images": 12' in ok.stdout
    fake = tmp_path / "x.zip"
    fake.write_text("nope")
    bad = subprocess.run([str(exe), "data", "info", str(fake)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {fake} is not a zip file"
    helped = subprocess.run([str(exe), "data", "prepare", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--workers" in helped.stdout and "--limit" in helped.stdout


@pytest.mark.parametrize("status, needle", [
    (403, "https://www.kaggle.com/c/data-science-bowl-2018/rules"),
    (401, "HTTP 401"),
    (500, "HTTPError"),
])
def test_kaggle_http_errors_map_to_one_clear_line(status, needle):
    import requests

    from data_pipeline.download import download_error

    response = requests.Response()
    response.status_code = status
    exc = requests.HTTPError(f"{status} error for key {FAKE_KEY}", response=response)
    message = str(download_error(exc, "KAGGLE_USERNAME/KAGGLE_KEY", [FAKE_KEY]))
    assert needle in message and FAKE_KEY not in message and "\n" not in message
