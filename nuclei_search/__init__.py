"""nuclei-search: distributed hyperparameter search for U-Net nucleus segmentation.

The package's parts are its subpackages: ``nuclei_search.data_pipeline``, ``.models``,
``.search``, ``.cluster``, ``.results`` (and ``.cli``, ``.config``, ``.contract``...).
In the repository the first five are top-level folders (the project's layout); an
install maps them under this package (pyproject.toml, ``package-dir``), so they never
collide with a user's own ``models`` or ``search``. Run from a source checkout that is
not installed (a Ray Job's uploaded working directory, say), the same names resolve to
those folders: the checkout's root is searched for subpackages after this folder.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and not (_Path(__file__).parent / "models").is_dir():
    __path__.append(str(_checkout))  # noqa: F821  (a package's own __path__)
del _Path, _checkout
