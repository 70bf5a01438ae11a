"""TensorFlow's C++ start-up lines off the console.

TensorFlow 2.19+ writes its start-up lines (the absl notice, oneDNN, cudart, CPU
features, cuInit) through absl before logging is initialised, so TF_CPP_MIN_LOG_LEVEL no
longer filters them (tensorflow/tensorflow#100442). They are kept off stderr, as that
variable asks, by pointing file descriptor 2 at /dev/null while TensorFlow is imported
(INFO lines: level >= 1) and while it looks for devices (cuInit's ERROR line: level 3, the
CLI's and the trials' default); Python exceptions raised meanwhile still reach stderr
afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Iterator


def _level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def wants_quiet(severity: str = "info") -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL filters lines of `severity` ("info": the import lines,
    "error": cuInit's failure while looking for devices), as its documentation says it should."""
    return _level() >= (3 if severity == "error" else 1)


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
    """Import TensorFlow now (a no-op once imported), through the quiet import below."""
    quiet_tensorflow_import()
    importlib.import_module("tensorflow")


class _QuietTensorFlowImport:
    """A meta-path finder: the first `import tensorflow` (from wherever, e.g. through keras)
    runs with `native_stderr_silenced`; then it steps aside. Nothing is imported early, so a
    command refused for bad input still fails in a fraction of a second."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with native_stderr_silenced(wants_quiet()):
                run(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_tensorflow_import() -> None:
    """Make the process's first TensorFlow import quiet (see `_QuietTensorFlowImport`)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
