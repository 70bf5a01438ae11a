"""`nuclei-search data info|prepare`: inspect and prepare a data source."""

from __future__ import annotations

import argparse
import json
import sys
import time

from nuclei_search.data_pipeline.cache import default_cache_dir
from nuclei_search.data_pipeline.fingerprint import describe
from nuclei_search.errors import DataError
from nuclei_search.outputs import STORAGE_ERRNOS, reason

SOURCE_HELP = (
    "synthetic, synthetic:N, kaggle, a Kaggle-layout folder (<id>/images/<id>.png, "
    "<id>/masks/*.png) or a .zip of one (default: synthetic)"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect and prepare training data",
                                   description="Inspect and prepare nucleus segmentation data.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    info = sub.add_parser("info", help="count images and masks, histogram image sizes (fast, headers only)",
                          description="Count images and masks and histogram image sizes of a data source.")
    info.add_argument("source", nargs="?", default="synthetic", metavar="SOURCE", help=SOURCE_HELP)
    info.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    info.add_argument("--cache-dir", default=None, metavar="DIR",
                      help="cache folder (default: $NUCLEI_SEARCH_CACHE or ~/.cache/nuclei-search)")
    info.set_defaults(func=run_info)

    prep = sub.add_parser("prepare", help="convert a data source once into the array cache",
                          description="Convert a data source once into the prepared array cache.")
    prep.add_argument("source", nargs="?", default="synthetic", metavar="SOURCE", help=SOURCE_HELP)
    prep.add_argument("--cache-dir", default=None, metavar="DIR",
                      help="cache folder (default: $NUCLEI_SEARCH_CACHE or ~/.cache/nuclei-search)")
    prep.add_argument("--limit", type=int, default=None, metavar="N", help="prepare only the first N images")
    prep.add_argument("--workers", type=int, default=None, metavar="N",
                      help="worker processes (default: all CPUs)")
    prep.set_defaults(func=run_prepare)


def run_info(args: argparse.Namespace) -> int:
    from nuclei_search.data_pipeline.preprocess import find_prepared
    from nuclei_search.data_pipeline.sources import open_source

    source = open_source(args.source, cache_dir=args.cache_dir, require_masks=False)
    summary = describe(source)

    try:  # image types are known once prepared
        prepared = find_prepared(source, args.cache_dir)
    except DataError:  # an unwritable cache does not stop `info`
        prepared = None
    summary["image_types"] = prepared.type_counts() if prepared else None
    summary["prepared"] = str(prepared.root) if prepared else None
    source.close()
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"data source {summary['source']}", show_header=False)
    table.add_row("location", f"{summary['path']} ({summary['kind']})")
    table.add_row("images", str(summary["images"]))
    table.add_row("masks", str(summary["masks"]))
    if summary["images_without_masks"]:
        table.add_row("images without masks", str(summary["images_without_masks"]))
    if summary["image_types"]:
        table.add_row("image types", ", ".join(f"{k} {v}" for k, v in summary["image_types"].items()))
    table.add_row("prepared", summary["prepared"] or "no (run: nuclei-search data prepare SOURCE)")
    console.print(table)
    sizes = Table(title="image sizes (H x W)")
    sizes.add_column("size")
    sizes.add_column("images", justify="right")
    for size, count in summary["image_sizes"].items():
        sizes.add_row(size, str(count))
    console.print(sizes)
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from nuclei_search.data_pipeline.preprocess import prepare

    start = time.perf_counter()
    try:
        # a progress bar on a terminal only: no bar chatter in logs, CI or pipes
        prepared = prepare(args.source, cache_dir=args.cache_dir, progress=sys.stderr.isatty(),
                           limit=args.limit, workers=args.workers)
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise

        cache = args.cache_dir or default_cache_dir()
        raise DataError(f"cache folder {cache} is not writable ({reason(exc)}) while preparing {args.source}; "
                        "nothing half-written was kept") from None
    types = ", ".join(f"{k} {v}" for k, v in prepared.type_counts().items())
    print(f"prepared {len(prepared.ids)} images ({types}) in {time.perf_counter() - start:.1f} s")
    print(f"cache folder: {prepared.root}")
    print(f"fingerprint: {prepared.fingerprint}")
    return 0
