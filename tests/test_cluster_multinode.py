"""cluster.storage helpers on a URI storage (what a multi-node search writes through).

Losing a worker node mid-search (a real 3-node Ray cluster on 127.0.0.1) is a row of the
reliability matrix: tests/reliability/test_worker_node_lost.py.
"""

from __future__ import annotations


# --------------------------------------------------------------------------- URI storage helpers
def test_storage_helpers_on_a_uri(tmp_path):
    """cluster.storage through pyarrow's filesystem behind a URI (`local://`: no cloud contacted)."""
    import sqlite3

    from nuclei_search.cluster import storage as store

    bucket = tmp_path / "bucket"
    experiment = store.join(f"local://{bucket}/x/", "exp")
    assert experiment == f"local://{bucket}/x/exp"
    # a query string (S3 endpoint, region...) stays at the end
    assert store.join("s3://b/x?endpoint_override=127.0.0.1:9000", "exp", "a.json") == \
        "s3://b/x/exp/a.json?endpoint_override=127.0.0.1:9000"
    assert store.is_remote("s3://b/x") and store.is_remote(experiment)
    assert not store.is_remote("file:///tmp/x") and not store.is_remote("/tmp/x") and not store.is_remote(None)

    local = tmp_path / "driver"
    local.mkdir()
    (local / "nuclei_search.json").write_text('{"name": "exp"}')
    (local / "space.yaml").write_text("fixed: {}\n")
    assert not store.exists(experiment)
    assert store.upload(local, ["nuclei_search.json", "space.yaml", "missing.txt"], experiment) == [
        "nuclei_search.json", "space.yaml"]
    assert store.exists(store.join(experiment, "space.yaml"))
    assert (bucket / "x/exp/nuclei_search.json").read_text() == '{"name": "exp"}'

    # a consistent copy of a live SQLite file
    db = local / "optuna.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (v integer)")
        conn.execute("insert into t values (7)")
    conn.close()
    assert store.upload_sqlite(db, experiment) and not store.upload_sqlite(local / "none.db", experiment)
    with sqlite3.connect(bucket / "x/exp/optuna.db") as conn:
        assert conn.execute("select v from t").fetchall() == [(7,)]
    conn.close()

    # Ray's files appear on the storage; another machine mirrors the folder
    (bucket / "x/exp/trial_1/checkpoint_000000").mkdir(parents=True)
    (bucket / "x/exp/trial_1/result.json").write_text('{"training_iteration": 1}\n')
    (bucket / "x/exp/trial_1/checkpoint_000000/model.keras").write_bytes(b"\0" * 3000)
    other = tmp_path / "other-machine"
    assert store.sync_down(experiment, other) == 5
    assert (other / "trial_1/checkpoint_000000/model.keras").stat().st_size == 3000
    assert store.sync_down(experiment, other) == 0  # nothing new
    (bucket / "x/exp/trial_1/result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n')
    (other / "optuna.db").write_bytes(b"live study")  # the driver's own study is never overwritten
    assert store.sync_down(experiment, other, keep_local=["optuna.db"]) == 1
    assert (other / "trial_1/result.json").read_text().count("\n") == 2
    assert (other / "optuna.db").read_bytes() == b"live study"
    assert not [p for p in other.rglob(".*")]  # no temporary download left behind

    # download: named files only, missing ones skipped, local ones kept on request
    fresh = tmp_path / "resume-here"
    assert store.download(experiment, ["nuclei_search.json", "nope.json"], fresh) == ["nuclei_search.json"]
    (fresh / "optuna.db").write_text("mine")
    assert store.download(experiment, ["optuna.db"], fresh, overwrite=False) == []
    assert (fresh / "optuna.db").read_text() == "mine"

    store.delete(experiment)
    assert not store.exists(experiment) and (bucket / "x").is_dir()
    store.delete(experiment)  # already gone: fine
