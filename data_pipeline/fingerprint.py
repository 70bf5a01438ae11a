"""Content keys and quick summaries of a data source.

`source_fingerprint` keys the prepared cache: for a zip it hashes each entry's name,
CRC32 and size from the central directory (no data read, yet content-keyed); for a
folder it hashes the relative paths and bytes of its images and masks.
`describe` counts images and masks and histograms image sizes from the PNG IHDR
headers (24 bytes per image, no decoding).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nuclei_search.data_pipeline.sources import DatasetSource

FINGERPRINT_LENGTH = 16


def _relevant(source: "DatasetSource") -> list[str]:
    names: list[str] = []
    for image_id in source.ids:
        names.append(source.images[image_id])
        names.extend(source.masks.get(image_id, []))
    return sorted(names)


def source_fingerprint(source: "DatasetSource") -> str:
    """A hex content key of the images and masks of a source (16 characters)."""
    digest = hashlib.sha256()
    if source.kind == "zip":
        with zipfile.ZipFile(source.path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                digest.update(f"{info.filename}\0{info.CRC:08x}\0{info.file_size}\n".encode())
    else:
        for name in _relevant(source):
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256((source.path / name).read_bytes()).digest())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def describe(source: "DatasetSource") -> dict:
    """Counts and the image size histogram ("HxW": count, most common first)."""
    sizes: Counter[str] = Counter()
    for image_id in source.ids:
        height, width = source.image_shape(image_id)
        sizes[f"{height}x{width}"] += 1
    n_masks = sum(len(source.masks.get(i, [])) for i in source.ids)
    return {
        "source": source.spec,
        "kind": source.kind,
        "path": str(source.path),
        "images": len(source.ids),
        "masks": n_masks,
        "images_without_masks": sum(1 for i in source.ids if not source.masks.get(i)),
        "image_sizes": dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
