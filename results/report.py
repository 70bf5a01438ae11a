"""`nuclei-search report`: one self-contained HTML page about an experiment.

The page embeds plotly.js once and every figure as inline plotly JSON; the prediction
overlays are an inline base64 PNG. Nothing is fetched from the network when it is
opened (no CDN, no fonts, no MathJax), so it can be mailed or archived as one file.

Contents: a summary, the leaderboard, learning curves (val_iou per epoch of every
trial), best val_iou against each hyperparameter, parallel coordinates, hyperparameter
importance, best val_iou of each trial over time, the Optuna searcher's own history
(Ray + Optuna experiments), the best trial's predictions on validation images, and
the errors of failed trials.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nuclei_search.errors import ExperimentError
from nuclei_search.results.leaderboard import display_value, ensemble_frame, experiment_frame
from nuclei_search.results.plots import PlotUnavailable, curves, optuna_plots, timeline
from nuclei_search.results.plots.overlays import prediction_panels
from nuclei_search.results.trials import Experiment, load_experiment

log = logging.getLogger(__name__)

LEADERBOARD_ROWS = 30


@dataclass
class Section:
    anchor: str
    title: str
    body: str  # HTML
    note: str | None = None


@dataclass
class Report:
    path: Path
    sections: list[Section] = field(default_factory=list)

    @property
    def figures(self) -> list[str]:
        return [s.anchor for s in self.sections if s.note is None]

    @property
    def unavailable(self) -> dict[str, str]:
        return {s.anchor: s.note for s in self.sections if s.note is not None}


# --------------------------------------------------------------------------- pieces
def _figure_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _figure_section(anchor: str, title: str, build: Callable[[], object]) -> Section:
    try:
        fig = build()
    except PlotUnavailable as exc:
        return Section(anchor, title, "", note=str(exc))
    return Section(anchor, title, f'<div class="figure plot">{_figure_html(fig, f"fig-{anchor}")}</div>')


def _summary(experiment: Experiment, frame) -> str:
    options = experiment.options
    counts: dict[str, int] = {}
    for t in experiment.trials:
        kind = t.stop_reason.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    items = [
        ("experiment", experiment.name),
        ("folder", str(experiment.path)),
        ("engine", options.engine),
        ("searcher / scheduler" if options.engine == "ray" else "tuner",
         f"{options.searcher} / {options.scheduler}" if options.engine == "ray" else options.kt_tuner),
        ("search space", ", ".join(experiment.searched) or "?"),
        ("trials", f"{len(experiment.trials)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")"),
    ]
    if experiment.space is not None:
        fixed = experiment.space.fixed
        items.append(("fixed", ", ".join(f"{k}={v}" for k, v in fixed.items())))
    scored = frame[frame["val_iou"].notna()]
    if len(scored):
        top = scored.iloc[0]
        items.append(("best trial", f"{top['id']}: val_iou {top['val_iou']:.4f}, val_dice {top['val_dice']:.4f}, "
                                    f"val_map {top['val_map']:.4f} (epoch {top['best_epoch']})"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f'<table class="summary">{rows}</table>'


def _leaderboard_html(experiment: Experiment, frame) -> str:
    shown = frame.head(LEADERBOARD_ROWS).drop(columns=["experiment", "engine"]).copy()
    shown["checkpoint"] = [
        Path(c).name if isinstance(c, str) and c else ""
        for c in shown["checkpoint"]
    ]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(display_value(v))}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    more = f"<p>{len(frame) - LEADERBOARD_ROWS} more trials not shown.</p>" if len(frame) > LEADERBOARD_ROWS else ""
    return f'<div class="scroll"><table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}'


def _ensemble_section(experiment: Experiment) -> Section | None:
    """The exported ensemble beside the best single trial (None until one was exported)."""
    title = "Ensemble beside the best single trial"
    frame = ensemble_frame(experiment)
    if frame is None:
        return None
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(display_value(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return Section("ensemble", title,
                   f'<div class="scroll"><table class="leaderboard"><thead><tr>{head}</tr></thead>'
                   f'<tbody>{body}</tbody></table></div>')


def _overlay_section(experiment: Experiment, n_images: int) -> Section:
    title = "Best trial: predictions on validation images"
    try:
        trial = experiment.best_trial()
        png, _ = prediction_panels(trial, n_images=n_images)
    except (PlotUnavailable, ExperimentError) as exc:
        return Section("predictions", title, "", note=str(exc))
    data = base64.b64encode(png).decode("ascii")
    img = (f'<img class="overlay" alt="predictions of trial {html.escape(trial.trial_id)}" '
           f'src="data:image/png;base64,{data}">')
    return Section("predictions", title, f'<div class="figure">{img}</div>')


def _errors_html(experiment: Experiment) -> str:
    failed = [t for t in experiment.trials if t.status == "ERROR"]
    if not failed:
        return "<p>No trial failed.</p>"
    items = "".join(
        f"<li><b>{html.escape(t.trial_id)}</b> ({t.num_failures} failure(s)): "
        f"<code>{html.escape(t.error_line or '')}</code></li>" for t in failed
    )
    return f"<ul>{items}</ul>"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 2rem; color: #222; background: #fff; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; white-space: nowrap; }
table.summary th { background: #f5f5f5; }
table.summary td { white-space: normal; word-break: break-word; }
table.leaderboard thead th { background: #f0f4fa; position: sticky; top: 0; }
.scroll { overflow-x: auto; max-height: 520px; }
.figure { overflow-x: auto; }  /* a wide figure (one panel per hyperparameter) scrolls inside its section */
section { max-width: 100%; }
.note { color: #8a6d3b; background: #fcf8e3; padding: .5rem 1rem; border-radius: 4px; }
img.overlay { max-width: 100%; }
nav a { margin-right: 1rem; }
"""


def render(experiment: Experiment, sections: list[Section], frame) -> str:
    """The whole page as a string (plotly.js inlined once)."""
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        body = s.body if s.note is None else f'<p class="note">Not available: {html.escape(s.note)}</p>'
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{body}</section>')
    created = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>nuclei-search report: {html.escape(experiment.name)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>Experiment {html.escape(experiment.name)}</h1>
<p>Generated {created} by nuclei-search. Scores are each trial's best epoch on its validation split.</p>
<nav>{nav}</nav>
{_summary(experiment, frame)}
{"".join(parts)}
</body></html>
"""


# --------------------------------------------------------------------------- API
def build_report(ref: str | Path, out: str | Path, *, storage: str | None = None, overlay_images: int = 4) -> Report:
    """Write the experiment's HTML report to `out`; return what it contains."""

    out = Path(out)
    if out.is_dir():
        raise ExperimentError(f"--out {out} is a folder; give a file name such as report.html")
    experiment = load_experiment(ref, storage)
    frame = experiment_frame(experiment)

    @functools.cache
    def study():  # built once, for the three figures that plot it
        return optuna_plots.leaderboard_study(experiment)

    sections = [
        Section("leaderboard", "Leaderboard", _leaderboard_html(experiment, frame)),
        _figure_section("curves", "Learning curves", lambda: curves.learning_curves(experiment)),
        _figure_section("slices", "val IoU against each hyperparameter", lambda: optuna_plots.slices(study())),
        _figure_section("parallel", "Parallel coordinates", lambda: optuna_plots.parallel_coordinates(study())),
        _figure_section("importance", "Hyperparameter importance", lambda: optuna_plots.importances(study())),
        _figure_section("timeline", "val IoU by trial over time", lambda: timeline.iou_over_time(experiment)),
    ]
    ensemble = _ensemble_section(experiment)
    if ensemble is not None:
        sections.insert(1, ensemble)
    if experiment.optuna_db is not None:
        sections.append(_figure_section("optuna", "The Optuna searcher's history",
                                        lambda: optuna_plots.searcher_history(experiment)))
    if overlay_images > 0:
        sections.append(_overlay_section(experiment, overlay_images))
    sections.append(Section("errors", "Failed trials", _errors_html(experiment)))
    page = render(experiment, sections, frame)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ExperimentError(f"cannot write the report {out}: {exc.strerror or exc}") from None
    report = Report(path=out, sections=sections)
    for anchor, why in report.unavailable.items():
        log.info("report section %s not available: %s", anchor, why)
    return report
