"""The command-line reference (docs/cli.md), generated from the argparse parsers.

`python -m nuclei_search.cli.reference > docs/cli.md` writes it; a test checks that the
file equals what the parsers say, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse

from nuclei_search.cli import build_parser

HEADER = """# Command-line reference

Generated from the argument parsers by `python -m nuclei_search.cli.reference > docs/cli.md`
(a test keeps this file equal to its output). Every command has `--help`. Bad input stops
with one line `error: ...` naming the problem and exit code 2; nothing on disk is replaced
without `--overwrite` (or `resume`).
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of each subcommand, in the order --help lists them."""
    for action in parser._actions:  # argparse keeps its subparsers here; no public accessor
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return []


def _option_row(action: argparse.Action) -> str | None:
    if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
        return None
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction):
            names += f" {action.metavar or action.dest.upper()}"
    else:
        names = action.metavar or action.dest
    choices = f" (one of: {', '.join(map(str, action.choices))})" if action.choices and action.option_strings else ""
    text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    return f"| `{names}` | {_cell(text + choices)} |"


def _cell(text: str) -> str:
    """Text for a markdown table cell (no raw HTML, no column breaks)."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _section(prog: str, parser: argparse.ArgumentParser, summary: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{prog}`", ""]
    text = parser.description or summary
    if text:
        lines += [_cell(text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")), ""]
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    lines += ["```text", usage, "```", ""]
    rows = [row for row in map(_option_row, parser._actions) if row]
    if rows:
        lines += ["| argument | meaning |", "| --- | --- |", *rows, ""]
    for name, sub, help_text in _subcommands(parser):
        lines += _section(f"{prog} {name}", sub, help_text, level + 1)
    return lines


def render() -> str:
    parser = build_parser()
    lines = [HEADER]
    commands = _subcommands(parser)
    lines += ["| command | what it does |", "| --- | --- |"]
    lines += [f"| [`nuclei-search {name}`](#nuclei-search-{name}) | {_cell(help_text)} |"
              for name, _, help_text in commands]
    lines.append("")
    for name, sub, help_text in commands:
        lines += _section(f"nuclei-search {name}", sub, help_text, 2)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
