"""Reliability matrix: a malformed or hostile YAML search space.

Each: ConfigError (exit code 2) with one line naming the problem, raised while the space
is loaded: before the experiment folder is claimed, Ray is started or anything is
written; a YAML tag that would run code (`!!python/object/apply`) never runs it.
"""

from __future__ import annotations

import re

import pytest

from nuclei_search.errors import ConfigError
from nuclei_search.search.space import SearchSpace
from search_helpers import assert_one_line_error, run_cli


def yaml_bomb(levels: int, where: str) -> str:
    """A billion-laughs document: 9**levels list items from a few hundred bytes of aliases."""
    lines = ["description:", "  l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    last = f"*l{levels - 1}"
    body = {"choice": f"params: {{loss: {{choice: {last}}}}}",
            "fixed": f"fixed: {{epochs: {last}}}\nparams: {{loss: {{choice: [bce]}}}}",
            "start_from": f"params: {{loss: {{choice: [bce]}}}}\nstart_from: [{{loss: {last}}}]",
            "description": "params: {loss: {choice: [bce]}}"}[where]
    return "\n".join(lines) + "\n" + body + "\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("params: {backbone: {choice: [vgg16]}}", "unknown backbone 'vgg16'"),
        ("params: {colour: {choice: [red]}}", "param 'colour': unknown param"),
        ("fixed: {epochz: 3}\nparams: {dropout: {uniform: [0, 0.1]}}", "unknown fixed key 'epochz'"),
        ("params: {learning_rate: {loguniform: [0.1, 0.001]}}", "low 0.1 > high 0.001"),
        ("params: {loss: {choice: []}}", "choice needs a non-empty list"),
        ("params: {}", "'params' is empty"),
        ("params: {backbone: {choice: [efficientnet]}}", "needs a 'efficientnet_variant' param"),
        ("params: {dropout: {uniform: [0, 0.1], when: {backbone: none}}}", "not an earlier choice param"),
        ("params: {dropout: {uniform: [0, 0.1]}}\nextra: 1", "unknown top-level key"),
        ("params: [1, 2", "not valid YAML"),
        ("!!python/object/apply:os.system ['echo hacked']", "not valid YAML"),
        ("params: {decoder_depth: {int: [3, 9]}}", "decoder_depth"),
        ("- 1\n- 2\n", "a search space is a mapping"),
        ("\x00", "not valid YAML"),
        ("params: {loss: {choice: *nowhere}}", "not valid YAML"),
        (yaml_bomb(9, "choice"), "choice values must be plain scalars"),
        (yaml_bomb(9, "fixed"), "fixed 'epochs' must be a single value"),
        (yaml_bomb(9, "start_from").replace("description:", "fixed: {}\nanchors:"), "unknown top-level key"),
        ("params: {loss: {choice: [bce]}}\nstart_from: [{loss: [bce, [bce, bce]]}]",
         "start_from entry 1: 'loss' must be a single value"),
        ("params: {loss: {choice: [bce]}}\nstart_from: [{loss: focal}]", "loss='focal' is outside the space"),
        ("description: 42\nparams: {loss: {choice: [bce]}}", "'description' must be a string (got int)"),
        ("description: " + "x" * 10_001 + "\nparams: {loss: {choice: [bce]}}",
         "'description' has 10001 characters; at most 10000"),
        ("params: {loss: {choice: [bce]}}\nparams: {loss: {choice: [dice]}}", "key 'params' appears twice"),
        ("params: {loss: {choice: [bce], choice: [dice]}}", "key 'choice' appears twice in one mapping (line 1)"),
    ],
)
def test_bad_spaces_are_rejected_with_a_clear_message(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        SearchSpace.from_text(text)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


@pytest.mark.parametrize("levels", [4, 9])
def test_a_yaml_bomb_in_the_description_is_refused(levels):
    with pytest.raises(ConfigError, match=r"'description' must be a string \(got dict\)") as caught:
        SearchSpace.from_text(yaml_bomb(levels, "description"))  # refused without expanding it
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["unknown backbone", "code execution tag", "broken YAML", "YAML bomb",
                                  "YAML bomb in description", "duplicate key"])
def test_bad_space_file_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    marker = tmp_path / "hacked"
    text, needles = {
        "unknown backbone": ("params: {backbone: {choice: [vgg16]}}", ["unknown backbone 'vgg16'"]),
        "code execution tag": (f"!!python/object/apply:os.system ['touch {marker}']", ["not valid YAML"]),
        "broken YAML": ("params: {loss: {choice: [bce, dice}}", ["not valid YAML"]),
        "YAML bomb": (yaml_bomb(9, "choice"), ["choice values must be plain scalars"]),
        "YAML bomb in description": (yaml_bomb(9, "description"), ["'description' must be a string"]),
        "duplicate key": ("params: {loss: {choice: [bce]}, loss: {choice: [dice]}}", ["key 'loss' appears twice"]),
    }[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, out, err = run_cli(capsys, "run", "--space", bad, "--name", "x", "--storage", tmp_path / "exp")
    assert_one_line_error(code, err, str(bad), *needles)
    assert out == ""
    assert not (tmp_path / "exp").exists()  # no experiment folder, no study, no Ray session
    assert not marker.exists()  # the tag's command never ran
    assert bad.read_text() == text
