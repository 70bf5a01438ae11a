"""`nuclei-search train`: one trial, trained end to end, written to a folder."""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import fields
from pathlib import Path

from nuclei_search.config import TrialConfig
from nuclei_search.errors import ExperimentError
from nuclei_search.outputs import STORAGE_ERRNOS, prepare_output_dir, reason

OUTPUT_FILES = ("model.keras", "history.csv", "metrics.json", "config.yaml", "model_card.json")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One `--field-name` flag per TrialConfig field (defaults come from the dataclass)."""
    group = parser.add_argument_group("trial configuration (override --config)")
    for f in fields(TrialConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        metavar = {"int": "N", "float": "X", "bool": "BOOL"}.get(kind.split(" ")[0], "STR")
        group.add_argument(flag, dest=f"cfg_{f.name}", default=None, metavar=metavar,
                           help=f"default: {f.default}")


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    values = {}
    if getattr(args, "config", None):
        values.update(TrialConfig.from_yaml(args.config).to_dict())
    for name in TrialConfig.field_names():
        value = getattr(args, f"cfg_{name}", None)
        if value is not None:
            values[name] = value
    return TrialConfig.from_dict(values)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one U-Net (one trial) and write model.keras, history.csv, metrics.json, model_card.json",
        description="Train one U-Net from flags or a YAML trial config. Default data: synthetic nuclei.",
    )
    p.add_argument("--config", metavar="YAML", help="trial config file (TrialConfig fields)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.add_argument("--cpus", type=int, default=None, help="CPU threads for TensorFlow (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    prepare_output_dir(args.out, args.overwrite, OUTPUT_FILES)  # before TensorFlow loads: fails in a second
    from nuclei_search.models.train import train_to_folder

    from nuclei_search.results.export import train_card, write_card

    try:
        result = train_to_folder(config, args.out, cpus=args.cpus, progress=not args.quiet)
        write_card(args.out, train_card(result))  # predict, evaluate and the dashboard take the folder
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        # the disk filled up (or turned read-only) mid-run: a half-written model.keras is worse than none
        for name in OUTPUT_FILES:
            with contextlib.suppress(OSError):
                (args.out / name).unlink()
        raise ExperimentError(f"--out {args.out} is not writable ({reason(exc)}) while writing the trial's "
                              f"outputs; removed the partial {', '.join(OUTPUT_FILES)}") from None
    record = result.metrics_record()
    summary = {k: record[k] for k in ("val_iou", "val_iou_per_image", "val_dice", "val_map", "best_epoch",
                                      "epochs", "seconds")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/model.keras, history.csv, metrics.json, model_card.json "
          f"(`nuclei-search predict {args.out} IMAGES --out DIR` uses it)")
    return 0
