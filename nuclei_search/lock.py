"""One writer per folder: an experiment (run, resume, KerasTuner) or an export being written.

A command that writes a folder holds an advisory `flock` on `<folder>/.nuclei-search.lock`
for as long as it writes, and records in the file who it is (pid, host, command, since
when). A second writer gets one line naming the first and changes nothing. The kernel
drops the lock when its process ends, however it ends (kill -9 included), so a lock file
left behind by a dead process on this host is taken over with a warning. A lock file left
by a process on another host (a shared filesystem) is refused while that record stands:
this host cannot tell whether the process is alive. The lock file is removed when its
holder finishes.

On a URI storage (s3://, gs://) the lock is on the driver's local mirror, so it keeps two
commands on one machine apart; two machines writing one bucket are not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from nuclei_search.errors import ExperimentError

LOCK_FILE = ".nuclei-search.lock"

log = logging.getLogger(__name__)


def holder_text(holder: dict) -> str:
    """'pid 123 on host h since 2026-12-02 11:40:01 UTC (nuclei-search run ...)'."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since") or 0)))
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {since}{command}"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        value = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"command": "unreadable lock record"}
    return value if isinstance(value, dict) else {}


@contextlib.contextmanager
def writer_lock(folder: Path, what: str, command: str | None = None) -> Iterator[None]:
    """Hold `folder`'s lock while the block runs; ExperimentError if another process holds it.

    `what` names the folder in messages ("experiment", "export folder"). The folder is created
    if missing, and removed again at the end (with the parents created for it) if it is left
    empty. Where no lock file can be written (a read-only or full storage) the block runs
    without one: the command's own check then reports the storage in one line.
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        missing = []
    fd = None
    try:
        if folder.is_dir():
            fd = _acquire(folder / LOCK_FILE, folder, what,
                          command or " ".join(["nuclei-search", *sys.argv[1:]])[:200])
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()
            os.close(fd)
        for path in missing:  # innermost first; only if empty: a refused command leaves no folder
            with contextlib.suppress(OSError):
                path.rmdir()


def _acquire(path: Path, folder: Path, what: str, command: str) -> int | None:
    for _ in range(10):  # retries only when the holder removed the file between open and flock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # a read-only folder: nobody writes here
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            deadline = time.monotonic() + 2.0
            while not holder and time.monotonic() < deadline:  # it writes its record just after taking the lock
                time.sleep(0.05)
                holder = _read(fd)
            os.close(fd)
            raise ExperimentError(
                f"{what} {folder} is in use by {holder_text(holder)}; wait for it to finish or stop it, "
                f"then try again") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            os.close(fd)
            continue
        previous = _read(fd)
        if previous.get("host") not in (None, socket.gethostname()):  # alive? this host cannot tell
            os.close(fd)
            raise ExperimentError(
                f"{what} {folder} is recorded as in use by {holder_text(previous)}; if that process has "
                f"ended, remove {path} and try again")
        if previous:
            log.warning("%s %s: taking over the lock left by %s, which is no longer running",
                        what, folder, holder_text(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        except OSError:  # a full storage: no lock, and no empty lock file left behind
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
            return None
        return fd
    raise ExperimentError(f"{what} {folder}: could not take its lock {path} (it keeps changing)")
