"""Data for nucleus segmentation: sources, fingerprint, prepare, split, load.

Public API (import from the submodules; this package imports nothing at import time):

* ``sources.open_source(spec, cache_dir=None, require_masks=True) -> DatasetSource``
* ``sources.safe_extract(zip_path, dest, members=None) -> list[Path]``
* ``fingerprint.source_fingerprint(source) -> str`` / ``fingerprint.describe(source) -> dict``
* ``preprocess.prepare(spec, cache_dir=None, progress=False, limit=None, workers=None) -> PreparedDataset``
* ``split.train_val_split(ids, types, val_fraction, seed) -> (train_ids, val_ids)``
* ``augment.normalize_image(image_uint8)`` / ``augment.normalize_image_tf(image_uint8)``
* ``loader.make_train_dataset(prepared, ids, config, cpus=None) -> tf.data.Dataset``
* ``loader.val_arrays(prepared, ids)`` / ``loader.steps_per_epoch(n_train_ids, config)``
* ``targets.labels_from_masks / semantic_mask / boundary_map / touching_borders``
* ``synthetic.generate_dataset(out_dir, n_images=48, seed=0)``
* ``cache.default_cache_dir() / cache.resolve_cache_dir(cache_dir)``
"""
