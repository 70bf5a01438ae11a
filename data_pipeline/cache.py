"""Where prepared data, synthetic datasets and downloads are cached.

Order of precedence: an explicit ``cache_dir`` argument (``--cache-dir``), then
``$NUCLEI_SEARCH_CACHE``, then ``$XDG_CACHE_HOME/nuclei-search``, then
``~/.cache/nuclei-search``.
"""

from __future__ import annotations

import os
from pathlib import Path

from nuclei_search.errors import DataError
from nuclei_search.outputs import probe_writable, reason

ENV_VAR = "NUCLEI_SEARCH_CACHE"


def default_cache_dir() -> Path:
    """The cache folder used when none is given (not created here)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "nuclei-search"
    return Path.home() / ".cache" / "nuclei-search"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return an existing, writable cache folder; raise DataError saying how to set one."""
    path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    how = (
        f"pass --cache-dir DIR or set ${ENV_VAR} (or $XDG_CACHE_HOME) to a writable folder"
    )
    try:
        probe_writable(path)  # creates it; a read-only or full disk fails here, leaving nothing behind
    except OSError as exc:
        raise DataError(f"cache folder {path} is not writable ({reason(exc)}): {how}") from None
    return path.resolve()
