"""Cached load vs decoding the raw zip: the whole real stage1_train, one process each.

Raw: `DatasetSource.read_labels` decodes each image PNG and every one of its mask PNGs
out of the zip and builds the instance-label map (what `data prepare` does once).
Cached: `PreparedDataset.load` reads the same (image, labels) pair from the prepared
cache. Both produce identical arrays (checked on every image).
"""

from __future__ import annotations

import logging

import numpy as np

from benchmarks.common import dsb2018_zip, result, timer

NAME = "data_cache"
MEASURE = "data: cached load vs decoding the raw zip (image + all masks → labels)"
TARGET = ">= 10x faster"

log = logging.getLogger(__name__)


def run(quick: bool = False) -> dict:
    from nuclei_search.data_pipeline.preprocess import prepare
    from nuclei_search.data_pipeline.sources import open_source

    zip_path = dsb2018_zip()
    with timer() as t_open:
        prepared = prepare(str(zip_path))  # builds the cache on first use, reuses it afterwards
    ids = prepared.ids[:8] if quick else prepared.ids
    source = open_source(str(zip_path))
    masks = sum(len(source.mask_names(i)) for i in ids)
    with timer() as t_raw:
        raw = [source.read_labels(i) for i in ids]
    with timer() as t_cached:
        cached = [prepared.load(i) for i in ids]
    source.close()
    for image_id, (ri, rl), (ci, cl) in zip(ids, raw, cached):
        if not (np.array_equal(ri, ci) and np.array_equal(rl, cl)):
            raise AssertionError(f"cached arrays of {image_id} differ from the zip")
    speedup = t_raw() / t_cached()
    log.info("raw %.2f s, cached %.2f s for %d images (%d masks)", t_raw(), t_cached(), len(ids), masks)
    return result(
        NAME, MEASURE, TARGET, speedup, "x", speedup >= 10,
        images=len(ids), masks=masks, raw_zip_seconds=t_raw(), cached_seconds=t_cached(),
        prepare_or_reuse_seconds=t_open(), cache_bytes=sum(p.stat().st_size for p in prepared.root.glob("*.npz")),
    )
