"""Every bad input is one line on stderr, exit code 2, and names the offending file.

The bad-data rows of the reliability matrix (corrupt PNG, size mismatch, missing masks, empty
folder, not a zip, zip-slip) are in tests/reliability/test_bad_data.py, the Kaggle credential
rows in tests/reliability/test_credentials.py and the unwritable cache in
tests/reliability/test_storage_readonly_full.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from search_helpers import assert_one_line_error, run_cli


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
