"""`nuclei-search run` and `nuclei-search resume`: the distributed search."""

from __future__ import annotations

import argparse
import time
from importlib import resources

from nuclei_search.search.experiment import ENGINES, KT_TUNERS, SCHEDULERS, SEARCHERS, SearchOptions
from nuclei_search.search.runner import resume_search, run_search


def quick_space() -> str:
    return str(resources.files("nuclei_search.search") / "spaces" / "quick.yaml")


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a hyperparameter search (Ray Tune + Optuna + ASHA, or KerasTuner)",
        description="Run a search over a YAML space. With no options: the quick demo search on "
                    "synthetic nuclei (minutes on a CPU).",
    )
    p.add_argument("--space", default=None, metavar="FILE", help="search space YAML (default: the packaged quick.yaml)")
    p.add_argument("--name", default=None, metavar="EXP", help="experiment name (default: quick-<timestamp>)")
    p.add_argument("--num-samples", type=int, default=4, metavar="N",
                   help="exploration trials to run (default 4; refit trials come on top)")
    p.add_argument("--max-concurrent", type=int, default=2, metavar="K", help="trials at once (default 2)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G",
                   help="GPUs per trial, fractions allowed, e.g. 0.5 (default 0)")
    p.add_argument("--searcher", choices=SEARCHERS, default="optuna", help="default: optuna (multivariate TPE)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha", help="early stopping (default: asha)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="E", help="epochs per trial (overrides the space)")
    p.add_argument("--grace-period", type=int, default=None, metavar="E",
                   help="epochs every trial trains before ASHA (or the median rule) may stop it "
                        "(default: max(1, epochs // 4) for ASHA, 1 for median)")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help="synthetic | synthetic:N | kaggle | Kaggle-layout folder | .zip (overrides the space)")
    p.add_argument("--storage", default=None, metavar="PATH_OR_URI",
                   help="where experiments live: folder, shared path or s3://, gs:// (default ./experiments "
                        "or $NUCLEI_SEARCH_STORAGE)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster: auto | HOST:PORT | ray://HOST:10001 (default: start Ray locally)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="searcher seed (default 0)")
    p.add_argument("--engine", choices=ENGINES, default="ray", help="ray (default) or keras-tuner")
    p.add_argument("--kt-tuner", choices=KT_TUNERS, default="hyperband", help="KerasTuner algorithm (engine keras-tuner)")
    p.add_argument("--max-failures", type=int, default=1, metavar="N", help="retries of a failed trial (default 1)")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="prepared-data cache folder")
    p.add_argument("--reuse-actors", action=argparse.BooleanOptionalAction, default=True,
                   help="run trial after trial in the same Ray worker process (Ray's reuse_actors; "
                        "the default); --no-reuse-actors: a fresh process per trial")
    p.add_argument("--refit-top", type=int, default=0, metavar="K",
                   help="after the N exploration trials, train the top-K configurations (by val_iou_best) "
                        "again from scratch for --refit-epochs, as trials of the same experiment (default 0: no refit)")
    p.add_argument("--refit-epochs", type=int, default=None, metavar="E",
                   help="epochs of each refit trial (default: the space's epochs; with --refit-minutes, the most)")
    p.add_argument("--refit-minutes", type=float, default=None, metavar="M",
                   help="wall time of the refit stage: each refit trial trains as many epochs as fit, at the "
                        "seconds per epoch its exploration trial measured (capped by --refit-epochs), so every "
                        "refit ends its learning-rate schedule within the time")
    p.add_argument("--time-budget", type=float, default=None, metavar="M",
                   help="minutes of search + refit: when exploration ends, the refit stage gets what is left "
                        "(sized as with --refit-minutes); the driver's running time counts, as for Ray's time_budget_s")
    p.add_argument("--warm-start", nargs="+", default=[], metavar="EXP",
                   help="add the finished trials of these earlier experiments (same data) to the new Optuna "
                        "study before it samples; trials outside the new space are skipped")
    p.add_argument("--overwrite", action="store_true", help="replace an existing experiment of this name")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    p.add_argument("--verbose", dest="ray_verbose", action="store_true",
                   help="Ray Tune's own progress reporter and the trials' log output instead of the compact table")
    p.set_defaults(func=run_cmd)

    r = sub.add_parser("resume", help="continue an interrupted search",
                       description="Continue an interrupted search: finished trials are kept, unfinished "
                                   "ones continue from their last checkpoint, the requested trial count is reached.")
    r.add_argument("experiment", metavar="EXP", help="experiment name or folder")
    r.add_argument("--storage", default=None, metavar="PATH_OR_URI", help="storage root the experiment is in")
    r.add_argument("--quiet", action="store_true", help="no progress table")
    r.add_argument("--verbose", dest="ray_verbose", action="store_true",
                   help="the trials' log output (the table, or Ray's reporter, is the one the run showed)")
    r.set_defaults(func=resume_cmd)


def _print_summary(summary) -> None:
    print(f"experiment: {summary.experiment}")
    unfinished = summary.trials - summary.terminated - summary.errored
    print(f"trials: {summary.trials} ({summary.terminated} finished, {summary.errored} errored"
          + (f", {unfinished} unfinished: continue with `nuclei-search resume {summary.experiment.name}`)" if unfinished
             else ")"))
    if summary.best_trial:
        best = ", ".join(f"{k}={v:.4f}" for k, v in summary.best.items() if k.startswith("val_"))
        print(f"best trial: {summary.best_trial}  {best}")
    print(f"wall time: {summary.wall_seconds:.1f} s; Σ trial time / concurrency: "
          f"{summary.trial_seconds / max(1, summary.concurrency):.1f} s; overhead {summary.overhead:+.1%}")
    print(f"next: nuclei-search leaderboard {summary.experiment.name}")


def _quiet_libraries(args: argparse.Namespace) -> None:
    """Optuna announces each study it creates at INFO; only -v or --verbose show that."""
    if not (args.verbose or args.ray_verbose):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_cmd(args: argparse.Namespace) -> int:
    _quiet_libraries(args)

    options = SearchOptions(
        name=args.name or time.strftime("quick-%Y%m%d-%H%M%S"), space=args.space or quick_space(),
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, searcher=args.searcher, scheduler=args.scheduler,
        max_epochs=args.max_epochs, grace_period=args.grace_period, data=args.data, storage=args.storage,
        address=args.address, seed=args.seed, engine=args.engine, kt_tuner=args.kt_tuner,
        max_failures=args.max_failures, cache_dir=args.cache_dir, reuse_actors=args.reuse_actors,
        refit_top=args.refit_top, refit_epochs=args.refit_epochs, refit_minutes=args.refit_minutes,
        time_budget=args.time_budget, warm_start=list(args.warm_start),
    )
    summary = run_search(options, overwrite=args.overwrite, progress=not args.quiet, verbose=args.ray_verbose)
    _print_summary(summary)
    return 0 if summary.terminated else 1


def resume_cmd(args: argparse.Namespace) -> int:
    _quiet_libraries(args)

    summary = resume_search(args.experiment, storage=args.storage, progress=not args.quiet, verbose=args.ray_verbose)
    _print_summary(summary)
    return 0 if summary.terminated else 1
