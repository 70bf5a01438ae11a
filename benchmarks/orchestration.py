"""Search orchestration overhead: wall time vs Σ(trial time) / concurrency.

`nuclei-search run` on the quick synthetic space (8 trials, 2 at a time, Optuna TPE +
ASHA), as a user runs it. Σ(trial time) is Ray's `time_total_s` of every trial (from
the start of its function to its last report: data loading, model building, training,
validation). The overhead is what the platform adds around the trials: Ray start,
actor start-up and teardown per trial, scheduling gaps, searcher and checkpoint I/O.
Ray Tune's own benchmark reports 14 %. Measured twice in one run: with a fresh worker
process per trial (the default) and with workers reused from trial to trial (`--reuse-actors`).
"""

from __future__ import annotations

import logging
import tempfile

from benchmarks.common import REPO, result, timer

NAME = "orchestration"
MEASURE = "search orchestration: wall time vs Σ(trial time)/concurrency (quick space, 8 trials, 2 at a time)"
TARGET = "overhead <= 10 % (Ray's own benchmark: 14 %)"

log = logging.getLogger(__name__)


def _search(trials: int, concurrency: int, quick: bool, reuse_actors: bool) -> dict:
    import ray

    from cluster.runtime import connect
    from search.experiment import SearchOptions
    from search.runner import run_search

    with tempfile.TemporaryDirectory(prefix="bench-orchestration-") as tmp:
        options = SearchOptions(name="orchestration", space=str(REPO / "search/spaces/quick.yaml"),
                                num_samples=trials, max_concurrent=concurrency, storage=tmp,
                                max_epochs=2 if quick else None, reuse_actors=reuse_actors)
        with timer() as t_all:
            connect(None, num_cpus=concurrency)
            summary = run_search(options, progress=False)
    ray.shutdown()
    ideal = summary.trial_seconds / concurrency
    log.info("reuse_actors=%s: fit %.1f s, whole run %.1f s, Σ trials / %d = %.1f s, overhead %+.1f %%",
             reuse_actors, summary.wall_seconds, t_all(), concurrency, ideal, 100 * summary.overhead)
    return dict(
        overhead=100 * summary.overhead, trials=summary.trials, terminated=summary.terminated,
        fit_wall_seconds=summary.wall_seconds, sum_trial_seconds=summary.trial_seconds,
        whole_run_seconds=t_all(), overhead_including_ray_start=100 * (t_all() / ideal - 1.0),
        best_val_iou=summary.best.get("val_iou"),
    )


def run(quick: bool = False, trials: int = 8, concurrency: int = 2) -> dict:
    """The default (a fresh worker per trial) and workers reused across trials, side by side."""
    trials = 2 if quick else trials
    reused = _search(trials, concurrency, quick, reuse_actors=True)
    fresh = _search(trials, concurrency, quick, reuse_actors=False)
    return result(
        NAME, MEASURE, TARGET, fresh["overhead"], "%", fresh["overhead"] <= 10.0,
        concurrency=concurrency, reuse_actors=reused, fresh_worker_per_trial=fresh,
    )
