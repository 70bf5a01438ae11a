"""One module per report figure; plotting libraries (plotly, optuna.visualization,
matplotlib) are imported inside the functions, never at import time.

Each module has a function that takes an `results.trials.Experiment` (and what else it
needs) and returns a figure, or raises `PlotUnavailable` saying why it cannot be drawn
(e.g. too few finished trials); the report shows that reason in the figure's place.
"""


class PlotUnavailable(Exception):
    """A figure cannot be drawn for this experiment; the message says why."""
