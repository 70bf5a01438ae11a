"""Reliability matrix: Kaggle credentials never appear in output, logs or error messages.

Each: exit code 2, one line `error: ...` saying what is wrong with Kaggle, the key
nowhere in stdout, stderr or the log records (at -vv), and no download kept.
"""

import pytest

from search_helpers import assert_one_line_error, run_cli

FAKE_KEY = "0123456789abcdef-fake-kaggle-key"


@pytest.fixture
def no_kaggle_credentials(monkeypatch, tmp_path):
    config = tmp_path / "kaggle-config"
    config.mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_kaggle_without_credentials(capsys, no_kaggle_credentials, tmp_path):
    code, out, err = run_cli(capsys, "data", "info", "kaggle", "--cache-dir", tmp_path / "c")
    assert_one_line_error(code, err, "Kaggle credentials not found", "kaggle.json", "KAGGLE_USERNAME")
    assert out == ""
    assert not list((tmp_path / "c").rglob("*.zip"))


def test_kaggle_with_a_fake_key_fails_cleanly_without_leaking_it(capsys, caplog, monkeypatch,
                                                                 no_kaggle_credentials, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "nuclei-search-test")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    code, out, err = run_cli(capsys, "-vv", "data", "prepare", "kaggle", "--cache-dir", tmp_path / "c")
    assert_one_line_error(code, err, "Kaggle")
    assert FAKE_KEY not in out + err + caplog.text
    assert not list((tmp_path / "c").rglob("*.zip"))  # no (partial) download kept


@pytest.mark.parametrize("status, needle", [
    (403, "https://www.kaggle.com/c/data-science-bowl-2018/rules"),
    (401, "HTTP 401"),
    (500, "HTTPError"),
])
def test_kaggle_http_errors_map_to_one_clear_line(status, needle):
    """An HTTP error whose text holds the key (as some proxies echo it) becomes one line without it."""
    import requests

    from nuclei_search.data_pipeline.download import download_error
    from nuclei_search.errors import NucleiSearchError

    response = requests.Response()
    response.status_code = status
    exc = requests.HTTPError(f"{status} error for key {FAKE_KEY}", response=response)
    error = download_error(exc, "KAGGLE_USERNAME/KAGGLE_KEY", [FAKE_KEY])
    message = str(error)
    assert isinstance(error, NucleiSearchError) and error.exit_code == 2
    assert needle in message and FAKE_KEY not in message and "\n" not in message
