"""`nuclei-search run` / `resume`: a Ray Tune search over a YAML space.

Ray Tune launches the trials (in parallel, on CPUs/GPUs, on one machine or a cluster),
Optuna's TPE chooses configurations (searcher), ASHA stops poor trials early
(scheduler). Searcher and scheduler are built apart and composed in a `Tuner`, as in
Ray Tune's own examples.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from nuclei_search.cluster.runtime import connect
from nuclei_search.cluster.storage import upload_sqlite
from nuclei_search.compat import old_module_names
from nuclei_search.contract import METRIC, MODE, RANK_METRIC, STUDY_FILE, TIME_ATTR
from nuclei_search.errors import ConfigError, ExperimentError
from nuclei_search.lock import writer_lock
from nuclei_search.search.checkpoint_repair import repair_missing_checkpoints
from nuclei_search.search.experiment import (
    SearchOptions,
    check_space,
    check_study,
    claim,
    effective_space,
    find_experiment,
    load_options,
    local_dir,
    remote_dir,
    save_metadata,
    storage_root,
)
from nuclei_search.search.keras_tuner_engine import run_keras_tuner
from nuclei_search.search.space import SearchSpace
from nuclei_search.search.state_recovery import recover_cut_state
from nuclei_search.search.summary import SearchSummary

log = logging.getLogger(__name__)

ASHA_REDUCTION = 2  # ASHA's reduction factor: rungs at grace, 2·grace, 4·grace ... epochs

#: RANK_METRIC: what ASHA and Optuna rank trials by, the best val_iou of the trial so far. Whole-image
#: validation IoU swings by up to 0.1 from one epoch to the next early in training (high
#: learning rate, from-scratch BatchNorm statistics), so ranking by the epoch that happens
#: to fall on a rung stopped a trial whose best epoch beat the survivors' best (the
#: published search, BENCHMARKS.md); the running best is monotone, and it is what export keeps.
#: TIME_ATTR, the schedulers' clock: the trained epoch each report is about (reports may skip
#: epochs with `validation_freq` > 1, so not Ray's `training_iteration`)


def max_epochs(space: SearchSpace) -> int:
    return int(space.fixed.get("epochs") or space.resolve(space.corner_samples()[0]).epochs)


def trial_dirname(trial) -> str:
    """Short trial folder names (Ray's default packs every parameter into the name)."""
    return f"trial_{trial.trial_id}"


def build_searcher(options: SearchOptions, space: SearchSpace, experiment: Path):
    """(search_alg, param_space) for the chosen searcher."""
    if options.searcher == "optuna":
        from ray.tune.search import ConcurrencyLimiter

        from nuclei_search.search.optuna_searcher import (
            ReconciledOptunaSearch,
            make_sampler,
            study_storage,
        )

        searcher = ReconciledOptunaSearch(
            space=space.define_by_run,
            metric=RANK_METRIC,
            mode=MODE,
            sampler=make_sampler(options.seed),
            study_name=options.name,
            storage=study_storage(experiment),
            points_to_evaluate=[dict(p) for p in space.start_from] or None,
        )
        searcher = ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent)
        if options.refit_top:
            from nuclei_search.search.refit import RefitStage

            resolved = space.resolve(space.corner_samples()[0])
            searcher = RefitStage(searcher, explore=options.num_samples, top_k=options.refit_top,
                                  epochs=options.refit_epochs or max_epochs(space), minutes=options.refit_minutes,
                                  concurrency=options.max_concurrent, budget_minutes=options.time_budget,
                                  validation=(int(resolved.validation_freq), float(resolved.validation_tail)))
        return searcher, {}
    from ray.tune.search.basic_variant import BasicVariantGenerator

    param_space = space.tune_param_space(options.searcher)
    searcher = BasicVariantGenerator(max_concurrent=options.max_concurrent, random_state=options.seed,
                                     points_to_evaluate=[dict(p) for p in space.start_from] or None)
    return searcher, param_space


def asha_grace(options: SearchOptions, epochs: int) -> int:
    # default grace: a from-scratch encoder may predict all background for its first epochs
    return options.grace_period or max(1, epochs // 4)


def scheduler_milestones(options: SearchOptions, epochs: int) -> tuple[int, ...]:
    """The epochs at which the scheduler compares trials (ASHA's rungs: grace · 2^k up to max_t, as Ray
    builds them): each trial validates there, whatever its `validation_tail`. Other schedulers
    decide at any report."""
    if options.scheduler != "asha":
        return ()
    rungs, t = [], asha_grace(options, epochs)
    while t <= epochs:
        rungs.append(t)
        t *= ASHA_REDUCTION
    return tuple(rungs)


def build_scheduler(options: SearchOptions, epochs: int):
    """Ray's scheduler; with a refit stage, the variant that lets refit trials run their full length."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
    )

    from nuclei_search.search.refit import RefitASHA, RefitMedianStoppingRule

    asha, median = (RefitASHA, RefitMedianStoppingRule) if options.refit_top else (ASHAScheduler, MedianStoppingRule)
    if options.scheduler == "asha":
        return asha(time_attr=TIME_ATTR, max_t=epochs, grace_period=asha_grace(options, epochs),
                    reduction_factor=ASHA_REDUCTION)
    if options.scheduler == "hyperband":
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=epochs, reduction_factor=2)
    if options.scheduler == "median":
        return median(time_attr=TIME_ATTR, grace_period=options.grace_period or 1, min_samples_required=2)
    return FIFOScheduler()


def build_trainable(options: SearchOptions, space: SearchSpace, function=None):
    """The trainable with its resources; `function` replaces `train_unet` (same signature:
    config dict, space_source=, space_text=, milestones=), e.g. for benchmarks of the search layer."""
    from ray import tune

    from nuclei_search.search.trainable import train_unet

    trainable = tune.with_parameters(function or train_unet, space_source=options.space, space_text=space.to_yaml(),
                                     milestones=scheduler_milestones(options, max_epochs(space)))
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(trainable, resources)


def _run_config(options: SearchOptions, space: SearchSpace, progress: bool, verbose: bool,
                callbacks: list | None = None, stop=None):
    """Ray's RunConfig. `progress`: our compact console (search.console), or with `verbose`
    Ray Tune's own reporter instead."""
    from ray import tune

    callbacks = list(callbacks or [])
    if progress and not verbose:
        from nuclei_search.search.console import SearchConsole

        callbacks.append(SearchConsole(options.name, total=options.num_samples + options.refit_top,
                                       max_epochs=max_epochs(space), concurrency=options.max_concurrent,
                                       searched=[p.name for p in space.params]))
    return tune.RunConfig(
        name=options.name,
        stop=stop,
        storage_path=storage_root(options.storage),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE
        ),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        verbose=1 if progress and verbose else 0,
        callbacks=callbacks or None,
    )


def _prepare_data(space: SearchSpace, options: SearchOptions, progress: bool) -> str:
    """Prepare the data once in the driver, so parallel trials on this machine only read the cache;
    returns the prepared data's fingerprint."""
    from nuclei_search.data_pipeline.preprocess import prepare

    config = space.resolve(space.corner_samples()[0])
    return prepare(config.data, cache_dir=config.cache_dir, progress=progress).fingerprint


def run_search(options: SearchOptions, *, overwrite: bool = False, progress: bool = True, verbose: bool = False,
               trainable=None, callbacks: list | None = None, stop=None) -> SearchSummary:
    """Start a new search (refuses an existing experiment unless overwrite).

    `trainable` replaces the U-Net trainable (see `build_trainable`); the default trains.
    `callbacks` are Ray Tune callbacks (`ray.tune.Callback`, e.g. an MLflow or W&B logger);
    Ray keeps them with the experiment, so `resume` uses them again. `stop` is Ray Tune's
    stopping criterion (`RunConfig(stop=...)`: a dict, a function or a `ray.tune.Stopper`).
    `progress` shows the live console (search.console); `verbose` shows Ray Tune's own
    reporter and the trial processes' output instead.
    """
    options.validate()
    if options.engine == "keras-tuner":
        if callbacks or stop is not None:
            raise ConfigError("Ray Tune callbacks and stopping criteria need --engine ray")
        return run_keras_tuner(options, overwrite=overwrite, progress=progress)
    space = effective_space(options)
    if options.searcher == "grid" and options.num_samples != 1:
        log.info("grid search: every grid point runs num_samples=%d time(s)", options.num_samples)
    experiment = local_dir(options.storage, options.name)
    remote = remote_dir(options.storage, options.name)
    fingerprint = earlier = None
    if options.warm_start:  # read before anything is created: a bad reference changes nothing
        from nuclei_search.search.warm_start import earlier_trials

        fingerprint = _prepare_data(space, options, progress)
        earlier = earlier_trials(space, fingerprint, options.warm_start, options.storage)
    with writer_lock(experiment, "experiment"):  # one writer: a second run or resume of it stops here
        claim(experiment, overwrite, remote)
        if fingerprint is None and options.address is None:
            fingerprint = _prepare_data(space, options, progress)
        save_metadata(experiment, options, space.to_yaml(), remote, data_fingerprint=fingerprint)
        if earlier:
            from nuclei_search.search.optuna_searcher import study_storage
            from nuclei_search.search.warm_start import warm_start_study

            warm_start_study(study_storage(experiment), options.name, earlier)

        connect(options.address, log_to_driver=verbose)
        tuner = _new_tuner(options, space, experiment, trainable,
                           _run_config(options, space, progress, verbose, callbacks, stop))
        return _fit(tuner, options, experiment, verbose)


def _new_tuner(options: SearchOptions, space: SearchSpace, experiment: Path, trainable, run_config):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    search_alg, param_space = build_searcher(options, space, experiment)
    return tune.Tuner(
        build_trainable(options, space, trainable),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=RANK_METRIC,
            mode=MODE,
            search_alg=search_alg,
            scheduler=build_scheduler(options, max_epochs(space)),
            num_samples=options.num_samples + options.refit_top,
            # a ConcurrencyLimiter (Optuna without refit) limits itself; Ray warns if told twice
            max_concurrent_trials=None if isinstance(search_alg, ConcurrencyLimiter) else options.max_concurrent,
            # Trial after trial in one worker process (models.runtime clears Keras state per
            # trial and releases what TensorFlow keeps, benchmarks/worker_memory.py; the trial's
            # tf.data iterator frees at once, data_pipeline/loader.py): a slot is handed over
            # in ~0.2 s instead of ~3 s for a fresh process (benchmarks/orchestration.py).
            # --no-reuse-actors is Ray's default, a fresh process per trial.
            reuse_actors=options.reuse_actors,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=run_config,
    )


def resume_search(ref: str, *, storage: str | None = None, progress: bool = True,
                  verbose: bool = False, trainable=None) -> SearchSummary:
    """Continue an interrupted search: finished trials are kept, unfinished ones continue.
    `trainable`: as for `run_search` (the one the search was started with).

    Refused while another process writes the experiment, and when its space.yaml was edited."""
    experiment = find_experiment(ref, storage, results=False)
    options = load_options(experiment)
    if options.engine == "keras-tuner":
        return run_keras_tuner(options, overwrite=False, progress=progress, resume=True)
    with writer_lock(experiment, "experiment"):
        space = SearchSpace.from_text(check_space(experiment, options), source=options.space)
        if options.searcher == "optuna":
            check_study(experiment)
        ray_dir = _restorable(experiment, options)
        if options.address is None:
            _prepare_data(space, options, progress)
        connect(options.address, log_to_driver=verbose)
        from ray import tune

        with old_module_names():  # an experiment from before the packages moved under nuclei_search
            tuner = tune.Tuner.restore(  # with the run's RunConfig: its console (or reporter) and callbacks
                ray_dir, trainable=build_trainable(options, space, trainable), resume_unfinished=True, resume_errored=True,
            )
            return _fit(tuner, options, experiment, verbose)


def _restorable(experiment: Path, options: SearchOptions) -> str:
    """Where Ray restores the experiment from, its missing checkpoints repaired (local storage)."""
    from ray import tune

    remote = remote_dir(options.storage, options.name)
    ray_dir = remote or str(experiment)
    if not tune.Tuner.can_restore(ray_dir):
        raise ExperimentError(f"experiment {experiment} has no Ray Tune state to resume (it never started?)")
    if remote is None:
        recover_cut_state(experiment)
        repair_missing_checkpoints(experiment)
    return ray_dir


def _fit(tuner, options: SearchOptions, experiment: Path, verbose: bool) -> SearchSummary:
    # Ray's hint to checkpoint the experiment state less often asks nothing a user can act on
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:  # Ray's newer console prints an experiment box on a terminal even at verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    if options.searcher == "optuna":
        from nuclei_search.search.optuna_searcher import close_orphans, study_storage

        close_orphans(study_storage(experiment), options.name)
        remote = remote_dir(options.storage, options.name)
        if remote is not None:  # a copy of the study beside Ray's experiment (the live one stays here)
            upload_sqlite(experiment / STUDY_FILE, remote)
    results = list(grid)
    errored = [r for r in results if r.error is not None]
    best_trial, best = None, {}
    try:
        best_result = grid.get_best_result(metric=METRIC, mode=MODE, scope="all")
        frame = best_result.metrics_dataframe
        row = frame.loc[frame[METRIC].idxmax()]
        best_trial = str(row["trial_id"])
        best = {k: float(row[k]) for k in ("val_iou", "val_dice", "val_map", "epoch") if k in row}
    except (RuntimeError, KeyError, ValueError):  # no trial reported the metric
        pass
    trial_seconds = sum(float((r.metrics or {}).get("time_total_s") or 0.0) for r in results)
    return SearchSummary(
        experiment=experiment,
        trials=len(results),
        terminated=grid.num_terminated,  # not the interrupted (Ctrl-C) ones still pending or running
        errored=len(errored),
        best_trial=best_trial,
        best=best,
        wall_seconds=wall,
        trial_seconds=trial_seconds,
        concurrency=options.max_concurrent,
    )
