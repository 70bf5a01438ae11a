"""Learning curves: validation IoU per epoch of every trial."""

from __future__ import annotations

from nuclei_search.results.plots import PlotUnavailable
from nuclei_search.results.trials import Experiment


def learning_curves(experiment: Experiment, metric: str = "val_iou"):
    """A plotly figure with one line per trial (x: epoch, y: `metric`); the best trial drawn thicker."""
    import plotly.graph_objects as go

    fig = go.Figure()
    scored = [t for t in experiment.trials if any(metric in r for r in t.history)]
    if not scored:
        raise PlotUnavailable(f"no trial has reported {metric} yet")
    best = max(scored, key=lambda t: float((t.best or {}).get(metric, float("-inf"))))
    for trial in scored:
        rows = [r for r in trial.history if metric in r]
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        fig.add_trace(go.Scatter(
            x=[r.get("epoch") or r.get("training_iteration") for r in rows],
            y=[r[metric] for r in rows],
            mode="lines+markers",
            name=f"{trial.trial_id} ({trial.stop_reason.split(':')[0]})",
            line={"width": 4 if trial is best else 1.5},
            hovertemplate=f"trial {trial.trial_id}<br>epoch %{{x}}<br>{metric} %{{y:.4f}}<br>{params}<extra></extra>",
        ))
    fig.update_layout(title=f"{metric} per epoch, every trial (thick: best trial {best.trial_id})",
                      xaxis_title="epoch", yaxis_title=metric, height=460, legend_title_text="trial (stop)")
    fig.update_xaxes(dtick=1 if max(t.epochs_run for t in scored) <= 20 else None)
    return fig


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
