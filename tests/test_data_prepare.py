"""prepare(): the array cache, its reuse, re-preparation and atomicity."""

import json
import shutil

import cv2
import numpy as np
import pytest

from nuclei_search.data_pipeline.preprocess import PreparedDataset, prepare
from nuclei_search.data_pipeline.sources import open_source
from nuclei_search.cli import main
from nuclei_search.errors import DataError


def test_prepare_writes_arrays_and_index(tmp_path, synthetic_folder):
    prepared = prepare(synthetic_folder, cache_dir=tmp_path, workers=1)
    assert prepared.root == tmp_path.resolve() / "prepared" / prepared.fingerprint
    source = open_source(synthetic_folder)
    assert prepared.ids == source.ids and prepared.source == str(synthetic_folder)
    assert set(prepared.types.values()) == {"fluorescence", "brightfield", "histology"}
    index = json.loads((prepared.root / "index.json").read_text())
    assert index["ids"] == prepared.ids
    for image_id in prepared.ids[:3]:
        image, labels = prepared.load(image_id)
        assert image.dtype == np.uint8 and image.shape == (*prepared.shapes[image_id], 3)
        assert labels.dtype == np.uint16 and labels.shape == prepared.shapes[image_id]
        assert prepared.n_nuclei[image_id] == len(source.mask_names(image_id)) == labels.max()
        np.testing.assert_array_equal(image, source.read_image(image_id))
    assert len(prepared.load_many(prepared.ids[:2])) == 2
    assert [p.name for p in prepared.root.parent.iterdir()] == [prepared.fingerprint]  # no temp left


def test_reuse_and_reprepare_on_change(tmp_path, synthetic_folder):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_folder, folder)
    cache = tmp_path / "cache"
    first = prepare(folder, cache_dir=cache, workers=2)  # the process-pool path
    stamp = (first.root / "index.json").stat().st_mtime_ns
    again = prepare(folder, cache_dir=cache, workers=2)
    assert again.root == first.root and (again.root / "index.json").stat().st_mtime_ns == stamp
    # change one mask: new fingerprint, prepared again
    image_id = first.ids[0]
    mask_path = sorted((folder / image_id / "masks").glob("*.png"))[0]
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    mask[:] = 0
    mask[:3, :3] = 255
    cv2.imwrite(str(mask_path), mask)
    changed = prepare(folder, cache_dir=cache, workers=1)
    assert changed.fingerprint != first.fingerprint
    assert changed.load(image_id)[1][0, 0] == 1
    limited = prepare(folder, cache_dir=cache, limit=3, workers=1)
    assert limited.ids == changed.ids[:3] and limited.fingerprint != changed.fingerprint


def test_interrupted_prepare_leaves_no_cache(tmp_path, synthetic_folder):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_folder, folder)
    last = sorted(p.name for p in folder.iterdir())[-1]
    (folder / last / "images" / f"{last}.png").write_bytes(b"broken")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"{last}.png"):
        prepare(folder, cache_dir=cache, workers=2)
    assert list((cache / "prepared").iterdir()) == []


def test_prepared_dataset_open_bad_folder(tmp_path):
    with pytest.raises(DataError, match="unreadable"):
        PreparedDataset.open(tmp_path)


def test_cli_prepare_synthetic_default(tmp_path, capsys):
    assert main(["data", "prepare", "--cache-dir", str(tmp_path), "--workers", "1", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "prepared 5 images" in out and "fingerprint:" in out and str(tmp_path) in out
    assert (tmp_path / "synthetic").is_dir()  # synthetic:48 generated once into the cache
    assert main(["data", "info", "synthetic", "--cache-dir", str(tmp_path), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 48 and info["prepared"] is None and info["image_types"] is None
    assert main(["data", "prepare", "synthetic", "--cache-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["data", "info", "synthetic", "--cache-dir", str(tmp_path), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["prepared"] and sum(info["image_types"].values()) == 48


def _prepare_in_a_process(args):
    spec, cache = args
    prepared = prepare(spec, cache_dir=cache, workers=1)
    return prepared.fingerprint, prepared.ids


def test_processes_preparing_one_source_at_once_leave_one_complete_copy(tmp_path):
    """Trials starting together on several nodes prepare into one shared cache at the same time."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_prepare_in_a_process, [("synthetic:8", str(tmp_path))] * 3)
    assert len(set(f for f, _ in results)) == 1 and all(len(ids) == 8 for _, ids in results)
    prepared = [p.name for p in (tmp_path / "prepared").iterdir()]
    assert prepared == [results[0][0]], prepared  # one copy, no temporary left
    reopened = prepare("synthetic:8", cache_dir=tmp_path)
    assert all(reopened.load(i)[0].size for i in reopened.ids)
