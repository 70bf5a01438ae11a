"""docs/cli.md is generated from the argument parsers and must stay equal to them."""

from __future__ import annotations

from pathlib import Path

from nuclei_search.cli import build_parser
from nuclei_search.cli.reference import render

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_what_the_parsers_say():
    assert CLI_MD.read_text() == render(), (
        "docs/cli.md is out of date: regenerate it with `python -m nuclei_search.cli.reference > docs/cli.md`")


def test_the_reference_names_every_command_and_flag():
    text = render()
    parser = build_parser()
    commands = [a for a in parser._actions if a.dest == "command"][0].choices
    for name, sub in commands.items():
        assert f"## `nuclei-search {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text or f", {flag}" in text, f"{name} {flag} is missing"
