"""What a finished (or interrupted) search reports back, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SearchSummary:
    experiment: Path
    trials: int
    terminated: int
    errored: int
    best_trial: str | None
    best: dict
    wall_seconds: float
    trial_seconds: float  # Σ of the trials' own time (Ray's time_total_s)
    concurrency: int

    @property
    def overhead(self) -> float:
        """Orchestration overhead: wall time / (Σ trial time / concurrency) - 1."""
        ideal = self.trial_seconds / max(1, self.concurrency)
        return self.wall_seconds / ideal - 1.0 if ideal > 0 else float("nan")
