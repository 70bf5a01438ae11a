"""A tiny real trainable for the orchestration tests: Ray Tune runs it like the U-Net one.

`tiny_trainable` goes through the same `search.trainable.run_trial` as `train_unet` (start
records with the trial's placement, resume from Ray's checkpoint, a report and a checkpoint
each epoch, `train_state.json` in it), but an epoch is a short sleep and its `val_iou` a
formula of the config (every report says `trainable: tiny`), so GPU placement, node loss and kill -9 are tested in seconds
instead of minutes of U-Net training. Where the U-Net is the point (NaN losses, the
leaderboard's figures, one real end-to-end search) the tests keep `train_unet`.

`python tests/tiny_trainable.py ARGS` is `nuclei-search ARGS` with it in place of the U-Net,
for tests that run the CLI in a subprocess and kill it.

Its functions are pickled by value, so Ray worker nodes run it without this folder on
their path (as they run a user's notebook-defined trainable).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ray import cloudpickle

from nuclei_search.contract import STATE_FILE
from nuclei_search.search import trainable
from nuclei_search.search.space import SearchSpace

EPOCH_SECONDS = 0.4


def _val_iou(config, epoch: int) -> float:
    """Rises with the epochs, faster with a larger learning rate (1e-6 learns nothing)."""
    return round((1.0 - math.exp(-epoch * config.learning_rate * 100.0)) * (1.0 - config.dropout / 2), 6)


def tiny_trainable(config: dict, space_source: str | None = None, space_text: str | None = None,
                   milestones: tuple[int, ...] = ()) -> None:
    trial_config = SearchSpace.from_text(space_text, source=space_source or "<space>").resolve(config)

    def fit(resume_from: str | None, report) -> None:
        state = {"epoch": 0, "history": [], "best": {}}
        if resume_from:
            state = json.loads((Path(resume_from) / STATE_FILE).read_text())
        for epoch in range(state["epoch"] + 1, trial_config.epochs + 1):
            time.sleep(EPOCH_SECONDS)
            iou = _val_iou(trial_config, epoch)
            row = {"epoch": epoch, "loss": 1.0 - iou, "val_iou": iou, "val_dice": 2 * iou / (1 + iou),
                   "val_map": iou / 2}
            state["epoch"] = epoch
            state["history"].append(row)
            if iou >= state["best"].get("val_iou", -1.0):
                state["best"] = row

            def save(folder: str) -> None:
                (Path(folder) / STATE_FILE).write_text(json.dumps(state))

            report(row, state["best"]["val_iou"], save)

    trainable.run_trial(fit, backbone_resolved=trial_config.backbone, trainable="tiny")


if __name__ == "__main__":
    from nuclei_search.cli import main

    import tiny_trainable as module  # pickled by value below, as when a test imports it

    trainable.train_unet = module.tiny_trainable  # what `runner.build_trainable` uses by default
    sys.exit(main(sys.argv[1:]))
else:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
