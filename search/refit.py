"""The refit stage of a search: explore cheaply, then train the winners to the full budget.

`RefitStage` is a Ray Tune `Searcher` wrapped around the search's own (Optuna behind a
`ConcurrencyLimiter`), composed the way Ray composes its searchers. For the first
`explore` trials it passes the inner searcher's suggestions through; once every one of
them has ended it ranks them by their best `val_iou_best` and suggests the top-K
distinct configurations again, each with `refit_of` (the trial it retrains) and
`refit_epochs` (its new length: the same for every refit, or sized from the trial's measured
seconds per epoch to fit the stage's wall time: `--refit-minutes`, or what is left of the
search's `--time-budget` when exploration ends) added to the config. Those are ordinary trials of the
same experiment: same leaderboard, checkpoints, failure handling, placement and resume
(the stage's state is saved with Ray's searcher state). They train from scratch, so the
learning-rate schedule spans the whole refit length.

The refit trials are not told to Optuna (they are not its samples) and not scheduled by
ASHA or the median rule (`RefitASHA`, `RefitMedianStoppingRule`): they always run to the end.
"""

from __future__ import annotations

import copy
import logging
import time

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

from nuclei_search.config import TrialConfig
from nuclei_search.contract import TIME_ATTR
from nuclei_search.models.train import validation_epochs
from nuclei_search.search.space import REFIT_EPOCHS, REFIT_OF

log = logging.getLogger(__name__)


def is_refit(config: dict | None) -> bool:
    return bool(config) and config.get(REFIT_OF) is not None


class RefitStage(Searcher):
    """Pass `explore` suggestions of `searcher` through, then suggest the top `top_k` again."""

    def __init__(self, searcher: Searcher, explore: int, top_k: int, epochs: int, minutes: float | None = None,
                 concurrency: int = 1, budget_minutes: float | None = None, validation: tuple[int, float] = (1, 1.0),
                 metric: str | None = None, mode: str | None = None) -> None:
        self.searcher = searcher
        self.explore = int(explore)
        self.top_k = int(top_k)
        self.epochs = int(epochs)  # each refit's length; with `minutes`, the most
        self.minutes = minutes  # the refit stage's wall time, shared by `concurrency` slots
        self.concurrency = max(1, int(concurrency))
        self.budget_minutes = budget_minutes  # of the whole search: the refit stage gets what is left
        self.spent = 0.0  # seconds the search has run (the driver's running time, as Ray's time_budget_s)
        self._last_tick: float | None = None
        self.validation = tuple(validation)  # the refits' (validation_freq, validation_tail)
        # exploration trial id -> (seconds trained, epochs, seconds validating, validations)
        self.speed: dict[str, tuple[float, int, float, int]] = {}
        self.lengths: dict[str, int] = {}  # exploration trial id -> the epochs of its refit
        self.configs: dict[str, dict] = {}  # exploration trial id -> its suggested config
        self.scores: dict[str, float] = {}  # exploration trial id -> best metric value reported
        self.ended: set[str] = set()  # exploration trials that completed or errored
        self.refits: dict[str, str] = {}  # refit trial id -> the exploration trial it retrains
        self.plan: list[str] | None = None  # exploration trials chosen for refit, best first
        super().__init__(metric=metric or searcher.metric, mode=mode or searcher.mode)

    # --- wiring, as ConcurrencyLimiter does it ---------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def get_state(self) -> dict:
        state = self.__dict__.copy()
        del state["searcher"]
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)
        self._last_tick = None  # the time the driver was down does not count

    def _tick(self) -> None:
        now = time.time()
        if self._last_tick is not None:
            self.spent += now - self._last_tick
        self._last_tick = now

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def on_pause(self, trial_id: str) -> None:
        if trial_id not in self.refits:
            self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        if trial_id not in self.refits:
            self.searcher.on_unpause(trial_id)

    # --- the two stages -------------------------------------------------------------
    def suggest(self, trial_id: str):
        self._tick()
        if len(self.configs) < self.explore:
            config = self.searcher.suggest(trial_id)
            if isinstance(config, dict):
                self.configs[trial_id] = dict(config)
            return config
        if len(self.ended) < len(self.configs):
            return None  # wait until every exploration trial has ended: ranks are final then
        if self.plan is None:
            self.plan = self.ranked()[: self.top_k]
            if self.budget_minutes is not None:
                left = self.budget_minutes - self.spent / 60.0
                log.info("refit stage: %.1f of the search's %g minutes left after %.1f minutes of exploration",
                         max(left, 0.0), self.budget_minutes, self.spent / 60.0)
                if left <= 0:
                    log.warning("refit stage skipped: the time budget is spent")
                    self.plan = []
                minutes = left if self.minutes is None else min(self.minutes, left)
            else:
                minutes = self.minutes
            self.lengths = {source: self.refit_length(source, minutes) for source in self.plan}
            log.info("refit stage: %d configuration(s) to train again: %s", len(self.plan),
                     ", ".join(f"{s} for {n} epochs" for s, n in self.lengths.items()) or "none (no trial reported)")
        if len(self.refits) >= len(self.plan):
            return Searcher.FINISHED
        source = self.plan[len(self.refits)]
        self.refits[trial_id] = source
        return {**self.configs[source], REFIT_OF: source, REFIT_EPOCHS: self.lengths.get(source, self.epochs)}

    def refit_length(self, source: str, minutes: float | None) -> int:
        """The epochs of `source`'s refit: `epochs`, or with the stage's `minutes` as many as fit in its share of
        the stage's wall time (the stage's slots run the plan's trials side by side, in waves when
        there are more trials than slots) at the speed `source` measured while exploring, under the
        same concurrency: seconds per trained epoch (start-up included) and per validation, with the
        refit's own validation epochs (`models.train.validation_epochs`), at most `epochs`."""
        seconds, done, validating, validations = (tuple(self.speed.get(source, ())) + (0.0, 0, 0.0, 0))[:4]
        if minutes is None or not done or seconds <= 0:
            return self.epochs
        share = minutes * 60.0 * min(self.concurrency, len(self.plan)) / len(self.plan)
        per_epoch = (seconds - validating) / done
        per_validation = validating / validations if validations else 0.0
        if per_epoch <= 0:  # no seconds left for training: validation was not timed apart
            per_epoch, per_validation = seconds / done, 0.0
        freq, tail = self.validation

        def seconds_for(epochs: int) -> float:
            plan = validation_epochs(TrialConfig(epochs=epochs, validation_freq=freq, validation_tail=tail))
            return epochs * per_epoch + len(plan) * per_validation

        length = 1
        for epochs in range(1, self.epochs + 1):
            if seconds_for(epochs) > share:
                break
            length = epochs
        return length

    def ranked(self) -> list[str]:
        """Exploration trials with a score, best first, one per distinct configuration."""
        sign = -1.0 if self.mode == "max" else 1.0
        order = sorted(self.scores, key=lambda t: (sign * self.scores[t], t))
        chosen, seen = [], []
        for trial_id in order:
            config = self.configs.get(trial_id)
            if config is None or config in seen:
                continue
            chosen.append(trial_id)
            seen.append(config)
        return chosen

    def _record(self, trial_id: str, result: dict | None) -> None:
        value = (result or {}).get(self.metric)
        if value is None:
            return
        value = float(value)
        if value != value:  # NaN
            return
        best = self.scores.get(trial_id)
        better = best is None or (value > best if self.mode == "max" else value < best)
        if better:
            self.scores[trial_id] = value

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._tick()
        if trial_id in self.refits:
            return
        self._record(trial_id, result)
        if result.get("time_total_s") and result.get(TIME_ATTR):
            _, _, validating, validations = (tuple(self.speed.get(trial_id, ())) + (0.0, 0, 0.0, 0))[:4]
            if result.get("validation_seconds") is not None:
                validating, validations = validating + float(result["validation_seconds"]), validations + 1
            self.speed[trial_id] = (float(result["time_total_s"]), int(result[TIME_ATTR]), validating, validations)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._tick()
        if trial_id in self.refits:
            return
        self._record(trial_id, result)
        if trial_id in self.configs:
            self.ended.add(trial_id)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, parameters, value, error=False, pruned=False, intermediate_values=None):
        return self.searcher.add_evaluated_point(parameters, value, error, pruned, intermediate_values)


class _RefitsRunToTheEnd:
    """Mixin for a Ray scheduler: refit trials bypass it (never stopped, not in its statistics)."""

    def on_trial_add(self, tune_controller, trial) -> None:
        if not is_refit(trial.config):
            super().on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        if not is_refit(trial.config):
            super().on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_refit(trial.config):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not is_refit(trial.config):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not is_refit(trial.config):
            super().on_trial_remove(tune_controller, trial)


class RefitASHA(_RefitsRunToTheEnd, ASHAScheduler):
    """Ray's ASHA for the exploration trials; refit trials run their full length."""


class RefitMedianStoppingRule(_RefitsRunToTheEnd, MedianStoppingRule):
    """Ray's median stopping rule for the exploration trials; refit trials run their full length."""
