"""The search's console: one compact live table on a terminal, one line per event elsewhere.

`SearchConsole` is a Ray Tune `Callback`: Ray calls it as trials start, report, finish and
fail, and it shows a header (experiment, trials done/running/total, best so far, elapsed,
estimated time left from the trials' epoch times) over a table (trial, status, epoch,
`val_iou_best`, the searched parameters, minutes). On a terminal the table is redrawn in
place (rich's `Live`); when output is not a terminal (CI logs, `ray job submit`) each event
is one line. Ray's own per-trial boxes are off (`RunConfig(verbose=0)`) unless the user
asks for them with `--verbose`.

Ray keeps a run's callbacks with the experiment, so `resume` shows the same console;
whether it draws a live table or lines is decided again in each process.
"""

from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback

from nuclei_search.search.space import REFIT_EPOCHS, REFIT_OF

RANK = "val_iou_best"
MAX_ROWS = 20  # trials shown on a terminal: the running ones, then the best finished


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


class SearchConsole(Callback):
    def __init__(self, experiment: str, total: int, max_epochs: int, concurrency: int,
                 searched: list[str] | None = None, live: bool | None = None):
        self.experiment = experiment
        self.searched = list(searched) if searched is not None else None  # None: every config key
        self.total = total
        self.max_epochs = max_epochs
        self.concurrency = max(1, concurrency)
        self.live_requested = live
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, dict] = {}
        self.started = time.time()
        self._live = None
        self._console = None

    def __getstate__(self) -> dict:  # Ray pickles callbacks with the experiment: drop the terminal
        return {k: v for k, v in self.__dict__.items() if k not in ("_live", "_console", "rows", "started")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    # ------------------------------------------------------------------ Ray Tune events
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        from rich.console import Console

        self._console = Console(file=sys.stdout)
        live = self._console.is_terminal if self.live_requested is None else self.live_requested
        if live:
            from rich.live import Live

            self._live = Live(self._render(), console=self._console, refresh_per_second=2, transient=False)
            self._live.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "RUNNING"
        self._event(trial, "started" if not row.get("epoch") else f"continues from epoch {row['epoch']}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._row(trial)
        row.update(status="RUNNING", epoch=int(result.get("epoch") or result.get("training_iteration") or 0),
                   seconds=float(result.get("time_total_s") or 0.0))
        if result.get(RANK) is not None and math.isfinite(float(result[RANK])):
            row["best"] = float(result[RANK])
        self._event(trial, f"epoch {row['epoch']} {RANK} {_format(row.get('best', float('nan')))}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "DONE" if row.get("epoch", 0) >= row["epochs"] else "STOPPED"
        self._event(trial, "finished" if row["status"] == "DONE" else f"stopped early at epoch {row.get('epoch')}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "ERROR"
        self._event(trial, "failed (see `nuclei-search leaderboard`)")

    def on_experiment_end(self, trials, **info) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    # ------------------------------------------------------------------ state and rendering
    def _row(self, trial) -> dict:
        if trial.trial_id not in self.rows:
            config = dict(trial.config or {})
            refit = config.pop(REFIT_OF, None) is not None
            epochs = int(config.pop(REFIT_EPOCHS, None) or self.max_epochs)
            if self.searched is not None:
                config = {k: v for k, v in config.items() if k in self.searched}
            self.rows[trial.trial_id] = {"trial": trial.trial_id, "status": "PENDING", "params": config,
                                         "refit": refit, "epochs": epochs}
        return self.rows[trial.trial_id]

    def _event(self, trial, what: str) -> None:
        if self._live is not None:
            self._live.update(self._render())
        elif self._console is not None:
            print(f"{time.strftime('%H:%M:%S')} {self.header()} | trial {trial.trial_id} {what}",
                  file=self._console.file, flush=True)

    def counts(self) -> tuple[int, int]:
        done = sum(r["status"] in ("DONE", "STOPPED", "ERROR") for r in self.rows.values())
        running = sum(r["status"] == "RUNNING" for r in self.rows.values())
        return done, running

    def best(self) -> dict | None:
        scored = [r for r in self.rows.values() if "best" in r]
        return max(scored, key=lambda r: r["best"]) if scored else None

    def eta_seconds(self) -> float | None:
        """Time left if every unfinished trial ran to max_epochs (ASHA usually stops some
        sooner): epochs left × mean seconds per epoch so far / trials at once."""
        epochs = sum(r.get("epoch", 0) for r in self.rows.values())
        seconds = sum(r.get("seconds", 0.0) for r in self.rows.values())
        if not epochs:
            return None
        left = sum(max(0, r["epochs"] - r.get("epoch", 0)) for r in self.rows.values()
                   if r["status"] in ("RUNNING", "PENDING"))
        left += max(0, self.total - len(self.rows)) * self.max_epochs
        return left * (seconds / epochs) / self.concurrency

    def header(self) -> str:
        done, running = self.counts()
        best = self.best()
        elapsed = time.time() - self.started
        eta = self.eta_seconds()
        parts = [f"{self.experiment}: {done}/{self.total} trials done, {running} running",
                 f"best {RANK} {best['best']:.4f} ({best['trial']})" if best else f"best {RANK} -",
                 f"elapsed {elapsed / 60:.1f} min"]
        if eta is not None and done < self.total:
            parts.append(f"left ≤ {eta / 60:.1f} min")
        return ", ".join(parts)

    def _render(self):
        from rich.table import Table

        params = self.searched if self.searched is not None else sorted(
            {k for r in self.rows.values() for k in r["params"]})
        table = Table(title=self.header(), title_justify="left", expand=False, pad_edge=False)
        for column in ("trial", "status", "epoch", RANK):  # never squeezed
            table.add_column(column, justify="left" if column in ("trial", "status") else "right", no_wrap=True,
                             min_width=len(column) if column != "status" else 7)
        for column in (*params, "min"):
            table.add_column(column, justify="right", overflow="ellipsis", no_wrap=True, max_width=14)
        order = {"RUNNING": 0, "DONE": 1, "STOPPED": 1, "PENDING": 2, "ERROR": 3}
        rows = sorted(self.rows.values(), key=lambda r: (order[r["status"]], -r.get("best", -1.0)))
        for r in rows[:MAX_ROWS]:
            status = r["status"] + (" refit" if r.get("refit") else "")
            table.add_row(r["trial"], status, str(r.get("epoch", "")),
                          f"{r['best']:.4f}" if "best" in r else "",
                          *(_format(r["params"].get(p, "")) for p in params),
                          f"{r.get('seconds', 0.0) / 60:.1f}")
        if len(rows) > MAX_ROWS:
            table.caption = f"{len(rows) - MAX_ROWS} more trials: `nuclei-search leaderboard {self.experiment}`"
        return table
