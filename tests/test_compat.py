"""Experiments written before the packages moved under nuclei_search still read."""

from __future__ import annotations

import pickle
import sys

import pytest

from nuclei_search.compat import old_module_names
from nuclei_search.search import summary


def test_old_module_names_resolve_to_the_new_modules_only_while_reading():
    new = pickle.dumps(summary.SearchSummary, protocol=0)  # protocol 0 names the module in plain text
    old = new.replace(b"nuclei_search.search.summary", b"search.summary")  # as it was pickled before the move
    assert old != new
    with old_module_names():
        assert pickle.loads(old) is summary.SearchSummary  # the same class, not a second copy of the module
    assert "search" not in sys.modules and "search.summary" not in sys.modules


@pytest.mark.slow  # reads a copy of the run's tiny real experiment (tests/results_helpers.py)
def test_an_experiment_state_written_with_the_old_names_lists_its_trials(tiny_experiment, tmp_path):
    """A real experiment whose saved state names the search's modules as before the move."""
    import json
    import shutil

    from nuclei_search.results.trials import load_experiment

    copy = tmp_path / tiny_experiment.name
    shutil.copytree(tiny_experiment, copy)
    # Ray pickles one object of ours into each trial's state: the trial-folder naming function.
    # Written before the move, it named `search.runner`; write it so.
    from ray import cloudpickle

    from nuclei_search.search import runner

    with old_module_names():
        runner.trial_dirname.__module__ = "search.runner"
        try:
            old_pickle = cloudpickle.dumps(runner.trial_dirname).hex()
        finally:
            runner.trial_dirname.__module__ = "nuclei_search.search.runner"
    assert "7365617263682e72756e6e6572" in old_pickle  # b"search.runner"
    state_file = sorted(copy.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        assert trial["trial_dirname_creator"]["_type"] == "CLOUDPICKLE_FALLBACK"
        trial["trial_dirname_creator"]["value"] = old_pickle
        entry[0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    before = load_experiment(tiny_experiment)
    experiment = load_experiment(copy)
    assert [t.trial_id for t in experiment.trials] == [t.trial_id for t in before.trials]
    assert [t.best for t in experiment.trials] == [t.best for t in before.trials]
    assert any(t.best is not None for t in experiment.trials)
    assert "search" not in sys.modules and "search.runner" not in sys.modules
