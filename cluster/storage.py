"""Experiment storage that is a URI (s3://, gs://, ...): our files next to Ray Tune's, through pyarrow.fs.

Ray Tune writes an experiment under `--storage` through `pyarrow.fs` (the trials upload
their checkpoints, the driver its results and experiment state). The search adds a few
files of its own (`nuclei_search.json`, `space.yaml`, a copy of `optuna.db`); with a URI
storage they are written on the driver's disk (a local mirror folder) and copied to
the experiment's folder on the storage with the same pyarrow filesystem Ray uses, so
that any machine can find, resume or rank the experiment from the storage alone.

A URI here is whatever `pyarrow.fs.FileSystem.from_uri` opens, query string included
(`s3://bucket/x?endpoint_override=...`); `local:///abs/path` is pyarrow's local
filesystem under a URI, which is what the tests use (no cloud is contacted).
Nothing here imports Ray.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)


def is_remote(location: str | None) -> bool:
    """A URI other than file:// (which is a plain local path)."""
    return bool(location) and "://" in location and not location.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """`uri/part/...`, keeping a query string (`?endpoint_override=...`) at the end."""
    base, sep, query = uri.partition("?")
    path = "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return f"{path}{sep}{query}"


def _open(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = _open(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def upload(local_folder: Path, names: Iterable[str], uri: str) -> list[str]:
    """Copy the files `names` of `local_folder` into the folder `uri` (created); returns those copied."""
    fs, folder = _open(uri)
    fs.create_dir(folder, recursive=True)
    copied = []
    for name in names:
        source = Path(local_folder) / name
        if not source.is_file():
            continue
        with open(source, "rb") as src, fs.open_output_stream(f"{folder}/{name}") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        copied.append(name)
    log.debug("uploaded %s to %s", copied, uri)
    return copied


def download(uri: str, names: Iterable[str], local_folder: Path, *, overwrite: bool = True) -> list[str]:
    """Copy the files `names` of the folder `uri` into `local_folder`; returns those copied.

    Missing remote files are skipped; with overwrite=False a file already present
    locally is kept as it is.
    """
    fs, folder = _open(uri)
    local_folder = Path(local_folder)
    copied = []
    for name in names:
        target = local_folder / name
        if target.exists() and not overwrite:
            continue
        try:
            _fetch(fs, f"{folder}/{name}", target)
        except FileNotFoundError:
            continue
        copied.append(name)
    return copied


def sync_down(uri: str, local_folder: Path, *, keep_local: Iterable[str] = ()) -> int:
    """Mirror the folder `uri` into `local_folder`: fetch files that are new or changed there.

    A file counts as changed when its size differs or the remote copy is newer than the
    local one. Names in `keep_local` (relative paths) are never overwritten once they
    exist locally (the driver's live Optuna study). Local files missing remotely stay.
    Returns the number of files fetched.
    """
    import pyarrow.fs

    fs, folder = _open(uri)
    local_folder = Path(local_folder)
    keep = set(keep_local)
    fetched = 0
    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, recursive=True, allow_not_found=True))
    for info in infos:
        if info.type != pyarrow.fs.FileType.File:
            continue
        relative = info.path[len(folder):].lstrip("/")
        target = local_folder / relative
        if target.exists():
            if relative in keep:
                continue
            stat = target.stat()
            newer = info.mtime is not None and info.mtime.timestamp() > stat.st_mtime
            if stat.st_size == info.size and not newer:
                continue
        _fetch(fs, info.path, target)
        fetched += 1
    log.debug("fetched %d file(s) from %s into %s", fetched, uri, local_folder)
    return fetched


def delete(uri: str) -> None:
    """Remove the folder `uri` and everything in it (nothing there is fine)."""
    fs, folder = _open(uri)
    try:
        fs.delete_dir(folder)
    except FileNotFoundError:
        pass


def upload_sqlite(db: Path, uri: str) -> bool:
    """Upload a consistent copy of the SQLite file `db` as `uri/<db name>` (sqlite3's backup API)."""
    db = Path(db)
    if not db.is_file():
        return False
    with tempfile.TemporaryDirectory(prefix="nuclei-db-") as tmp:
        src, dst = sqlite3.connect(db), sqlite3.connect(Path(tmp) / db.name)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        upload(Path(tmp), [db.name], uri)
    return True


def _fetch(fs, path: str, target: Path) -> None:
    """Download one file atomically (a partial download never takes the target's name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(path) as src:  # FileNotFoundError before anything is written
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as dst:
            try:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            except BaseException:
                Path(dst.name).unlink(missing_ok=True)
                raise
    Path(dst.name).replace(target)
