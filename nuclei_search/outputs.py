"""Output folders that never lose what is already on disk without --overwrite."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from nuclei_search.errors import ExperimentError
from nuclei_search.lock import LOCK_FILE

# OSErrors that mean "this storage cannot take our files": read-only, full, over quota, no permission.
STORAGE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})
PROBE_PREFIX = ".nuclei-search-write-test-"


def reason(exc: OSError) -> str:
    """The short cause of an OSError ("Read-only file system", "No space left on device", ...)."""
    return exc.strerror or type(exc).__name__


def probe_writable(folder: Path) -> None:
    """Create `folder` (with parents) and write a few bytes in it, so a read-only or full storage fails now.

    On OSError everything this call created (probe file, new folders) is removed again and the
    OSError is re-raised: an unwritable storage is left exactly as it was. The probe file has a
    unique name, so processes probing one shared folder at once do not disturb each other.
    """
    folder = Path(folder)
    created: list[Path] = []
    probe: str | None = None
    try:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for path in reversed(missing):  # outermost first
            try:
                path.mkdir()
            except FileExistsError:  # made by another process meanwhile: not ours to remove
                continue
            created.append(path)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=PROBE_PREFIX)
        try:  # bytes, not an empty file: a full disk refuses them
            os.write(fd, b"nuclei-search write test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError:
        if probe is not None:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        for path in reversed(created):  # innermost first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a --out that is a file, or an existing non-empty folder unless overwrite."""
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} exists and is not a folder")
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()) and not overwrite:
        raise ExperimentError(f"--out {out} already holds files; pass --overwrite to replace them")


def prepare_output_dir(out: Path, overwrite: bool, own_files: tuple[str, ...]) -> None:
    """Refuse an existing non-empty folder unless overwrite; then remove only `own_files` in it.

    A folder that cannot be written (read-only, full, no permission) is refused before anything
    in it is removed.
    """
    check_output_dir(out, overwrite)
    try:
        probe_writable(out)
    except OSError as exc:
        raise ExperimentError(f"--out {out} is not writable ({reason(exc)}); nothing in it was changed") from None
    for name in own_files if overwrite else ():
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
