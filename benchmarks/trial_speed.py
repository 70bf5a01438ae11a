"""Trial-epochs per CPU-hour of the published space's configurations, before and after the speed levers.

Each trial is `models.train.train` on the full shared stage1_train, in its own process
with one CPU thread, two at a time on the 2 cores: the way the published search runs its
exploration trials (`--max-concurrent 2`, 1 CPU each). "before" is the code of issue 13
(commit `BEFORE_REV`, checked out into a temporary git worktree: float32, one train step per
call into TensorFlow, validation through Keras' `predict_on_batch`, every 2 epochs); "after"
is this checkout with the published space's settings (float32, several steps per execution,
the graph predictor, validation at ASHA's rungs of the published run and every 2 epochs in the
last `validation_tail` of the schedule); "after_mixed" adds `precision: mixed` (bfloat16; not
run on a CPU without bfloat16 instructions, where it would repeat "after"). All use the published
space's fixed settings (128-px crops, batch 16, whole validation images) and the same seed and
split; every (configuration, setting) runs `repeats` times. Jobs are queued setting by setting
alternately on two workers, so all settings share the machine alike.

The figure is the ratio of trial-epochs per CPU-hour (after / before, all runs pooled); the
validation IoU after the same epochs is reported per setting with its spread over the
repeats, to show the speed is not bought with accuracy. A refit trial validates by the same
plan without rungs; its ratio is derived from the measured seconds per epoch and per validation.
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
#: the published search's ASHA (`--grace-period 4`, 16 epochs): the epochs its trials always validate
PUBLISHED_MILESTONES = (4, 8, 16)
#: fields of this checkout's TrialConfig the before revision does not have (set per setting)
NEW_FIELDS = ("validation_tail",)
#: setting -> (git revision or None for this checkout, TrialConfig changes, validation milestones)
SETTINGS = {"before": (BEFORE_REV, {}, ()),
            "after": (None, {"validation_tail": "space"}, PUBLISHED_MILESTONES),
            "after_mixed": (None, {"validation_tail": "space", "precision": "mixed"}, PUBLISHED_MILESTONES)}
#: one trial, run by `python -c` against the tree under test (only models.train and the config,
#: which both revisions have)
JOB = """
import json, sys, time
from nuclei_search.models.train import train
from nuclei_search.config import TrialConfig
job = json.loads(sys.argv[1])
started = time.perf_counter()
result = train(TrialConfig.from_dict(job["config"]), cpus=1, **job["kwargs"])
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
    fixed = {k: v for k, v in space["fixed"].items() if k != "data" and k not in NEW_FIELDS}
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


def settings_here() -> dict:
    """SETTINGS without "after_mixed" on a CPU without bfloat16 instructions: `precision: mixed` trains in
    float32 there (models/precision.py), so it would only run "after" a second time."""
    from nuclei_search.models.precision import cpu_has_bf16

    if cpu_has_bf16():
        return SETTINGS
    log.info("no bfloat16 instructions on this CPU: 'after_mixed' would be 'after' again, not run")
    return {k: v for k, v in SETTINGS.items() if k != "after_mixed"}


def summarise(runs: list[dict]) -> dict:
    by_setting: dict[str, dict] = {}
    for setting in sorted({r["setting"] for r in runs}, key=list(SETTINGS).index):
        rows = [r for r in runs if r["setting"] == setting]
        epochs, seconds = sum(r["epochs"] for r in rows), sum(r["seconds"] for r in rows)
        by_setting[setting] = {"trial_epochs_per_cpu_hour": epochs / (seconds / 3600.0), "runs": len(rows)}
        validations = [v for r in rows for v in r["validation_seconds"] if v is not None]
        epoch_seconds = [e for r in rows for e in r["epoch_seconds"] if e is not None]
        if validations and epoch_seconds:  # the before revision does not time them
            by_setting[setting].update(seconds_per_epoch=statistics.fmean(epoch_seconds),
                                       seconds_per_validation=statistics.fmean(validations),
                                       validations_per_run=len(validations) / len(rows))
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
    import yaml

    tail = yaml.safe_load(SPACE.read_text())["fixed"].get("validation_tail", 1.0)
    settings = settings_here()
    jobs = []
    for repeat in range(repeats):
        for name, values in configurations(data, epochs).items():
            for setting, (_, changes, milestones) in settings.items():
                changes = {k: tail if v == "space" else v for k, v in changes.items()}
                config = {**values, **changes, "seed": repeat, **({"image_size": 64} if quick else {})}
                kwargs = {"validation_milestones": list(milestones)} if milestones else {}
                jobs.append({"name": name, "setting": setting, "repeat": repeat, "config": config, "kwargs": kwargs})
    # Prepare the data cache once, before the workers race for it.
    from nuclei_search.data_pipeline.loader import load_data
    from nuclei_search.config import TrialConfig

    load_data(TrialConfig.from_dict(jobs[0]["config"]))
    folder = Path(storage) if storage else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with source_trees({s: rev for s, (rev, _, _) in settings.items()}) as trees, ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda job: _subprocess(job, trees, folder), jobs))
    summary = summarise(runs)
    rate = {s: summary[s]["trial_epochs_per_cpu_hour"] for s in settings}
    ratio = rate["after"] / rate["before"]
    return result(NAME, MEASURE, TARGET, ratio, "x", ratio >= 1.5, epochs=epochs, repeats=repeats,
                  settings={k: {"revision": rev or "this checkout", "config": c, "milestones": list(m)}
                            for k, (rev, c, m) in settings.items()},
                  ratio_mixed=rate["after_mixed"] / rate["before"] if "after_mixed" in rate else None,
                  refit=refit_ratios(summary, tail), summary=summary, runs=runs)


def refit_ratios(summary: dict, tail: float, epochs: int = 80) -> dict:
    """The validation plan's effect on a refit of `epochs` epochs (not scheduled, so no rungs): its
    trial-epochs per CPU-hour validating by the plan with `validation_tail` / validating every 2, from
    the seconds per epoch and per validation each "after" setting measured in this run."""
    from nuclei_search.config import TrialConfig
    from nuclei_search.models.train import validation_epochs

    every = len(validation_epochs(TrialConfig(epochs=epochs, validation_freq=2)))
    plan = len(validation_epochs(TrialConfig(epochs=epochs, validation_freq=2, validation_tail=tail)))
    ratios = {}
    for setting in [s for s in ("after", "after_mixed") if s in summary]:
        per_epoch, per_validation = summary[setting]["seconds_per_epoch"], summary[setting]["seconds_per_validation"]
        ratios[setting] = (epochs * per_epoch + every * per_validation) / (epochs * per_epoch + plan * per_validation)
    return {"epochs": epochs, "validations_every_2": every, "validations_plan": plan, "ratio": ratios}
