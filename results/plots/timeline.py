"""IoU by trial over time: when each trial ran and how good it became, with the running best."""

from __future__ import annotations

import datetime as dt

from nuclei_search.results.plots import PlotUnavailable
from nuclei_search.results.trials import Experiment


def _time(stamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp)


def iou_over_time(experiment: Experiment, metric: str = "val_iou"):
    """Each trial as a segment from its start to its end at the height of its best `metric`.

    Markers sit at the trial's end, coloured by stop reason; the step line is the best
    score found so far. Errored trials without a score appear as crosses at 0.
    """
    import plotly.graph_objects as go

    trials = [t for t in experiment.trials if t.ended is not None or t.status == "ERROR"]
    timed = [t for t in trials if t.ended is not None]
    if not timed:
        raise PlotUnavailable("no trial has finished an epoch yet")
    colours = {"completed": "#1f77b4", "early-stopped": "#ff7f0e", "ERROR": "#d62728"}
    fig = go.Figure()
    shown: set[str] = set()
    for trial in sorted(timed, key=lambda t: t.ended):
        kind = trial.stop_reason.split(":")[0]
        score = float((trial.best or {}).get(metric, 0.0))
        colour = colours.get(kind, "#7f7f7f")
        fig.add_trace(go.Scatter(
            x=[_time(trial.started or trial.ended), _time(trial.ended)], y=[score, score],
            mode="lines+markers", line={"color": colour, "width": 3},
            marker={"size": [4, 10], "symbol": "x" if trial.best is None else "circle"},
            name=kind, legendgroup=kind, showlegend=kind not in shown,
            hovertemplate=(f"trial {trial.trial_id}<br>{trial.stop_reason}<br>best {metric} {score:.4f}"
                           f"<br>{trial.epochs_run} epochs, {trial.seconds / 60:.1f} min<extra></extra>"),
        ))
        shown.add(kind)
    running, best = [], float("-inf")
    ordered = sorted((t for t in timed if t.best is not None), key=lambda t: t.ended)
    for trial in ordered:
        best = max(best, float(trial.best[metric]))
        running.append((_time(trial.ended), best))
    if running:
        fig.add_trace(go.Scatter(x=[x for x, _ in running], y=[y for _, y in running], mode="lines",
                                 line={"shape": "hv", "dash": "dot", "color": "black"}, name="best so far"))
    fig.update_layout(title=f"best {metric} of each trial over time (segment: trial start → end)",
                      xaxis_title="time", yaxis_title=f"best {metric}", height=420)
    return fig
