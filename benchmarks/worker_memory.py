"""RSS of one worker process over 20 consecutive trials.

A Ray Tune search with `--reuse-actors` runs trial after trial in one worker process,
KerasTuner runs its trials in-process, and a user may call `models.train.train` in a
loop: in each, trials share a process. This benchmark runs
20 consecutive small trials (synthetic data, 64 px, 2 epochs, different configs) in
this one process and reads its resident set size (/proc/self/statm) after each.
Growth = RSS after trial 20 − RSS after trial 6: the configs (2 backbones × 3 depths ×
2 widths) repeat every 6 trials, and until each has run once the allocator is still
reaching the high-water mark of the largest model; growth from trial 1 and the slope
are reported too.
"""

from __future__ import annotations

import gc
import logging
import os

import numpy as np

from benchmarks.common import result

NAME = "worker_memory"
MEASURE = "memory: RSS growth of one worker over 20 consecutive trials"
TARGET = "<= 200 MB"

log = logging.getLogger(__name__)
#: the trial configs repeat every CYCLE trials (2 backbones x 3 depths x 2 widths)
CYCLE = 6


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(quick: bool = False, trials: int = 20) -> dict:
    from nuclei_search.models.train import train
    from nuclei_search.config import TrialConfig

    trials = 3 if quick else trials
    rss = []
    for k in range(trials):
        config = TrialConfig(data="synthetic", image_size=64, batch_size=8, epochs=1 if quick else 2,
                             backbone=("mobilenetv2", "none")[k % 2], decoder_depth=3 + k % 3,
                             base_filters=8 * (1 + k % 2), seed=k)
        result_ = train(config, cpus=os.cpu_count())
        del result_
        gc.collect()
        rss.append(rss_mb())
        log.info("trial %d: RSS %.0f MB", k + 1, rss[-1])
    return summarise(rss)


def summarise(rss: list[float]) -> dict:
    """Growth after the first cycle of configurations (by then the allocator has held the
    largest model once: its high-water mark is not a leak), and from the first trial."""
    warm = min(CYCLE, len(rss)) - 1
    growth = rss[-1] - rss[warm]
    slope = float(np.polyfit(np.arange(warm, len(rss)), rss[warm:], 1)[0]) if len(rss) - warm > 2 else float("nan")
    return result(NAME, MEASURE, TARGET, growth, "MB", growth <= 200, trials=len(rss), rss_mb=rss,
                  peak_mb=max(rss), growth_from_first_trial_mb=rss[-1] - rss[0],
                  growth_after_first_cycle_mb=growth, slope_mb_per_trial_after_first_cycle=slope, cycle=CYCLE)
