"""Reliability matrix: bad input data.

Corrupt PNG, mask size mismatch, image without masks, empty folder, not a zip, zip-slip
entries. Each: exit code 2, one line `error: ...` naming the offending file, the source
left as it was and no prepared dataset (nor a half-written one) in the cache.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from search_helpers import assert_one_line_error, run_cli, snapshot


@pytest.fixture
def data_copy(tmp_path, synthetic_folder):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_folder, folder)
    return folder


def first_id(folder: Path) -> str:
    return sorted(p.name for p in folder.iterdir())[0]


def prepare_fails(capsys, source: Path, cache: Path, *needles: str, extra=()) -> str:
    """`data prepare SOURCE`: exit 2, one line with the needles; source untouched, nothing prepared."""
    before = snapshot(source) if source.is_dir() else source.read_bytes()
    code, out, err = run_cli(capsys, "data", "prepare", source, "--cache-dir", cache, *extra)
    line = assert_one_line_error(code, err, *needles)
    assert out == ""
    assert (snapshot(source) if source.is_dir() else source.read_bytes()) == before
    prepared = cache / "prepared"
    assert not (prepared.is_dir() and list(prepared.iterdir())), list(prepared.iterdir())  # not even a .tmp-*
    return line


def test_corrupt_png(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    bad = data_copy / image_id / "images" / f"{image_id}.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    line = prepare_fails(capsys, data_copy, tmp_path / "c", "corrupt PNG", str(bad))
    # the real command: exactly that one line on stderr (no OpenCV log line before it)
    done = subprocess.run([sys.executable, "-m", "nuclei_search", "data", "prepare", str(data_copy),
                           "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (2, line + "\n", "")


def test_corrupt_mask_png(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    bad = sorted((data_copy / image_id / "masks").glob("*.png"))[0]
    bad.write_bytes(b"not a png at all")
    prepare_fails(capsys, data_copy, tmp_path / "c", "corrupt PNG", str(bad), extra=("--workers", "1"))


def test_mask_size_mismatch(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    height, width = cv2.imread(str(data_copy / image_id / "images" / f"{image_id}.png")).shape[:2]
    bad = sorted((data_copy / image_id / "masks").glob("*.png"))[-1]
    cv2.imwrite(str(bad), np.full((height + 3, width), 255, np.uint8))
    prepare_fails(capsys, data_copy, tmp_path / "c", str(bad), f"{height + 3}x{width}", f"{height}x{width}")


def test_image_without_masks(capsys, tmp_path, data_copy):
    image_id = first_id(data_copy)
    shutil.rmtree(data_copy / image_id / "masks")
    prepare_fails(capsys, data_copy, tmp_path / "c", "has no masks", f"{image_id}.png")


def test_empty_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_fails(capsys, empty, tmp_path / "c", "no Kaggle-layout images (<id>/images/<id>.png) found in",
                  str(empty))
    code, _, err = run_cli(capsys, "data", "info", empty)
    assert_one_line_error(code, err, "no Kaggle-layout images", str(empty))


def test_zip_without_images(capsys, tmp_path):
    archive = tmp_path / "nothing.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    code, _, err = run_cli(capsys, "data", "info", archive)
    assert_one_line_error(code, err, "no Kaggle-layout images", str(archive))


def test_not_a_zip(capsys, tmp_path):
    fake = tmp_path / "stage1_train.zip"
    fake.write_text("this is not a zip")
    prepare_fails(capsys, fake, tmp_path / "c", f"{fake} is not a zip file")
    code, _, err = run_cli(capsys, "data", "info", fake)
    assert_one_line_error(code, err, f"{fake} is not a zip file")


def test_zip_slip_entry(capsys, tmp_path, synthetic_folder):
    archive = tmp_path / "evil.zip"
    image_id = first_id(synthetic_folder)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(synthetic_folder / image_id / "images" / f"{image_id}.png", f"{image_id}/images/{image_id}.png")
        zf.writestr("../../outside/evil.png", b"x")
    cache = tmp_path / "deep" / "er" / "c"
    prepare_fails(capsys, archive, cache, "../../outside/evil.png", "zip-slip", str(archive))
    assert not list(tmp_path.rglob("evil.png")) and not (tmp_path / "outside").exists()  # nothing written outside


@pytest.mark.parametrize("entry", ["/etc/evil.png", "C:/evil/images/evil.png"])
def test_absolute_and_drive_entries(capsys, tmp_path, entry):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(entry, b"x")
    code, _, err = run_cli(capsys, "data", "info", archive)
    assert_one_line_error(code, err, entry, "zip-slip")
    assert not Path("/etc/evil.png").exists() and not list(tmp_path.rglob("evil.png"))


def _zip_of(folder: Path, archive: Path, compression=zipfile.ZIP_DEFLATED) -> list[str]:
    """`folder` (Kaggle layout) as a zip; returns the entry names."""
    names = []
    with zipfile.ZipFile(archive, "w", compression=compression) as zf:
        for path in sorted(folder.rglob("*.png")):
            names.append(path.relative_to(folder).as_posix())
            zf.write(path, names[-1])
    return names


def test_damaged_zip_entry_is_one_line_and_leaves_the_cache_alone(capsys, tmp_path, synthetic_folder):
    archive = tmp_path / "damaged.zip"
    names = _zip_of(synthetic_folder, archive)
    victim = next(n for n in names if "/images/" in n)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(victim)
    data = bytearray(archive.read_bytes())
    # the local header is 30 bytes + name + extra; flip bytes in the middle of the compressed data only
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.compress_size // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    archive.write_bytes(bytes(data))
    prepare_fails(capsys, archive, tmp_path / "c", f"cannot read {archive}:{victim}", "damaged data")


@pytest.mark.slow  # writes 1 GiB entries
@pytest.mark.parametrize("kind", ["masks", "images"])
def test_zip_bomb_entry_is_refused_before_it_is_decompressed(tmp_path, synthetic_folder, kind):
    archive = tmp_path / "bomb.zip"
    names = _zip_of(synthetic_folder, archive)
    victim = next(n for n in names if f"/{kind}/" in n)
    with zipfile.ZipFile(archive) as zf:
        header = zf.read(victim)[:33]  # PNG signature + IHDR chunk: a small image
    rebuilt = tmp_path / "bomb2.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in names:
            if name != victim:
                dst.writestr(name, src.read(name))
                continue
            with dst.open(name, "w", force_zip64=True) as fh:  # 1 GiB of zeros after the header
                fh.write(header)
                chunk = bytes(1 << 24)
                for _ in range(64):
                    fh.write(chunk)
    assert rebuilt.stat().st_size < 5 * 2**20
    cache = tmp_path / "c"
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys\n"
         "from nuclei_search.cli import main\n"
         "code = main(['data', 'prepare', sys.argv[1], '--cache-dir', sys.argv[2], '--workers', '1'])\n"
         "# this process's peak RSS (VmHWM starts again at exec; ru_maxrss would count the forked pytest)\n"
         "status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
         "print(int(status) // 1024)\n"
         "sys.exit(code)\n", str(rebuilt), str(cache)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error:") and victim in line and "zip bomb" in line, line
    peak_mb = int(done.stdout.strip().splitlines()[-1])
    assert peak_mb < 300, f"peak RSS {peak_mb} MB"
    prepared = cache / "prepared"
    assert not (prepared.is_dir() and list(prepared.iterdir()))
