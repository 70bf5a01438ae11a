"""Output folders that never lose what is already on disk without --overwrite."""

from __future__ import annotations

import shutil
from pathlib import Path

from nuclei_search.errors import ExperimentError


def prepare_output_dir(out: Path, overwrite: bool, own_files: tuple[str, ...]) -> None:
    """Refuse an existing non-empty folder unless overwrite; then remove only `own_files` in it."""
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExperimentError(f"--out {out} already holds files; pass --overwrite to replace them")
        for name in own_files:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExperimentError(f"cannot create --out {out}: {exc.strerror or exc}") from None
