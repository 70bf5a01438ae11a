"""Put back the driver files a kill cut short while Ray copied them into the experiment folder.

Ray Tune writes its experiment state (`experiment_state-*.json`, the searcher's
`searcher-state-*.pkl`, ...) into a driver staging folder on the driver's machine,
atomically, then copies that folder into the experiment folder in the background. A driver
killed during the copy leaves the file being copied cut short there, and `Tuner.restore`
fails on it with a JSON or pickle traceback. The staging folder outlives the driver
(`<ray temp>/session_*/artifacts/<start>/<name>/driver_artifacts`), and its copy is whole
and at least as new: it is put back, the cut file kept beside as `*.cut`.

A file is whole if it parses: JSON as JSON, a pickle (whatever its suffix) by walking its
opcodes to STOP (`pickletools`, which executes nothing). A copy is taken for the same run's
when the experiment name and the file name (which holds the driver's start time to the
second) match. Local experiment folders only; a driver on another machine than the one
resuming leaves its staging folder there: a cut file without a whole copy is then a one-line
error.
"""

from __future__ import annotations

import json
import logging
import os
import pickletools
import shutil
from fnmatch import fnmatch
from pathlib import Path

from nuclei_search.contract import RAY_STATE_PATTERN
from nuclei_search.errors import ExperimentError
from nuclei_search.internals import ray_driver_staging_folders

log = logging.getLogger(__name__)

#: the driver files Ray writes at the top of an experiment folder (this project's own are written atomically)
RAY_DRIVER_FILES = (RAY_STATE_PATTERN, "searcher-state-*.pkl", "search_gen_state-*.json",
                    "basic-variant-state-*.json", "tuner.pkl")


def is_whole(path: Path) -> bool:
    """The file parses to its end (a cut JSON or pickle does not). Told apart by content: Ray
    pickles some `.json` files (`search_gen_state-*.json`), and a pickle starts with its protocol."""
    try:
        data = path.read_bytes()
        if data.startswith(b"\x80"):
            for _ in pickletools.genops(data):
                pass
        else:
            json.loads(data)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return True


def cut_short(path: Path) -> ExperimentError:
    """The one-line error for a driver file cut short with no whole copy to put back."""
    return ExperimentError(f"{path} is cut short (the driver was killed while Ray copied it) and no whole copy "
                           f"was found in Ray's session folders; Ray cannot restore this experiment from it")


def _whole_copy(name: str, staging: list[Path]) -> Path | None:
    """The newest whole copy of a driver file among Ray's staging folders."""
    copies = [folder / name for folder in staging if (folder / name).is_file()]
    for copy in sorted(copies, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_whole(copy):
            return copy
    return None


def recover_cut_state(experiment: Path) -> list[str]:
    """Replace every cut driver file at the top of the experiment folder by the newest whole
    copy in Ray's staging folders; returns one line per file put back."""
    cut = [p for p in sorted(experiment.iterdir())
           if p.is_file() and any(fnmatch(p.name, pattern) for pattern in RAY_DRIVER_FILES) and not is_whole(p)]
    if not cut:
        return []
    staging = ray_driver_staging_folders(experiment.name)
    recovered = []
    for path in cut:
        copy = _whole_copy(path.name, staging)
        if copy is None:
            raise cut_short(path)
        backup = path.with_name(path.name + ".cut")
        if not backup.exists():
            os.replace(path, backup)
        temporary = path.with_name(path.name + ".tmp")
        shutil.copyfile(copy, temporary)
        os.replace(temporary, path)
        line = f"{path.name} was cut short by a kill while Ray copied it; put back Ray's whole copy from {copy.parent}"
        log.warning(line)
        recovered.append(line)
    return recovered
