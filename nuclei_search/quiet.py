"""TensorFlow's C++ start-up lines off the console.

TensorFlow 2.19+ writes its start-up lines (the absl notice, oneDNN, cudart, CPU
features, cuInit) through absl before logging is initialised, so TF_CPP_MIN_LOG_LEVEL no
longer filters them (tensorflow/tensorflow#100442). Where the user asked for no C++ log
lines (TF_CPP_MIN_LOG_LEVEL=3, the CLI's and the trials' default) they are kept off
stderr by pointing file descriptor 2 at /dev/null while TensorFlow is imported and while
it looks for devices; Python exceptions raised meanwhile still reach stderr afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Iterator


def wants_quiet() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() == "3"


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send what C/C++ code writes to stderr (fd 2) to /dev/null while the block runs."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> None:
    """Import TensorFlow (a no-op once imported), quietly when TF_CPP_MIN_LOG_LEVEL=3."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_silenced(wants_quiet()):
        importlib.import_module("tensorflow")
