"""`nuclei-search dashboard`: a live web view of running and finished searches.

A Starlette app served by uvicorn on 127.0.0.1. It reads experiment folders the way the
leaderboard and the report do (`results.trials.load_experiment`), on every poll, and never
writes to them: a trial folder that appears shows up at the next poll, one that disappears
drops out, and a half-written file is read as the engines' readers read it (the last good
state is kept and the page notes the error). The page (`dashboard.html`, plain JavaScript
and plotly.js) polls the JSON endpoints below and redraws in place:

- `/api/experiments`: the experiments shown (those named on the command line, else every
  experiment under the storage root, found again on each poll) with their trial counts;
- `/api/leaderboard?exp=A&exp=B`: the leaderboard rows of several experiments side by side;
- `/api/figure/{curves|types|timeline}?exp=A`: the report's plotly figures as JSON;
- `/api/predictions.png?exp=A&trial=T`: validation images of a trial with the truth and
  the prediction outlined (the report's figure; cached per trial and best epoch).
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from pathlib import Path

from nuclei_search.cluster.storage import is_remote
from nuclei_search.errors import ExperimentError, NucleiSearchError
from nuclei_search.results.leaderboard import experiment_frame, records
from nuclei_search.results.plots import PlotUnavailable, by_type, curves, timeline
from nuclei_search.results.plots.overlays import prediction_panels
from nuclei_search.results.trials import Experiment, load_experiment
from nuclei_search.search.experiment import EXPERIMENT_FILE, storage_root

log = logging.getLogger(__name__)

POLL_TTL = 1.0  # seconds an experiment read is reused by the endpoints of one poll
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ExperimentSource:
    """The experiments a dashboard shows, read fresh (at most every POLL_TTL seconds)."""

    def __init__(self, refs: list[str], storage: str | None) -> None:
        self.refs = list(refs)
        self.storage = storage
        self._cache: dict[str, tuple[float, Experiment | None, str | None]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if self.refs:
            return self.refs
        root = storage_root(self.storage)
        if is_remote(root):
            raise ExperimentError(f"name the experiments to show on {root}: `nuclei-search dashboard EXP ...`")
        folder = Path(root)
        found = [p.name for p in sorted(folder.iterdir()) if (p / EXPERIMENT_FILE).is_file()] if folder.is_dir() else []
        return found

    def get(self, ref: str) -> tuple[Experiment | None, str | None]:
        """(experiment, None), or the last good read and the error of this one."""
        with self._lock:
            stamp, cached, _ = self._cache.get(ref, (0.0, None, None))
            if time.monotonic() - stamp < POLL_TTL:
                return self._cache[ref][1], self._cache[ref][2]
        try:
            experiment, error = load_experiment(ref, self.storage), None
        except (NucleiSearchError, OSError, ValueError) as exc:  # mid-write, removed, not yet started
            experiment, error = cached, str(exc)
        with self._lock:
            self._cache[ref] = (time.monotonic(), experiment, error)
        return experiment, error


def summary(ref: str, experiment: Experiment | None, error: str | None) -> dict:
    """`ref`: how the dashboard reads the experiment (name or folder); `name`: its folder name."""
    if experiment is None:
        return {"ref": ref, "name": Path(ref).name, "error": error, "trials": 0}
    counts: dict[str, int] = {}
    for trial in experiment.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    scored = [t for t in experiment.trials if t.best is not None]
    best = max(scored, key=lambda t: float(t.best["val_iou"])) if scored else None
    options = experiment.options
    return {"ref": ref, "name": experiment.name, "path": str(experiment.path), "engine": experiment.engine,
            "error": error,
            "storage": options.storage, "trials": len(experiment.trials), "planned": options.num_samples
            + options.refit_top, "status": counts, "searched": experiment.searched,
            "best": {"trial": best.trial_id, "val_iou": float(best.best["val_iou"])} if best else None}


def create_app(refs: list[str], storage: str | None = None):
    """The dashboard's Starlette app for experiments `refs` (names or folders; none: all under storage)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    source = ExperimentSource(refs, storage)
    page = (resources.files("nuclei_search.results") / "dashboard.html").read_text(encoding="utf-8")
    predictions: dict[tuple, bytes] = {}
    plotly_js: list[str] = []

    def index(request: Request):
        return HTMLResponse(page)

    def plotly(request: Request):
        if not plotly_js:
            from plotly.offline import get_plotlyjs

            plotly_js.append(get_plotlyjs())
        return Response(plotly_js[0], media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    def experiments(request: Request):
        try:
            names = source.names()
        except (NucleiSearchError, OSError) as exc:
            return JSONResponse({"experiments": [], "error": str(exc)})
        return JSONResponse({"experiments": [summary(n, *source.get(n)) for n in names], "time": time.time()})

    def leaderboard(request: Request):
        rows, hyper, errors = [], [], {}
        for ref in request.query_params.getlist("exp"):
            experiment, error = source.get(ref)
            if error:
                errors[ref] = error
            if experiment is None:
                continue
            frame = experiment_frame(experiment)
            hyper += [h for h in frame.attrs.get("hyperparameters", []) if h not in hyper]
            for row in records(frame):
                row["ref"] = ref  # the experiment column holds its name; the page asks by ref
                rows.append(row)
        return JSONResponse({"rows": rows, "hyperparameters": hyper, "errors": errors})

    def figure(request: Request):
        kind = request.path_params["kind"]
        builders = {"curves": curves.learning_curves, "types": by_type.iou_by_type,
                    "timeline": timeline.iou_over_time}
        if kind not in builders:
            return JSONResponse({"unavailable": f"no figure {kind!r}"}, status_code=404)
        experiment, error = source.get(request.query_params.get("exp", ""))
        if experiment is None:
            return JSONResponse({"unavailable": error or "no such experiment"})
        try:
            fig = builders[kind](experiment)
        except PlotUnavailable as exc:
            return JSONResponse({"unavailable": str(exc)})
        return Response(fig.to_json(), media_type="application/json")

    def prediction_png(request: Request):
        experiment, error = source.get(request.query_params.get("exp", ""))
        if experiment is None:
            return Response(error or "no such experiment", status_code=404, media_type="text/plain")
        try:
            trial = experiment.trial(request.query_params.get("trial", ""))
            key = (str(experiment.path), trial.trial_id, trial.best_epoch)
            if key not in predictions:
                predictions[key] = prediction_panels(trial, n_images=4)[0]
        except (PlotUnavailable, NucleiSearchError) as exc:
            return Response(str(exc), status_code=404, media_type="text/plain")
        return Response(predictions[key], media_type="image/png")

    return Starlette(routes=[
        Route("/", index), Route("/plotly.js", plotly), Route("/api/experiments", experiments),
        Route("/api/leaderboard", leaderboard), Route("/api/figure/{kind}", figure),
        Route("/api/predictions.png", prediction_png),
    ])


def check_host(host: str, allow_remote: bool) -> bool:
    """True for a loopback host; a non-loopback one needs `allow_remote` (ExperimentError otherwise)."""
    if host in LOOPBACK:
        return True
    if not allow_remote:
        raise ExperimentError(f"--host {host} would serve the dashboard beyond this machine; "
                              "pass --allow-remote as well if that is what you want")
    return False


def serve(refs: list[str], storage: str | None = None, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Serve the dashboard until interrupted (the CLI checks the host first)."""
    import uvicorn

    # Ray's reader warns about every trial that has not written its first result yet
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    uvicorn.run(create_app(refs, storage), host=host, port=port, log_level="warning")
