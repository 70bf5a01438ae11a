"""Reading experiments written before the packages moved under `nuclei_search`.

Ray Tune pickles a few of the search's own objects into an experiment's saved state (the
trial-folder naming function, the refit searcher...). An experiment started before the
move names them by their old top-level modules (`search.runner`, ...). While such a state
is read (`old_module_names()`), those names resolve to the modules' new homes; afterwards
they are gone again, so they never shadow a user's own `search` or `models`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from contextlib import contextmanager
from typing import Iterator

OLD_NAMES = ("data_pipeline", "models", "cluster", "search", "results")


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)  # the module itself, under its old name too

    def exec_module(self, module) -> None:
        pass


class _OldNames(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in OLD_NAMES:
            return None
        return importlib.util.spec_from_loader(name, _Alias(f"nuclei_search.{name}"))


@contextmanager
def old_module_names() -> Iterator[None]:
    """Within the block, `search.runner` etc. import `nuclei_search.search.runner` etc. (names
    this process has already imported are left alone; the aliases are removed afterwards)."""
    finder = _OldNames()
    before = set(sys.modules)
    sys.meta_path.insert(0, finder)  # first: not a checkout's top-level folder of the same name
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.split(".")[0] in OLD_NAMES and getattr(sys.modules[name], "__name__", name) != name:
                del sys.modules[name]
