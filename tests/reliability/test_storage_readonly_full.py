"""Reliability matrix: the storage is read-only or full.

Real file systems, nothing mocked. The CLI runs in a subprocess inside a private mount
namespace (`unshare --map-root-user --mount`, no privileges needed where user namespaces
are allowed) that sees
- a read-only folder: a read-only bind mount of a folder with files in it (EROFS, as on
  a read-only disk or NFS export). Root ignores permission bits, so chmod cannot make a
  folder read-only for root; without user namespaces a non-root user falls back to
  chmod a-w (EACCES);
- a full folder: a tiny tmpfs holding the same files, filled to the last block
  (ENOSPC, as on a full disk), or with a little room left so the disk fills up while the
  command writes.

Each case: exit code 2, one line `error: ...` naming the folder and "not writable" with
the cause, no traceback, and every file that was in the folder unchanged, with nothing
added (no probe file, no experiment or cache folder, no half-written output).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from search_helpers import assert_one_line_error, run_cli, snapshot

READ_ONLY = "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\""
FULL = r"""
d=$1; size=$2; fill=$3; seed=$4; report=$5; shift 5
mount -t tmpfs -o "size=$size" nuclei-test-full "$d" || exit 97
cp -a "$seed/." "$d/" || exit 98
[ "$fill" = 1 ] && head -c 1000000000 /dev/zero > "$d/filler" 2>/dev/null
snap() { (cd "$d" && find . -printf '%y %p\n' | sort && find . -type f -exec sha256sum {} + | sort); }
snap > "$report.before"
"$@"
rc=$?
snap > "$report.after"
df -k "$d" | tail -1 > "$report.df"
exit $rc
"""
TINY_TRAIN = ["--data", "synthetic:12", "--image-size", "32", "--batch-size", "4", "--base-filters", "4",
              "--backbone", "none", "--decoder-depth", "3", "--epochs", "1", "--cpus", "1", "--quiet"]


@functools.cache
def user_namespaces() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


def cli(*argv) -> list[str]:
    return [sys.executable, "-m", "nuclei_search", *map(str, argv)]


def run_read_only(folder: Path, *argv) -> subprocess.CompletedProcess:
    """`nuclei-search ARGV` in a subprocess that sees `folder` (and all below it) read-only."""
    if user_namespaces():
        command = ["unshare", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, "sh", str(folder), *cli(*argv)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    if os.geteuid() == 0:
        pytest.fail("no user namespaces here (unshare --map-root-user --mount fails), and chmod does not stop "
                    "root: no read-only folder can be made; this row needs one of the two")
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
    for path in modes:
        path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        return subprocess.run(cli(*argv), capture_output=True, text=True, timeout=120)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def run_full(folder: Path, seed: Path, *argv, fill: bool = True, size: str = "64k",
             timeout: float = 120) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    """`nuclei-search ARGV` with a tiny tmpfs on `folder` holding a copy of `seed` (filled up if `fill`).

    Returns the process and the folder's listing (entries, then sha256 of every file) before and after.
    """
    if not user_namespaces():
        pytest.fail("no user namespaces here (unshare --map-root-user --mount fails): no full file system "
                    "can be mounted without privileges; this row needs them")
    folder.mkdir(parents=True, exist_ok=True)
    report = folder.parent / f"{folder.name}.report"
    command = ["unshare", "--map-root-user", "--mount", "sh", "-c", FULL, "sh", str(folder), size,
               "1" if fill else "0", str(seed), str(report), *cli(*argv)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode not in (97, 98), done.stderr
    before = Path(f"{report}.before").read_text().splitlines()
    after = Path(f"{report}.after").read_text().splitlines()
    if fill:
        used, available = Path(f"{report}.df").read_text().split()[2:4]
        assert int(available) == 0, f"the tmpfs was not full: {used} kB used, {available} kB free"
    return done, before, after


def last_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, a last stderr line `error: ...` with the needles, no traceback.

    (TensorFlow's C++ runtime may log a few lines to stderr when it loads; they come first.)
    """
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr[-3000:]
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def storage(tmp_path) -> Path:
    """A storage folder holding an earlier experiment `old` and an earlier `train` output `t0`."""
    root = tmp_path / "storage"
    (root / "old").mkdir(parents=True)
    (root / "old" / "nuclei_search.json").write_text(json.dumps({"name": "old", "space": "x.yaml"}))
    (root / "old" / "space.yaml").write_text("params: {loss: {choice: [bce]}}\n")
    (root / "old" / "keep.txt").write_text("finished trials")
    (root / "t0").mkdir()
    (root / "t0" / "model.keras").write_bytes(b"an earlier model")
    (root / "empty").mkdir()
    return root


# --------------------------------------------------------------------------- read-only
@pytest.mark.parametrize("case", ["run new", "run --overwrite", "resume"])
def test_search_on_read_only_storage(storage, tmp_path, case):
    space = tmp_path / "space.yaml"
    space.write_text("fixed: {data: synthetic:4}\nparams: {loss: {choice: [bce]}}\n")
    argv, folder = {
        "run new": (["run", "--space", space, "--name", "new"], storage / "new"),
        "run --overwrite": (["run", "--space", space, "--name", "old", "--overwrite"], storage),
        "resume": (["resume", "old"], storage / "old"),
    }[case]
    before = snapshot(storage)
    done = run_read_only(storage, *argv, "--storage", storage, "--quiet")
    assert_one_line_error(done.returncode, done.stderr, f"folder {folder} is not writable (",
                          "nothing was changed" if case != "run new" else "writable --storage")
    assert done.stdout == ""
    assert snapshot(storage) == before


@pytest.mark.parametrize("out", ["new", "empty", "t0"])
def test_train_into_read_only_out(storage, out):
    before = snapshot(storage)
    done = run_read_only(storage, "train", "--out", storage / out, "--overwrite", *TINY_TRAIN)
    assert_one_line_error(done.returncode, done.stderr, f"--out {storage / out} is not writable (",
                          "nothing in it was changed")
    assert snapshot(storage) == before  # t0's earlier model.keras was not removed by --overwrite


@pytest.mark.parametrize("sub", ["", "cache"])
def test_prepare_into_read_only_cache(storage, sub):
    cache = storage / sub if sub else storage
    before = snapshot(storage)
    done = run_read_only(storage, "data", "prepare", "synthetic:2", "--cache-dir", cache)
    assert_one_line_error(done.returncode, done.stderr, f"cache folder {cache} is not writable (",
                          "--cache-dir")
    assert snapshot(storage) == before


def test_cache_dir_below_a_file(capsys, tmp_path):
    """Portable variant (no namespaces): a --cache-dir whose parent is a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "data", "prepare", "synthetic:2", "--cache-dir", blocker / "cache")
    assert_one_line_error(code, err, f"cache folder {blocker / 'cache'} is not writable (Not a directory)",
                          "--cache-dir", "NUCLEI_SEARCH_CACHE")
    assert blocker.read_text() == "" and [p.name for p in tmp_path.iterdir()] == ["file"]


# --------------------------------------------------------------------------- full
@pytest.mark.parametrize("case", ["run", "train", "data prepare"])
def test_full_storage(storage, tmp_path, case):
    space = tmp_path / "space.yaml"
    space.write_text("fixed: {data: synthetic:4}\nparams: {loss: {choice: [bce]}}\n")
    full = tmp_path / "full"
    argv, needles = {
        "run": (["run", "--space", space, "--name", "new", "--storage", full, "--quiet"],
                [f"experiment folder {full / 'new'} is not writable (No space left on device)"]),
        "train": (["train", "--out", full / "t1", *TINY_TRAIN],
                  [f"--out {full / 't1'} is not writable (No space left on device)"]),
        "data prepare": (["data", "prepare", "synthetic:2", "--cache-dir", full / "cache"],
                         [f"cache folder {full / 'cache'} is not writable (No space left on device)"]),
    }[case]
    done, before, after = run_full(full, storage, *argv)
    assert_one_line_error(done.returncode, done.stderr, *needles)
    assert after == before  # the earlier files (and the filler) unchanged, nothing added


def test_disk_fills_up_while_prepare_writes(storage, tmp_path, synthetic_folder):
    """Room for the write test but not for the arrays: the half-written dataset is removed."""
    full = tmp_path / "full"
    done, before, after = run_full(full, storage, "data", "prepare", synthetic_folder, "--cache-dir",
                                   full / "cache", fill=False, size="64k")
    assert_one_line_error(done.returncode, done.stderr,
                          f"cache folder {full / 'cache'} is not writable (No space left on device) while "
                          f"preparing {synthetic_folder}", "nothing half-written was kept")
    added = sorted(set(after) - set(before))
    # only two empty folders remain: the cache and its prepared/ (no .tmp-*, no .npz)
    assert added == ["d ./cache", "d ./cache/prepared"], added
    assert set(before) <= set(after)


def test_disk_fills_up_while_the_synthetic_dataset_is_generated(storage, tmp_path):
    """Room for the write test but not for the PNGs: no dataset of empty PNGs is renamed into the cache."""
    full = tmp_path / "full"
    done, before, after = run_full(full, storage, "data", "prepare", "synthetic:4", "--cache-dir",
                                   full / "cache", fill=False, size="64k")
    assert_one_line_error(done.returncode, done.stderr,
                          f"cache folder {full / 'cache'} is not writable (No space left on device) while "
                          "preparing synthetic:4", "nothing half-written was kept")
    added = sorted(set(after) - set(before))
    # empty folders only: no synthetic/v*-n4-* dataset (it would be reused as complete), no .tmp-*, no file
    assert added == ["d ./cache", "d ./cache/synthetic"], added
    assert set(before) <= set(after)


@pytest.mark.slow
def test_disk_fills_up_while_train_writes(storage, tmp_path):
    """Room for the write test but not for model.keras: the partial outputs are removed."""
    full = tmp_path / "full"
    done, before, after = run_full(full, storage, "train", "--out", full / "t1", *TINY_TRAIN,
                                   "--cache-dir", tmp_path / "cache", fill=False, size="64k", timeout=300)
    last_line_error(done, f"--out {full / 't1'} is not writable (No space left on device) while writing",
                    "removed the partial model.keras")
    added = sorted(set(after) - set(before))
    assert added == ["d ./t1"], added  # an empty --out: no truncated model.keras, no history.csv
    assert set(before) <= set(after)
