"""The `nuclei-search` command line: a thin layer that parses arguments and calls the API.

Each module in this package registers one command group with `register(subparsers)`
and sets `func` to a handler `handler(args) -> int`. Library code never prints; the
handlers do. Every NucleiSearchError becomes one line on stderr and exit code 2, and so does
an OSError of a read-only, full or unwritable storage that no earlier check caught.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from nuclei_search import __version__
from nuclei_search.errors import NucleiSearchError
from nuclei_search.outputs import STORAGE_ERRNOS
from nuclei_search.quiet import quiet_tensorflow_import

# Command modules, in the order `--help` lists them.
COMMAND_MODULES = (
    "nuclei_search.cli.data",
    "nuclei_search.cli.train",
    "nuclei_search.cli.run",
    "nuclei_search.cli.results",
    "nuclei_search.cli.cluster",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nuclei-search",
        description="Distributed hyperparameter search for U-Net nucleus segmentation (DSB2018).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenCV logs its own line for a corrupt PNG; the error we raise names the file instead
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorFlow's C++ log lines (cuInit, oneDNN, absl) ask nothing of the user: off unless -v
    # or a command's --verbose; set before anything imports TensorFlow
    loud = args.verbose or getattr(args, "ray_verbose", False)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if loud else "3")

    quiet_tensorflow_import()  # TensorFlow's start-up lines off stderr when (if) a command loads it
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NucleiSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a storage that is read-only, full or not ours, met where no check caught it
        if exc.errno not in STORAGE_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return NucleiSearchError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
