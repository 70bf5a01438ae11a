"""A Ray Tune callback that kills the search driver with SIGKILL once, inside a save.

Ray deletes a trial's superseded checkpoint when it registers the next one and saves the
experiment state at the end of that controller step: it writes the state to its driver
staging folder, collects the callbacks' states (`Callback.get_state`), then copies it
into the experiment folder. Killing the driver in `get_state` when the state still in the
experiment folder names a checkpoint that is already deleted is a crash in exactly that
window, which is too short to hit from outside. Ray keeps callbacks with the experiment,
so a marker file makes the kill happen once and `resume` goes on.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ray import tune

from nuclei_search.errors import ExperimentError
from nuclei_search.search.checkpoint_repair import recorded_checkpoints


class KillDriverWhenStateNamesDeletedCheckpoint(tune.Callback):
    def __init__(self, experiment: str | Path, marker: str | Path):
        self.experiment = Path(experiment)
        self.marker = Path(marker)

    def get_state(self):
        if not self.marker.exists():
            try:
                recorded = recorded_checkpoints(self.experiment)
            except (ValueError, ExperimentError):  # a state file still being copied in: look at the next save
                return None
            missing = [str(p) for p in recorded.values() if not p.is_dir()]
            if missing:
                self.marker.write_text("\n".join(missing))
                os.kill(os.getpid(), signal.SIGKILL)
        return None
