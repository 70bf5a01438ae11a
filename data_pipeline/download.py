"""Download DSB2018 ``stage1_train.zip`` with the kaggle package's KaggleApi.

Credentials are looked up first (``KAGGLE_USERNAME`` + ``KAGGLE_KEY``,
``KAGGLE_API_TOKEN``, or ``kaggle.json`` / ``access_token`` in ``$KAGGLE_CONFIG_DIR``,
``~/.kaggle`` or ``$XDG_CONFIG_HOME/kaggle``) so a missing setup is one clear error.
Secrets never reach a message or a log: everything kaggle prints is captured, and
every text is scrubbed of the key before it is shown.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from nuclei_search.errors import DataError

log = logging.getLogger(__name__)

COMPETITION = "data-science-bowl-2018"
FILE_NAME = "stage1_train.zip"
RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
HOW_TO_SET = (
    "create an API token at https://www.kaggle.com/settings (API > Create New Token) and "
    "save kaggle.json to ~/.kaggle/ (or $KAGGLE_CONFIG_DIR) with chmod 600, or set "
    "KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN)"
)


def _config_dirs() -> list[Path]:
    explicit = os.environ.get("KAGGLE_CONFIG_DIR")
    if explicit:
        return [Path(explicit).expanduser()]
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path.home() / ".kaggle", Path(xdg) / "kaggle"]


def find_credentials() -> tuple[str | None, list[str]]:
    """(where credentials were found or None, secret strings to scrub from any text)."""
    secrets = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    where = None
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        where = "KAGGLE_USERNAME/KAGGLE_KEY"
    elif os.environ.get("KAGGLE_API_TOKEN"):
        where = "KAGGLE_API_TOKEN"
    for folder in _config_dirs():
        config = folder / "kaggle.json"
        token = folder / "access_token"
        if config.is_file():
            try:
                values = json.loads(config.read_text())
                secrets.append(str(values.get("key", "")))
                if where is None and values.get("username") and values.get("key"):
                    where = str(config)
            except (OSError, ValueError, AttributeError):
                log.warning("ignoring unreadable Kaggle config %s", config)
        if token.is_file():
            try:
                secrets.append(token.read_text().strip())
                where = where or str(token)
            except OSError:
                pass
    return where, [s for s in secrets if len(s) >= 4]


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(exc, "status", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def download_error(exc: BaseException, where: str, secrets: list[str]) -> DataError:
    """The one-line DataError for a failed Kaggle call (secrets scrubbed)."""
    status = _status(exc)
    if status == 403:
        return DataError(
            f"Kaggle refused the download (HTTP 403): accept the competition rules at {RULES_URL} "
            "with the account of your API token, then retry"
        )
    if status == 401:
        return DataError(f"Kaggle rejected the credentials in {where} (HTTP 401): {HOW_TO_SET}")
    names = " ".join(c.__name__ for c in type(exc).__mro__)
    if "Connection" in names or "Timeout" in names:
        return DataError(
            f"Kaggle download of {FILE_NAME} failed: cannot reach Kaggle ({type(exc).__name__}); "
            f"check the network, or download {FILE_NAME} by hand and pass its path as the data source"
        )
    return DataError(scrub(f"Kaggle download of {FILE_NAME} failed: {_first_line(exc)}", secrets))


def download_stage1_train(cache_dir: Path) -> Path:
    """Return the cached `stage1_train.zip`, downloading it from Kaggle once."""
    dest_dir = Path(cache_dir) / "kaggle" / COMPETITION
    target = dest_dir / FILE_NAME
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    where, secrets = find_credentials()
    if where is None:
        raise DataError(f"Kaggle credentials not found: {HOW_TO_SET}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest_dir))
    captured = io.StringIO()
    try:
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                from kaggle.api.kaggle_api_extended import KaggleApi

                api = KaggleApi()
                api.authenticate()
                log.info("downloading %s of %s into %s", FILE_NAME, COMPETITION, dest_dir)
                api.competition_download_file(COMPETITION, FILE_NAME, path=str(tmp), quiet=True)
        except SystemExit:
            raise DataError(f"Kaggle authentication failed with the credentials in {where}: {HOW_TO_SET}") from None
        except Exception as exc:  # kaggle raises requests/urllib3/SDK errors
            raise download_error(exc, where, secrets) from None
        finally:
            chatter = captured.getvalue().strip()
            if chatter:
                log.debug("kaggle: %s", scrub(chatter, secrets))
        found = sorted(p for p in tmp.rglob("*") if p.is_file())
        if not found:
            raise DataError(f"Kaggle download of {FILE_NAME} produced no file")
        # Kaggle may wrap the file in another zip; sources.py opens both layouts.
        found[0].replace(tmp / "download.part")
        (tmp / "download.part").replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
