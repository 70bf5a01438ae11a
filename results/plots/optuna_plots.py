"""Hyperparameter plots through optuna.visualization, on a study built from the leaderboard.

Both engines (and every searcher) get the same plots: `leaderboard_study` builds an
in-memory Optuna study with one finished trial per scored search trial, its searched
values under the distributions of the experiment's search space and, as objective,
the trial's best-epoch val_iou (the leaderboard's score; the Optuna study a Ray
search keeps in optuna.db holds the *last* reported value of each trial instead).
"""

from __future__ import annotations

import warnings

from nuclei_search.contract import METRIC
from nuclei_search.results.plots import PlotUnavailable
from nuclei_search.results.trials import Experiment



def leaderboard_study(experiment: Experiment):
    """An in-memory optuna Study (maximize val_iou) of the experiment's scored trials."""
    import optuna

    if experiment.space is None:
        raise PlotUnavailable("the experiment's search space (space.yaml) cannot be read")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = experiment.space.optuna_distributions()
    dimensions = {p.name: p for p in experiment.space.params}
    study = optuna.create_study(direction="maximize", study_name=f"{experiment.name}-leaderboard")
    for trial in experiment.trials:
        if trial.best is None or trial.refit_of:  # a refit repeats a searched configuration, trained longer
            continue
        params, dists = {}, {}
        for name, dist in distributions.items():
            value = trial.params.get(name)
            if value is not None and dimensions[name].contains(value):  # the space may have been edited since
                params[name], dists[name] = value, dist
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=float(trial.best[METRIC]),
            user_attrs={"trial_id": trial.trial_id, "stop_reason": trial.stop_reason},
        ))
    if not study.trials:
        raise PlotUnavailable("no trial has a validation score yet")
    return study


def slices(study):
    """val_iou against each searched hyperparameter (optuna.visualization.plot_slice)."""
    from optuna.visualization import plot_slice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = plot_slice(study, target_name=METRIC)
    fig.update_layout(title=f"best {METRIC} of each trial against each hyperparameter", height=420)
    return fig


def parallel_coordinates(study):
    from optuna.visualization import plot_parallel_coordinate

    if len(study.trials) < 2:
        raise PlotUnavailable("parallel coordinates need at least 2 scored trials")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = plot_parallel_coordinate(study, target_name=METRIC)
    fig.update_layout(title=f"parallel coordinates (colour: best {METRIC})", height=460)
    return fig


def importances(study):
    """Hyperparameter importance for val_iou (optuna.importance, PED-ANOVA: no scikit-learn needed)."""
    import optuna
    from optuna.visualization import plot_param_importances

    if len(study.trials) < 2:
        raise PlotUnavailable("importance needs at least 2 scored trials")
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fig = plot_param_importances(study, evaluator=evaluator, target_name=METRIC)
        except (ValueError, RuntimeError) as exc:
            raise PlotUnavailable(f"importance cannot be computed: {exc}") from None
    fig.update_layout(title=f"hyperparameter importance for {METRIC} (PED-ANOVA)", height=380)
    return fig


def searcher_history(experiment: Experiment):
    """The optimisation history of the experiment's own Optuna study (optuna.db), if it has one."""
    import optuna
    from optuna.visualization import plot_optimization_history

    db = experiment.optuna_db
    if db is None:
        raise PlotUnavailable("this experiment has no Optuna study (searcher is not optuna)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=experiment.options.name, storage=f"sqlite:///{db}")
    except (KeyError, ValueError) as exc:
        raise PlotUnavailable(f"cannot open the Optuna study in {db}: {exc}") from None
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise PlotUnavailable("the Optuna study has no completed trial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = plot_optimization_history(study, target_name=f"{METRIC} (last reported)")
    fig.update_layout(title=f"the Optuna searcher's view: study '{study.study_name}' in optuna.db", height=380)
    return fig
