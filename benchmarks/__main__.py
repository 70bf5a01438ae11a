"""`python -m benchmarks [NAME ...] [--quick] [--list]`: run benchmarks, write their figures."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import logging
import shlex
import sys

from benchmarks import BENCHMARKS
from benchmarks.common import RESULTS, machine, write


def summary_table() -> str:
    rows = ["| benchmark | measure | result | target | met |", "| --- | --- | --- | --- | --- |"]
    for name in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        value = f"{r['value']:.3g} {r['unit']}".strip()
        rows.append(f"| `{name}` | {r['measure']} | {value} | {r['target']} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs, figures not meaningful")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--storage", metavar="DIR", default=None,
                        help="keep the long runs of a benchmark (sample_efficiency's searches, trial_speed's "
                             "trials) in DIR; runs already there are read, not run again")
    args = parser.parse_args(argv)
    if args.list:
        for name in BENCHMARKS:
            print(name)
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; expected {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        print(f"== {name}: {module.MEASURE}", flush=True)
        extra = {"storage": args.storage} if args.storage and "storage" in inspect.signature(module.run).parameters else {}
        record = module.run(quick=args.quick, **extra)
        record.update(
            command=f"python -m benchmarks {name}" + (" --quick" if args.quick else "")
            + (f" --storage {shlex.quote(args.storage)}" if extra else ""),
            date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            machine=machine(),
            quick=bool(args.quick),
        )
        if not args.quick:
            path = write(record)
            print(f"   wrote {path}")
        print(f"   {record['value']:.4g} {record['unit']} (target {record['target']}): "
              f"{'met' if record['met'] else 'NOT met'}", flush=True)
    if not args.quick:
        (RESULTS / "summary.md").write_text(summary_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
