"""Validation IoU (and mAP) by image type of the best trials: a search must not win on fluorescence alone."""

from __future__ import annotations

from nuclei_search.data_pipeline.preprocess import IMAGE_TYPES
from nuclei_search.results.plots import PlotUnavailable
from nuclei_search.results.trials import Experiment


def iou_by_type(experiment: Experiment, metric: str = "iou", top: int = 6):
    """Grouped bars: one group per image type, one bar per trial (the `top` trials by val_iou)."""
    import plotly.graph_objects as go

    columns = {t: f"val_{metric}_{t}" for t in IMAGE_TYPES}
    scored = [t for t in experiment.trials if t.best and any(c in t.best for c in columns.values())]
    if not scored:
        raise PlotUnavailable(f"no trial has reported val_{metric} by image type yet")
    ranked = sorted(scored, key=lambda t: float(t.best.get("val_iou", 0.0)), reverse=True)[:top]
    types = [t for t, c in columns.items() if any(c in trial.best for trial in ranked)]
    fig = go.Figure()
    for trial in ranked:
        fig.add_trace(go.Bar(
            x=types, y=[trial.best.get(columns[t]) for t in types],
            name=f"{trial.trial_id} (val_iou {float(trial.best['val_iou']):.3f})",
            hovertemplate=f"trial {trial.trial_id}<br>%{{x}}: val_{metric} %{{y:.4f}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", title=f"best val_{metric} by image type, top {len(ranked)} trials",
                      yaxis_title=f"val_{metric}", yaxis_range=[0, 1], height=380, legend_title_text="trial")
    return fig
