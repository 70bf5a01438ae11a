"""Sample efficiency: Optuna TPE + ASHA vs random search vs KerasTuner Hyperband.

Each method searches `spaces/sample_efficiency.yaml` (full shared stage1_train, 64-px
crops, ≤ 4 epochs per trial) with 3 seeds. The budget is counted in trial-epochs (one
epoch trained by one trial); each method's anytime curve is the best validation IoU
seen after every trained epoch, in the order the epochs finished. Random search runs
`budget / 4` full-length trials (no early stopping). TPE + ASHA may start `budget / 2`
trials; ASHA's rungs are at 2 and 4 epochs (grace period 2: after one epoch at 64 px a
from-scratch U-Net's IoU is mostly noise) and a Ray Tune stopper ends the
search once its trials have trained the budget. Hyperband (factor 2, one iteration)
spends what its brackets spend.

The figure: the fraction of the budget at which TPE + ASHA's anytime curve, averaged
over the seeds, reaches the average of random search's final bests (averaging the
curves first keeps one lucky random draw from deciding it); per seed as well. The curves
are plotted in `results/sample_efficiency_curves.png`.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, dsb2018_zip, result

NAME = "sample_efficiency"
MEASURE = ("sample efficiency: best val IoU at equal trial-epoch budgets, TPE+ASHA vs random vs "
           "KerasTuner Hyperband, 3 seeds, full shared train at 64 px")
TARGET = "TPE+ASHA reaches random's best with <= 50 % of the budget"
FINISHED_FILE = "sample_efficiency_finished.json"  # written beside a search once it has ended
SPACE = Path(__file__).resolve().parent / "spaces" / "sample_efficiency.yaml"
METHODS = {
    "tpe_asha": dict(searcher="optuna", scheduler="asha", engine="ray"),
    "random": dict(searcher="random", scheduler="none", engine="ray"),
    "kt_hyperband": dict(engine="keras-tuner", kt_tuner="hyperband"),
}

log = logging.getLogger(__name__)


def anytime_curve(trials) -> list[float]:
    """Best val_iou so far after each trained epoch (epochs ordered by when they were reported)."""
    rows = sorted((float(r["timestamp"]), float(r.get("val_iou", float("nan"))))
                  for t in trials for r in t.history if r.get("timestamp") is not None)
    curve, best = [], float("-inf")
    for _, value in rows:
        if math.isfinite(value):
            best = max(best, value)
        curve.append(best)
    return curve


def budget_to_reach(curve: list[float], level: float) -> int | None:
    """Trial-epochs spent when the curve first reaches `level` (None: never)."""
    return next((k + 1 for k, value in enumerate(curve) if value >= level), None)


def mean_curve(curves: list[list[float]], budget: int) -> list[float]:
    """The seeds' anytime curves averaged epoch by epoch; a curve that ended early keeps its last value."""
    padded = [(c + [c[-1]] * budget)[:budget] for c in curves if c]
    return [statistics.mean(values) for values in zip(*padded)]


def plot(details: dict, path: Path) -> None:
    """The seed-averaged anytime curves (bold) over each seed's (thin), and random's mean final best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"tpe_asha": "#1f77b4", "random": "#ff7f0e", "kt_hyperband": "#2ca02c"}
    labels = {"tpe_asha": "Optuna TPE + ASHA", "random": "random search", "kt_hyperband": "KerasTuner Hyperband"}
    budget = int(details["budget_trial_epochs"])
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    for method, mean in details["mean_curves"].items():
        for curve in details["curves"][method]:
            ax.step(range(len(curve) + 1), curve[:1] + curve, where="pre", color=colours[method], lw=0.7, alpha=0.35)
        ax.step(range(len(mean) + 1), mean[:1] + mean, where="pre", color=colours[method], lw=2.2,
                label=f"{labels[method]} (mean of {len(details['curves'][method])} seeds)")
    ax.axhline(details["random_mean_best"], color=colours["random"], ls=":", lw=1, label="random's mean final best")
    ax.axvline(budget / 2, color="black", ls="--", lw=0.8, label="half the budget")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best validation foreground IoU so far")
    ax.set_title(f"Sample efficiency, full stage1_train at 64 px, budget {budget} trial-epochs")
    ax.set_xlim(0, budget)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _epoch_budget(budget: int):
    """A Ray Tune stopper that ends the whole search once its trials have trained `budget` epochs."""
    from ray import tune

    class EpochBudget(tune.Stopper):
        def __init__(self):
            self.epochs: dict[str, int] = {}

        def __call__(self, trial_id, result):
            self.epochs[trial_id] = int(result.get("epoch", 0))
            return False

        def stop_all(self):
            return sum(self.epochs.values()) >= budget

    return EpochBudget()


def search(method: str, seed: int, budget: int, data: str, storage: str) -> list[float]:
    """The method's anytime curve; an experiment already in `storage` is read, not run again
    (one without FINISHED_FILE, cut short, is resumed)."""
    from nuclei_search.results.trials import load_experiment
    from nuclei_search.search.experiment import EXPERIMENT_FILE, SearchOptions
    from nuclei_search.search.runner import resume_search, run_search

    max_epochs = 1 if budget < 8 else 4
    per_trial = {"tpe_asha": 2, "random": max_epochs, "kt_hyperband": max_epochs}[method]
    grace = {"grace_period": min(2, max_epochs)} if method == "tpe_asha" else {}
    options = SearchOptions(name=f"{method}-s{seed}", space=str(SPACE), data=data, storage=storage, seed=seed,
                            num_samples=max(2, budget // per_trial), max_concurrent=2, max_epochs=max_epochs,
                            **METHODS[method], **grace)
    experiment = Path(storage) / options.name
    finished = experiment / FINISHED_FILE
    if finished.is_file():
        log.info("%s seed %d: reading the finished experiment in %s", method, seed, storage)
    elif (experiment / EXPERIMENT_FILE).is_file():
        # cut short (or ended before it was marked: resuming it returns at once). Ray restores its
        # stopper as pickled at the start (empty), so a resumed search may overshoot the budget;
        # the curve is cut at the budget, so the figure is unchanged
        log.info("%s seed %d: resuming the search cut short in %s", method, seed, storage)
        resume_search(options.name, storage=storage, progress=False)
    else:
        run_search(options, progress=False, stop=_epoch_budget(budget) if options.engine == "ray" else None)
    curve = anytime_curve(load_experiment(options.name, storage=storage).trials)
    finished.write_text(json.dumps({"trial_epochs": len(curve)}))
    log.info("%s seed %d: %d trial-epochs, best %.4f", method, seed, len(curve), curve[-1] if curve else float("nan"))
    return curve


def run(quick: bool = False, budget: int = 32, seeds: tuple[int, ...] = (0, 1, 2), storage: str | None = None) -> dict:
    """`storage`: keep the searches there (default: a temporary folder); those already there are read."""
    import ray

    from nuclei_search.cluster.runtime import connect

    data = "synthetic" if quick else str(dsb2018_zip())
    budget, seeds = (4, (0,)) if quick else (budget, seeds)
    connect(None, num_cpus=2)
    curves: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="bench-sample-efficiency-") as scratch:
        for seed in seeds:
            for method in METHODS:
                curves[method].append(search(method, seed, budget, data, storage or scratch)[:budget])
    ray.shutdown()
    fractions, per_seed = [], []
    for k, seed in enumerate(seeds):
        random_best = curves["random"][k][-1]
        spent = budget_to_reach(curves["tpe_asha"][k], random_best)
        fraction = spent / budget if spent is not None else float("inf")
        fractions.append(fraction)
        per_seed.append({"seed": seed, "random_best": random_best, "tpe_asha_epochs_to_reach_it": spent,
                         **{f"{m}_best": curves[m][k][-1] for m in METHODS},
                         **{f"{m}_epochs": len(curves[m][k]) for m in METHODS},
                         **{f"{m}_best_at_half_budget": (curves[m][k][: budget // 2] or [float("nan")])[-1]
                            for m in METHODS}})
    means = {m: mean_curve(curves[m], budget) for m in METHODS}
    random_mean_best = statistics.mean(c[-1] for c in curves["random"])
    spent = budget_to_reach(means["tpe_asha"], random_mean_best)
    value = spent / budget if spent is not None else float("inf")
    record = result(
        NAME, MEASURE, TARGET, 100 * value, "% of budget", value <= 0.5,
        budget_trial_epochs=budget, seeds=list(seeds), per_seed=per_seed, curves=curves, mean_curves=means,
        random_mean_best=random_mean_best, tpe_asha_epochs_to_reach_it=spent,
        per_seed_fractions=fractions, mean_best={m: statistics.mean(c[-1] for c in curves[m]) for m in METHODS},
    )
    if not quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(record["details"], RESULTS / f"{NAME}_curves.png")
    return record
