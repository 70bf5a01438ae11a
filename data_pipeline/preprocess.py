"""Convert a data source once into a compact cache of arrays (nnU-Net style).

``prepare(spec)`` writes ``<cache>/prepared/<fingerprint>/``: one uncompressed
``<id>.npz`` per image holding ``image`` (uint8 HxWx3 RGB) and ``labels`` (uint16
HxW instance map), plus ``index.json`` (ids, shapes, nucleus counts, image types).
The folder is written under a temporary name and renamed when complete, so an
interrupted run never leaves a half cache; a later run with the same fingerprint
reuses it, a changed source gets a new fingerprint and is prepared again.

Image type heuristic (``image_type``): an image whose pixels are visibly coloured
(mean per-pixel channel spread max(RGB)-min(RGB) above 12 gray levels) is
``histology``; otherwise a dark image (median gray level below 100, i.e. mostly dark
background) is ``fluorescence``; anything else is ``brightfield``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nuclei_search.data_pipeline.cache import default_cache_dir, resolve_cache_dir
from nuclei_search.data_pipeline.fingerprint import source_fingerprint
from nuclei_search.data_pipeline.sources import DatasetSource, open_source
from nuclei_search.data_pipeline.targets import labels_from_masks
from nuclei_search.errors import DataError

log = logging.getLogger(__name__)

PREPARE_VERSION = 1
INDEX_NAME = "index.json"
IMAGE_TYPES = ("fluorescence", "brightfield", "histology")
COLOUR_SPREAD = 12.0
DARK_MEDIAN = 100.0


def image_type(image: np.ndarray) -> str:
    """fluorescence | brightfield | histology for a uint8 RGB image (see module doc)."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 65536)))
    sample = image[::step, ::step].astype(np.int16)
    spread = float((sample.max(axis=2) - sample.min(axis=2)).mean())
    if spread > COLOUR_SPREAD:
        return "histology"
    return "fluorescence" if float(np.median(sample.mean(axis=2))) < DARK_MEDIAN else "brightfield"


@dataclass
class PreparedDataset:
    """A prepared cache folder: ids, their types and shapes, and array loading."""

    root: Path
    fingerprint: str
    source: str
    ids: list[str]
    types: dict[str, str]
    shapes: dict[str, tuple[int, int]]
    n_nuclei: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "PreparedDataset":
        root = Path(root)
        try:
            index = json.loads((root / INDEX_NAME).read_text())
            records = index["records"]
            return cls(
                root=root,
                fingerprint=index["fingerprint"],
                source=index["source"],
                ids=list(index["ids"]),
                types={i: records[i]["type"] for i in index["ids"]},
                shapes={i: tuple(records[i]["shape"]) for i in index["ids"]},
                n_nuclei={i: int(records[i]["n_nuclei"]) for i in index["ids"]},
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"prepared data folder {root} is unreadable ({exc}); delete it and prepare again") from None

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 HxWx3, labels uint16 HxW)."""
        path = self.root / f"{image_id}.npz"
        try:
            with np.load(path) as arrays:
                return arrays["image"], arrays["labels"]
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"prepared array {path} is unreadable ({exc}); delete {self.root} and prepare again") from None

    def load_many(self, ids: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.load(i) for i in ids]

    def type_counts(self) -> dict[str, int]:
        counts = {t: 0 for t in IMAGE_TYPES}
        for t in self.types.values():
            counts[t] = counts.get(t, 0) + 1
        return counts


# --------------------------------------------------------------------------- workers
_WORKER_SOURCE: DatasetSource | None = None
_WORKER_OUT: Path | None = None


def _init_worker(source: DatasetSource, out: Path) -> None:
    global _WORKER_SOURCE, _WORKER_OUT
    _WORKER_SOURCE, _WORKER_OUT = source, out


def _prepare_one(image_id: str) -> dict:
    source, out = _WORKER_SOURCE, _WORKER_OUT
    assert source is not None and out is not None
    image = source.read_image(image_id)
    labels = labels_from_masks(source.iter_masks(image_id, image.shape[:2]), shape=image.shape[:2])
    with open(out / f"{image_id}.npz", "wb") as fh:
        np.savez(fh, image=image, labels=labels)
    return {
        "id": image_id,
        "shape": [int(image.shape[0]), int(image.shape[1])],
        "n_masks": len(source.mask_names(image_id)),
        "n_nuclei": int(len(np.unique(labels)) - 1),
        "type": image_type(image),
    }


def _run(source: DatasetSource, ids: list[str], out: Path, workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(ids), desc="prepare", unit="img", disable=not progress)
    records: list[dict] = []
    try:
        if workers > 1 and len(ids) > 1:
            if not multiprocessing.current_process().daemon:
                return _run_in_workers(source, ids, out, workers, bar)
            log.info("cannot start worker processes here (a daemonic process); preparing in-process")
        _init_worker(source, out)
        for image_id in ids:
            records.append(_prepare_one(image_id))
            bar.update(1)
        return records
    except BaseException:
        bar.leave = False  # clear the bar so the error stands alone
        raise
    finally:
        _init_worker(None, None)  # type: ignore[arg-type]
        bar.close()


def _run_in_workers(source: DatasetSource, ids: list[str], out: Path, workers: int, bar) -> list[dict]:
    """The images prepared by `workers` processes, in the order they finish.

    A `ProcessPoolExecutor`, not a `multiprocessing.Pool`: when an image fails, the pool's
    `terminate()` kills workers that may be writing a result, and its join of the result
    handler can then wait for ever (CPython gh-78178; it hung this project's test suite for
    11 minutes once). The executor lets the images being prepared finish and cancels the rest."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(source, out))
    records: list[dict] = []
    try:
        for future in as_completed([pool.submit(_prepare_one, image_id) for image_id in ids]):
            records.append(future.result())
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return records


# --------------------------------------------------------------------------- API
STALE_SECONDS = 6 * 3600


def _remove_stale_temporaries(prepared_root: Path) -> None:
    """Delete temporary folders of prepare runs killed long ago (never a live one)."""
    now = time.time()
    for tmp in prepared_root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def find_prepared(source: DatasetSource, cache_dir: str | os.PathLike | None = None,
                  limit: int | None = None) -> PreparedDataset | None:
    """The prepared cache of `source` if it exists already (nothing is written)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    root = cache / "prepared" / prepared_fingerprint(source_fingerprint(source), limit)
    return PreparedDataset.open(root) if (root / INDEX_NAME).is_file() else None


def prepared_fingerprint(source_key: str, limit: int | None) -> str:
    text = f"{source_key}|prepare-v{PREPARE_VERSION}|limit={limit}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare(spec: str | os.PathLike = "synthetic", cache_dir: str | os.PathLike | None = None,
            progress: bool = False, limit: int | None = None, workers: int | None = None) -> PreparedDataset:
    """Prepare a data source into the cache once and return it (see module doc).

    `limit` keeps the first N ids (sorted); `workers` defaults to os.cpu_count().
    """
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1 (got {limit})")
    cache = resolve_cache_dir(cache_dir)
    source = open_source(spec, cache_dir=cache, require_masks=True)
    fingerprint = prepared_fingerprint(source_fingerprint(source), limit)
    prepared_root = cache / "prepared"
    final = prepared_root / fingerprint
    if (final / INDEX_NAME).is_file():
        log.info("reusing prepared data %s", final)
        return PreparedDataset.open(final)

    ids = source.ids[:limit] if limit else source.ids
    workers = max(1, int(workers or os.cpu_count() or 1))
    prepared_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(prepared_root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fingerprint}-", dir=prepared_root))
    start = time.perf_counter()
    try:
        records = _run(source, ids, tmp, workers, progress)
        by_id = {r.pop("id"): r for r in records}
        index = {
            "version": PREPARE_VERSION,
            "fingerprint": fingerprint,
            "source": str(spec),
            "source_path": str(source.path),
            "limit": limit,
            "ids": sorted(by_id),
            "records": {i: by_id[i] for i in sorted(by_id)},
        }
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1))
        try:
            tmp.rename(final)  # atomic: the folder appears complete or not at all
        except OSError:
            if not (final / INDEX_NAME).is_file():  # not a race lost to another process
                raise
            log.info("another process prepared %s first; using it", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    source.close()
    log.info("prepared %d images from %s into %s in %.1f s", len(ids), spec, final, time.perf_counter() - start)
    return PreparedDataset.open(final)
