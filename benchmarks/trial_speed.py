"""Trial-epochs per CPU-hour of the published space's configurations, before and after the speed levers.

Each trial is `models.train.train` on the full shared stage1_train, in its own process
with one CPU thread, two at a time on the 2 cores: the way the published search runs its
trials (`--max-concurrent 2`, 1 CPU each). "before" is the code of issue 13 (commit
`BEFORE_REV`, checked out into a temporary git worktree: float32, one train step per call
into TensorFlow, validation through Keras' `predict_on_batch`); "after" is this checkout
with `precision: mixed`. Both use the published space's fixed settings (128-px crops,
batch 16, validation every 2 epochs on the whole validation images) and the same seed and
split; every (configuration, setting) runs `repeats` times. Jobs are queued
before/after alternately on two workers, so both settings share the machine alike.

The figure is the ratio of trial-epochs per CPU-hour (after / before, all runs pooled);
the validation IoU after the same epochs is reported per setting with its spread over
the repeats, to show the speed is not bought with accuracy.
"""

from __future__ import annotations

import json
import logging
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import REPO, dsb2018_zip, run_python, source_trees

NAME = "trial_speed"
MEASURE = "trial-epochs per CPU-hour, published space's configurations, after / before the speed levers"
TARGET = ">= 1.5x, val IoU after equal epochs within noise"

log = logging.getLogger(__name__)

SPACE = REPO / "search" / "spaces" / "dsb2018_cpu.yaml"
#: issue 13's code (the published search and its proof ran on it)
BEFORE_REV = "6453318"
#: setting -> (git revision or None for this checkout, TrialConfig changes)
SETTINGS = {"before": (BEFORE_REV, {}), "after": (None, {"precision": "mixed"})}
#: one trial, run by `python -c` against the tree under test (only models.train and the config,
#: which both revisions have)
JOB = """
import json, sys, time
from nuclei_search.models.train import train
from nuclei_search.config import TrialConfig
job = json.loads(sys.argv[1])
started = time.perf_counter()
result = train(TrialConfig.from_dict(job["config"]), cpus=1)
seconds = time.perf_counter() - started
last = result.history[-1]
print("\\n" + json.dumps({**{k: job[k] for k in ("name", "setting", "repeat")}, "seconds": seconds,
    "epochs": result.epochs_run, "val_iou_last": last.get("val_iou"), "val_iou_best": result.best.get("val_iou"),
    "val_map_last": last.get("val_map"), "epoch_seconds": [r.get("epoch_seconds") for r in result.history],
    "validation_seconds": [r.get("validation_seconds") for r in result.history if "val_iou" in r]}, default=float))
"""
#: the published refit winner (f766852f in dsb2018-cpu-e5833f8_leaderboard.md; it won every search since)
WINNER = {"backbone": "mobilenetv2", "decoder_depth": 5, "learning_rate": 0.00132, "dropout": 0.00605,
          "augment": "light", "loss": "bce_dice", "boundary_channel": True}


def configurations(data: str, epochs: int) -> dict[str, dict]:
    """name -> TrialConfig values: the space's first start_from entry (README recipe) and the winner."""
    import yaml

    space = yaml.safe_load(SPACE.read_text())
    fixed = {k: v for k, v in space["fixed"].items() if k != "data"}
    fixed.update(data=data, epochs=epochs)
    return {"readme_recipe": {**fixed, **space["start_from"][0]}, "published_winner": {**fixed, **WINNER}}


def _subprocess(job: dict, trees: dict[str, Path], storage: Path | None) -> dict:
    done = storage / f"{job['name']}-{job['setting']}-seed{job['repeat']}.json" if storage else None
    if done is not None and done.is_file():
        return json.loads(done.read_text())
    out = run_python(JOB, json.dumps(job), tree=trees[job["setting"]], what=f"{job['name']} {job['setting']}")
    log.info("%s %s seed %d: %d epochs in %.0f s, val_iou %.4f", out["name"], out["setting"], out["repeat"],
             out["epochs"], out["seconds"], out["val_iou_last"])
    if done is not None:
        done.write_text(json.dumps(out))
    return out


def summarise(runs: list[dict]) -> dict:
    by_setting: dict[str, dict] = {}
    for setting in SETTINGS:
        rows = [r for r in runs if r["setting"] == setting]
        epochs, seconds = sum(r["epochs"] for r in rows), sum(r["seconds"] for r in rows)
        by_setting[setting] = {"trial_epochs_per_cpu_hour": epochs / (seconds / 3600.0), "runs": len(rows)}
        for name in sorted({r["name"] for r in rows}):
            ious = [r["val_iou_last"] for r in rows if r["name"] == name]
            by_setting[setting][name] = {"val_iou_last": ious, "mean": statistics.fmean(ious),
                                         "seconds": [r["seconds"] for r in rows if r["name"] == name]}
    return by_setting


def run(quick: bool = False, epochs: int = 8, repeats: int = 2, storage: str | None = None) -> dict:
    """`storage`: keep each finished trial's figures there, and reuse them when run again."""
    from benchmarks.common import result

    data = "synthetic:24" if quick else str(dsb2018_zip())
    epochs, repeats = (2, 1) if quick else (epochs, repeats)
    jobs = []
    for repeat in range(repeats):
        for name, values in configurations(data, epochs).items():
            for setting, (_, changes) in SETTINGS.items():
                config = {**values, **changes, "seed": repeat, **({"image_size": 64} if quick else {})}
                jobs.append({"name": name, "setting": setting, "repeat": repeat, "config": config})
    # Prepare the data cache once, before the workers race for it.
    from nuclei_search.data_pipeline.loader import load_data
    from nuclei_search.config import TrialConfig

    load_data(TrialConfig.from_dict(jobs[0]["config"]))
    folder = Path(storage) if storage else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with source_trees({s: rev for s, (rev, _) in SETTINGS.items()}) as trees, ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda job: _subprocess(job, trees, folder), jobs))
    summary = summarise(runs)
    ratio = summary["after"]["trial_epochs_per_cpu_hour"] / summary["before"]["trial_epochs_per_cpu_hour"]
    return result(NAME, MEASURE, TARGET, ratio, "x", ratio >= 1.5, epochs=epochs, repeats=repeats,
                  settings={k: {"revision": rev or "this checkout", "config": c} for k, (rev, c) in SETTINGS.items()},
                  summary=summary, runs=runs)

