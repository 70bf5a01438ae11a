"""Resolve a data source spec into a uniform reader of Kaggle-layout data.

A spec is one of:

* ``synthetic`` / ``synthetic:N`` — generated once into the cache (see synthetic.py);
* ``kaggle`` — ``stage1_train.zip`` of the DSB2018 competition, downloaded once;
* a folder in Kaggle layout ``<id>/images/<id>.png`` + ``<id>/masks/*.png``
  (possibly nested one level, e.g. ``stage1_train/<id>/...``);
* a zip in that layout (entries may sit under a prefix folder), or Kaggle's
  competition zip holding ``stage1_train.zip`` (the inner zip is safely extracted
  into the cache once).

PNGs are read straight out of zips; nothing is extracted to read a dataset.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from nuclei_search.data_pipeline.cache import resolve_cache_dir
from nuclei_search.data_pipeline.download import download_stage1_train
from nuclei_search.data_pipeline.images import decode_image, decode_mask, png_size
from nuclei_search.errors import DataError

log = logging.getLogger(__name__)

SYNTHETIC_DEFAULT_N = 48
SYNTHETIC_SEED = 0
INNER_ZIP_NAME = "stage1_train.zip"
_DRIVE = re.compile(r"^[A-Za-z]:")


def unknown_source(spec: str) -> DataError:
    return DataError(
        f"unknown data source '{spec}': expected synthetic, synthetic:N, kaggle, "
        "a Kaggle-layout folder or a .zip"
    )


# --------------------------------------------------------------------------- zip safety
def check_entry_name(name: str, archive: str | os.PathLike) -> None:
    """DataError if a zip entry name could escape the extraction folder (zip-slip)."""
    parts = re.split(r"[\\/]+", name)
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise DataError(
            f"unsafe entry '{name}' in zip {archive}: absolute paths, drive letters "
            "and '..' components are refused (zip-slip)"
        )


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open a zip, DataError 'X is not a zip file' otherwise; every entry name is checked."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DataError(f"{path} is not a zip file") from None
    for name in zf.namelist():
        check_entry_name(name, path)
    return zf


#: A PNG of H×W pixels never needs more than H × (W × 8 + 1) bytes (4 channels of 16 bits, one
#: filter byte a row, stored uncompressed) plus its chunks; PNG_SLACK covers ancillary chunks.
PNG_MAX_BYTES_PER_PIXEL = 8
PNG_SLACK = 1 << 20
#: Any other entry read into memory (a JPEG or TIFF given to `predict`) stays below this
#: (an 8000×8000 RGB TIFF is 192 MB).
MAX_ENTRY_BYTES = 1 << 30


def png_byte_limit(height: int, width: int) -> int:
    """The most bytes a PNG of that size can hold (see PNG_MAX_BYTES_PER_PIXEL)."""
    return height * (width * PNG_MAX_BYTES_PER_PIXEL + 1) + PNG_SLACK


def read_zip_entry(zf: zipfile.ZipFile, name: str, display: str, size: int | None = None) -> bytes:
    """The bytes of entry `name` (the first `size` if given), never more than it can need.

    A PNG entry is bounded by what its header (width, height) allows: an entry declared
    bigger is refused before anything is decompressed, and one whose declared size lies is
    cut off one byte past the bound (a zip bomb never reaches memory). Damaged compressed
    data is a DataError, not a zlib traceback.
    """
    import zlib

    from nuclei_search.data_pipeline.images import png_size

    try:
        info = zf.getinfo(name)
        with zf.open(info) as fh:
            if size is not None:
                return fh.read(size)
            head = fh.read(24)
            limit = MAX_ENTRY_BYTES
            what = f"the {MAX_ENTRY_BYTES >> 20} MiB allowed for an entry that is not a PNG"
            if name.lower().endswith(".png") and len(head) == 24:
                height, width = png_size(head, display)
                limit = png_byte_limit(height, width)
                what = f"a {height}x{width} PNG can need ({limit} bytes)"
            if info.file_size > limit:
                raise DataError(f"refusing {display}: {info.file_size} bytes uncompressed, more than {what} "
                                f"(a zip bomb?)")
            data = head + fh.read(limit + 1 - len(head))
            if len(data) > limit:
                raise DataError(f"refusing {display}: it decompresses to more than {what} (a zip bomb?)")
            return data
    except (zlib.error, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {display}: damaged data ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    except KeyError:
        raise DataError(f"cannot read {display}: no such entry") from None
    except OSError as exc:  # reading the archive itself failed
        raise DataError(f"cannot read {display}: {exc}") from None


def safe_extract(zip_path: str | os.PathLike, dest: str | os.PathLike,
                 members: list[str] | None = None) -> list[Path]:
    """Extract `members` (default all) of a zip into `dest`, refusing zip-slip entries.

    Every name is checked before anything is written; returns the written paths.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[Path] = []
    with open_zip(zip_path) as zf:  # checks every entry name
        names = zf.namelist() if members is None else list(members)
        for name in names:
            check_entry_name(name, zip_path)
            target = (root / name).resolve()
            if target != root and root not in target.parents:
                raise DataError(f"unsafe entry '{name}' in zip {zip_path}: escapes {dest} (zip-slip)")
        for name in names:
            written.append(Path(zf.extract(name, root)))
    return written


# --------------------------------------------------------------------------- layout scan
def _scan_layout(names: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Find `<id>/images/<id>.png` and `<id>/masks/*.png` among relative names.

    Returns (id -> image name, id -> sorted mask names).
    """
    images: dict[str, str] = {}
    extra: dict[str, list[str]] = {}
    masks: dict[str, list[str]] = {}
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if len(parts) < 3 or not parts[-1].lower().endswith(".png"):
            continue
        folder, kind, fname = parts[-3], parts[-2], parts[-1]
        key = "/".join(parts[:-2])  # the id folder, with any prefix
        if kind == "images":
            if fname[:-4] == folder:
                images[key] = name
            else:
                extra.setdefault(key, []).append(name)
        elif kind == "masks":
            masks.setdefault(key, []).append(name)
    for key, candidates in extra.items():  # tolerate one differently named image
        if key not in images and len(candidates) == 1:
            images[key] = candidates[0]
    by_id: dict[str, str] = {}
    mask_by_id: dict[str, list[str]] = {}
    for key in sorted(images):
        image_id = key.rsplit("/", 1)[-1]
        if image_id in by_id:
            raise DataError(f"image id '{image_id}' appears twice: {by_id[image_id]} and {images[key]}")
        by_id[image_id] = images[key]
        mask_by_id[image_id] = sorted(masks.get(key, []))
    return by_id, mask_by_id


# --------------------------------------------------------------------------- reader
@dataclass
class DatasetSource:
    """Uniform read access to a Kaggle-layout dataset in a folder or a zip.

    Picklable (the zip handle is reopened per process), so it can go to workers.
    """

    spec: str
    kind: str  # "zip" | "folder"
    path: Path  # the zip file or the root folder
    images: dict[str, str]  # id -> relative image name
    masks: dict[str, list[str]]  # id -> relative mask names (maybe empty)
    _zip: zipfile.ZipFile | None = field(default=None, repr=False, compare=False)
    _zip_pid: int = field(default=-1, repr=False, compare=False)

    # -- basic access --------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return sorted(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"], state["_zip_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._zip, self._zip_pid = None, -1

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def display_name(self, name: str) -> str:
        """How a file is named in messages: `archive.zip:entry` or the full path."""
        if self.kind == "zip":
            return f"{self.path}:{name}"
        return str(self.path / name)

    def image_path(self, image_id: str) -> str:
        return self.display_name(self.images[image_id])

    def mask_names(self, image_id: str) -> list[str]:
        return list(self.masks.get(image_id, []))

    def read_bytes(self, name: str, size: int | None = None) -> bytes:
        """Bytes of a relative file name (the first `size` bytes if given)."""
        if self.kind == "zip":
            return read_zip_entry(self._zipfile(), name, self.display_name(name), size)
        try:
            with open(self.path / name, "rb") as fh:
                return fh.read() if size is None else fh.read(size)
        except OSError as exc:
            raise DataError(f"cannot read {self.display_name(name)}: {exc}") from None

    # -- decoding ------------------------------------------------------------
    def image_shape(self, image_id: str) -> tuple[int, int]:
        """(H, W) from the PNG header, without decoding."""
        name = self.images[image_id]
        return png_size(self.read_bytes(name, 24), self.display_name(name))

    def read_image(self, image_id: str) -> np.ndarray:
        """uint8 RGB HxWx3."""
        name = self.images[image_id]
        return decode_image(self.read_bytes(name), self.display_name(name))

    def iter_masks(self, image_id: str, shape: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Boolean HxW masks one by one (sizes checked against `shape`)."""
        image_name = self.image_path(image_id)
        for name in self.mask_names(image_id):
            yield decode_mask(self.read_bytes(name), self.display_name(name), shape, image_name)

    def read_masks(self, image_id: str, shape: tuple[int, int] | None = None) -> list[np.ndarray]:
        """All masks of an image as boolean HxW arrays (sizes checked against `shape`)."""
        if shape is None:
            shape = self.image_shape(image_id)
        return list(self.iter_masks(image_id, shape))

    def read_labels(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 HxWx3, labels uint16 HxW); later masks win where they overlap."""
        from nuclei_search.data_pipeline.targets import labels_from_masks

        image = self.read_image(image_id)
        masks = self.iter_masks(image_id, image.shape[:2])
        return image, labels_from_masks(masks, shape=image.shape[:2])


# --------------------------------------------------------------------------- resolution
def _zip_source(spec: str, path: Path, cache_dir: str | os.PathLike | None) -> DatasetSource:
    with open_zip(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    images, masks = _scan_layout(names)
    if images:
        return DatasetSource(spec, "zip", path, images, masks)
    inner = [n for n in names if PurePosixPath(n).name == INNER_ZIP_NAME]
    if inner:
        return _zip_source(spec, _extract_inner(path, inner[0], cache_dir), cache_dir)
    raise DataError(f"no Kaggle-layout images (<id>/images/<id>.png) found in {path}")


def _extract_inner(outer: Path, name: str, cache_dir: str | os.PathLike | None) -> Path:
    """Safe-extract the inner stage1_train.zip of a competition zip into the cache, once."""
    with open_zip(outer) as zf:
        info = zf.getinfo(name)
        key = hashlib.sha256(f"{info.filename}|{info.CRC}|{info.file_size}".encode()).hexdigest()[:16]
    dest = resolve_cache_dir(cache_dir) / "sources" / key
    target = dest / INNER_ZIP_NAME
    if target.is_file():
        return target
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    try:
        log.info("extracting %s from %s into %s", name, outer, dest)
        (extracted,) = safe_extract(outer, tmp, [name])
        extracted.replace(tmp / INNER_ZIP_NAME)
        for child in list(tmp.iterdir()):
            if child.name != INNER_ZIP_NAME:
                shutil.rmtree(child, ignore_errors=True)
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _folder_source(spec: str, root: Path) -> DatasetSource:
    names: list[str] = []
    for pattern in ("*/images/*.png", "*/*/images/*.png", "*/masks/*.png", "*/*/masks/*.png"):
        names.extend(p.relative_to(root).as_posix() for p in root.glob(pattern))
    images, masks = _scan_layout(names)
    if not images:
        raise DataError(f"no Kaggle-layout images (<id>/images/<id>.png) found in {root}")
    return DatasetSource(spec, "folder", root, images, masks)


def _parse_synthetic(spec: str) -> int:
    if spec == "synthetic":
        return SYNTHETIC_DEFAULT_N
    count = spec.split(":", 1)[1]
    if not count.isdigit() or int(count) < 1:
        raise DataError(f"bad data source '{spec}': synthetic:N needs a positive image count N")
    return int(count)


def synthetic_dir(n_images: int, cache_dir: str | os.PathLike | None = None,
                  seed: int = SYNTHETIC_SEED) -> Path:
    """Generate (once) and return the cached synthetic dataset folder for N images."""
    from nuclei_search.data_pipeline.synthetic import GENERATOR_VERSION, generate_dataset

    root = resolve_cache_dir(cache_dir) / "synthetic" / f"v{GENERATOR_VERSION}-n{n_images}-seed{seed}"
    if not root.is_dir():
        try:
            generate_dataset(root, n_images=n_images, seed=seed)
        except DataError:
            if not root.is_dir():  # not a race lost to another process
                raise
    return root


def absolute_source(spec: str | os.PathLike) -> str:
    """`spec` with a relative local path made absolute (resolved against this process's
    working directory); other specs (synthetic, kaggle, absolute paths) unchanged. Needed
    before a spec crosses into processes with another working directory (Ray trials)."""
    text = str(spec).strip()
    if text == "kaggle" or text == "synthetic" or text.startswith("synthetic:"):
        return text
    path = Path(text).expanduser()
    return str(path.resolve()) if not path.is_absolute() and path.exists() else str(path)


def open_source(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                require_masks: bool = True) -> DatasetSource:
    """Resolve a data source spec to a DatasetSource (see the module docstring).

    With `require_masks`, an image without any mask is a DataError naming it.
    """
    text = str(spec).strip()
    if text == "synthetic" or text.startswith("synthetic:"):
        source = _folder_source(text, synthetic_dir(_parse_synthetic(text), cache_dir))
    elif text == "kaggle":
        path = download_stage1_train(resolve_cache_dir(cache_dir))
        source = _zip_source(text, path, cache_dir)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            source = _folder_source(text, path.resolve())
        elif path.is_file():
            if zipfile.is_zipfile(path):
                source = _zip_source(text, path.resolve(), cache_dir)
            elif path.suffix.lower() == ".zip":
                raise DataError(f"{path} is not a zip file")
            else:
                raise unknown_source(text)
        else:
            raise unknown_source(text)
    if require_masks:
        for image_id in source.ids:
            if not source.masks.get(image_id):
                raise DataError(
                    f"image {source.image_path(image_id)} has no masks "
                    f"(expected {image_id}/masks/*.png beside {image_id}/images/)"
                )
    return source
