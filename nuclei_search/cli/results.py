"""`nuclei-search leaderboard | compare | report | export | predict | evaluate`.

Thin handlers over `results.*`: parse, call, print. Progress bars appear only here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nuclei_search.errors import ConfigError
from nuclei_search.results.leaderboard import FORMATS
from nuclei_search.results.trials import load_experiment

STORAGE_HELP = "storage root the experiments are in (default ./experiments or $NUCLEI_SEARCH_STORAGE)"
# Columns left out of the terminal table (long paths; the other formats keep them).
TABLE_HIDDEN = ("checkpoint", "val_map_fluorescence", "val_map_brightfield", "val_map_histology")


def register(sub) -> None:
    lb = sub.add_parser("leaderboard", help="one row per trial: hyperparameters and best validation scores",
                        description="Leaderboard of an experiment (Ray Tune or KerasTuner): one row per trial "
                                    "with its hyperparameters, best-epoch val_iou / val_dice / val_map, epochs, "
                                    "minutes, why it stopped and the checkpoint of its best epoch.")
    lb.add_argument("experiment", metavar="EXP", help="experiment name or folder")
    _board_options(lb)
    lb.set_defaults(func=leaderboard_cmd)

    cmp_ = sub.add_parser("compare", help="merge the leaderboards of several experiments (any engines)",
                          description="Merged leaderboard of several experiments (column `experiment`, "
                                      "`is_best` marks each one's best trial), preceded by each experiment's best.")
    cmp_.add_argument("experiments", nargs="+", metavar="EXP", help="experiment names or folders")
    _board_options(cmp_)
    cmp_.set_defaults(func=compare_cmd)

    rep = sub.add_parser("report", help="write one self-contained HTML report of an experiment",
                         description="One self-contained HTML page (plots inlined, no network needed): learning "
                                     "curves, val IoU vs hyperparameters, parallel coordinates, importance, IoU "
                                     "over time and the best trial's predictions on validation images.")
    rep.add_argument("experiment", metavar="EXP", help="experiment name or folder")
    rep.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (default report.html)")
    rep.add_argument("--images", type=int, default=4, metavar="N",
                     help="validation images in the prediction overlays (0: none; default 4)")
    rep.add_argument("--storage", default=None, metavar="DIR", help=STORAGE_HELP)
    rep.set_defaults(func=report_cmd)

    exp = sub.add_parser("export", help="export the best (or a chosen) trial, or an ensemble, as model.keras + "
                                        "SavedModel + card",
                         description="Export a trial's best-epoch checkpoint (or, with --ensemble, one model "
                                     "averaging several): model.keras (no optimizer), saved_model/ (model.export) "
                                     "and model_card.json. The reloaded export is re-evaluated on the validation "
                                     "split and must reproduce its val_iou within 0.001; the postprocessing "
                                     "(threshold, smallest nucleus, watershed markers, test-time augmentation) "
                                     "is chosen there.")
    exp.add_argument("experiment", metavar="EXP", help="experiment name or folder")
    exp.add_argument("--trial", default=None, metavar="ID", help="trial id (default: the best val_iou)")
    exp.add_argument("--out", type=Path, required=True, help="export folder (must be new or empty)")
    exp.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    exp.add_argument("--retrain-full", action="store_true",
                     help="retrain the winning config from scratch on train+val for the winning epoch count")
    exp.add_argument("--ensemble", default=None, metavar="K|auto",
                     help="export one model averaging several trials: the top K by val_iou, or 'auto' "
                          "(greedy forward selection with replacement on the validation split, Caruana et al. 2004)")
    exp.add_argument("--ensemble-pool", type=int, default=None, metavar="N",
                     help="candidates for --ensemble auto: the N best trials (default 8)")
    exp.add_argument("--no-postprocess", action="store_true",
                     help="keep the training-time threshold and instance settings instead of choosing them on "
                          "the validation split")
    exp.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                     help="test-time augmentation (the 8 flips/rotations averaged) in the chosen postprocessing: "
                          "--tta always, --no-tta never; default: kept if it raises the validation mAP")
    exp.add_argument("--no-verify", action="store_true", help="skip the re-evaluation of the export")
    exp.add_argument("--no-saved-model", action="store_true", help="write model.keras and the card only")
    exp.add_argument("--cpus", type=int, default=None, help="CPU threads for TensorFlow (default: all)")
    exp.add_argument("--storage", default=None, metavar="DIR", help=STORAGE_HELP)
    exp.add_argument("--quiet", action="store_true", help="no training progress bar (--retrain-full)")
    exp.set_defaults(func=export_cmd)

    pred = sub.add_parser("predict", help="predict masks, instances and a Kaggle submission with an export",
                          description="Predict nucleus masks with an exported model. INPUT: image files, folders "
                                      "of images, Kaggle-layout folders or zips (e.g. stage1_test.zip). Images "
                                      "keep their size (padding, or blended tiles when large).")
    pred.add_argument("model", type=Path, metavar="MODEL_DIR",
                      help="folder written by `nuclei-search export` or `nuclei-search train`")
    pred.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or zips")
    pred.add_argument("--out", type=Path, required=True, help="output folder for <id>_mask.png files")
    pred.add_argument("--rle", type=Path, default=None, metavar="CSV",
                      help="also write a Kaggle submission CSV (ImageId,EncodedPixels)")
    pred.add_argument("--instances", action="store_true", help="also write <id>_instances.png (uint16 labels)")
    pred.add_argument("--threshold", type=float, default=None, metavar="T",
                      help="mask threshold (default: the model card's)")
    _postprocess_options(pred)
    pred.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                      help="average the 8 flips/rotations (default: as the model card chose on validation)")
    pred.add_argument("--tile", type=int, default=None, metavar="N",
                      help="predict in overlapping N×N tiles (multiple of the stride; default: whole "
                           "image, tiles only above 2048×2048 pixels)")
    pred.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=predict_cmd)

    ev = sub.add_parser("evaluate", help="score an export on labelled Kaggle-layout data",
                        description="Foreground IoU, Dice and Kaggle mAP@[0.5:0.95] of an exported model, per "
                                    "image and on average, on Kaggle-layout data with masks.")
    ev.add_argument("model", type=Path, metavar="MODEL_DIR",
                    help="folder written by `nuclei-search export` or `nuclei-search train`")
    ev.add_argument("--data", default=None, metavar="SOURCE",
                    help="Kaggle-layout folder or zip with masks (or synthetic:N, kaggle); default: the model "
                         "card's data source")
    ev.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    ev.add_argument("--split", choices=("all", "val"), default="all",
                    help="all images of --data (default) or only the validation images named in the model card")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted ids)")
    ev.add_argument("--threshold", type=float, default=None, metavar="T", help="default: the model card's")
    _postprocess_options(ev)
    ev.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="average the 8 flips/rotations (default: as the model card chose on validation)")
    ev.add_argument("--tile", type=int, default=None, metavar="N", help="predict in overlapping N×N tiles")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=evaluate_cmd)
    register_dashboard(sub)


def register_dashboard(sub) -> None:
    dash = sub.add_parser("dashboard", help="a live web view of searches (leaderboard, curves, predictions)",
                          description="Serve a dashboard of running and finished experiments on 127.0.0.1: "
                                      "leaderboard with sorting and filters, learning curves, IoU by image type, "
                                      "validation predictions of a chosen trial, several experiments side by side. "
                                      "It only reads the experiment folders.")
    dash.add_argument("experiments", nargs="*", metavar="EXP",
                      help="experiment names or folders (default: every experiment under --storage, "
                           "found again as new ones start)")
    dash.add_argument("--storage", default=None, metavar="PATH_OR_URI", help="storage root of the experiments")
    dash.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1; any other needs --allow-remote)")
    dash.add_argument("--allow-remote", action="store_true",
                      help="allow a non-loopback --host: anyone who can reach it sees the experiments")
    dash.set_defaults(func=dashboard_cmd)


def dashboard_cmd(args: argparse.Namespace) -> int:
    from nuclei_search.results.dashboard import check_host, serve

    if not check_host(args.host, args.allow_remote):
        print(f"warning: the dashboard listens on {args.host}: anyone who can reach it sees the experiments",
              file=sys.stderr)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535 (got {args.port})")
    print(f"dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    serve(args.experiments, storage=args.storage, host=args.host, port=args.port)
    return 0


def _postprocess_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-size", type=int, default=None, metavar="PX",
                   help="drop nuclei smaller than PX pixels (default: the model card's)")
    p.add_argument("--watershed-h", type=float, default=None, metavar="H",
                   help="watershed marker height in pixels of distance (no contour channel; default: the card's)")
    p.add_argument("--boundary-threshold", type=float, default=None, metavar="T",
                   help="contour channel threshold for the watershed markers (default: the card's)")


def _postprocess_flags(args: argparse.Namespace) -> dict:
    return {"min_size": args.min_size, "h": args.watershed_h, "boundary_threshold": args.boundary_threshold}


def _board_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top", type=int, default=None, metavar="K", help="only the first K rows")
    p.add_argument("--sort", default="val_iou", metavar="COLUMN",
                   help="val_iou (default), val_map, val_dice, minutes, epochs_run, best_epoch, id or a "
                        "hyperparameter; metrics sort high to low, others low to high")
    p.add_argument("--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--storage", default=None, metavar="DIR", help=STORAGE_HELP)


# --------------------------------------------------------------------------- tables
# Shorter headers for the terminal table.
TABLE_HEADERS = {"best_epoch": "best ep", "epochs_run": "ran", "minutes": "min", "stop_reason": "stop",
                 "experiment": "experiment", "val_iou_fluorescence": "iou fluo", "val_iou_brightfield": "iou bf",
                 "val_iou_histology": "iou histo", "val_map_fluorescence": "map fluo",
                 "val_map_brightfield": "map bf", "val_map_histology": "map histo"}
NUMERIC = ("val_iou", "val_dice", "val_map", "best_epoch", "epochs_run", "minutes") + tuple(
    k for k in TABLE_HEADERS if k.startswith("val_"))


def _rich_table(frame, title: str, hidden: tuple[str, ...] = ()):
    from rich.table import Table

    from nuclei_search.results.leaderboard import display_value

    table = Table(title=title, title_justify="left", header_style="bold")
    columns = [c for c in frame.columns if c not in hidden]
    hyper = set(frame.attrs.get("hyperparameters", []))
    for column in columns:
        numeric = column in NUMERIC
        table.add_column(TABLE_HEADERS.get(column, str(column)), justify="right" if numeric else "left",
                         style="cyan" if column in hyper else ("bold" if column == "val_iou" else None),
                         min_width=min(6, len(TABLE_HEADERS.get(column, str(column)))), no_wrap=column == "id",
                         overflow="fold")
    for row in frame[columns].itertuples(index=False):
        values = [display_value(v, digits=3) for v in row]
        reason = dict(zip(columns, values)).get("stop_reason", "")
        style = "red" if reason.startswith("ERROR") else ("yellow" if reason == "early-stopped" else None)
        table.add_row(*values, style=style)
    return table


def _print_table(table) -> None:
    """Print a rich table; piped output gets a wide page instead of rich's 80 columns."""
    from rich.console import Console

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=200)
    console.print(table)


def leaderboard_cmd(args: argparse.Namespace) -> int:
    from nuclei_search.results.leaderboard import ensemble_frame, experiment_frame, format_leaderboard, sort_leaderboard

    experiment = load_experiment(args.experiment, args.storage)
    frame = sort_leaderboard(experiment_frame(experiment), args.sort, args.top, args.reverse)
    if args.format != "table":
        sys.stdout.write(format_leaderboard(frame, args.format))
        return 0
    if len(frame) == 0:
        print(f"experiment {args.experiment}: no trials yet")
        return 0
    title = f"{frame['experiment'].iloc[0]} ({frame['engine'].iloc[0]}): {len(frame)} trials, sorted by {args.sort}"
    _print_table(_rich_table(frame, title, hidden=TABLE_HIDDEN + ("status", "engine", "experiment")))
    ensemble = ensemble_frame(experiment)
    if ensemble is not None:
        _print_table(_rich_table(ensemble, "the exported ensemble beside the best single trial (validation)"))
    return 0


def compare_cmd(args: argparse.Namespace) -> int:
    from nuclei_search.results.leaderboard import compare, format_comparison, sort_leaderboard

    merged, best = compare(args.experiments, args.storage)
    merged = sort_leaderboard(merged, args.sort, args.top, args.reverse)
    if args.format != "table":
        sys.stdout.write(format_comparison(merged, best, args.format))
        return 0
    hidden = TABLE_HIDDEN + ("status", "is_best")
    _print_table(_rich_table(best, "best trial of each experiment", hidden=hidden))
    _print_table(_rich_table(merged, f"all trials ({len(merged)}), sorted by {args.sort}", hidden=hidden))
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    from nuclei_search.results.report import build_report

    report = build_report(args.experiment, args.out, storage=args.storage, overlay_images=args.images)
    for anchor, why in report.unavailable.items():
        print(f"note: section '{anchor}' not drawn: {why}", file=sys.stderr)
    size = report.path.stat().st_size / 2**20
    print(f"wrote {report.path} ({size:.1f} MB, {len(report.figures)} sections, self-contained)")
    return 0


def export_cmd(args: argparse.Namespace) -> int:
    from nuclei_search.results.export import export_ensemble, export_trial

    if args.no_postprocess and args.tta is not None:
        raise ConfigError("--tta/--no-tta are part of the postprocessing chosen on validation: "
                          "they exclude --no-postprocess")
    if args.ensemble is not None:
        if args.trial or args.retrain_full:
            raise ConfigError("--ensemble chooses its own trials and keeps their checkpoints: "
                              "it excludes --trial and --retrain-full")
        result = export_ensemble(
            args.experiment, args.out, args.ensemble, storage=args.storage, overwrite=args.overwrite,
            saved_model=not args.no_saved_model, postprocess=not args.no_postprocess, tta=args.tta,
            pool=args.ensemble_pool, cpus=args.cpus,
        )
    else:
        result = export_trial(
            args.experiment, args.out, trial_id=args.trial, storage=args.storage, overwrite=args.overwrite,
            retrain=args.retrain_full, verify=not args.no_verify, saved_model=not args.no_saved_model,
            postprocess=not args.no_postprocess, tta=args.tta, cpus=args.cpus, progress=not args.quiet,
        )
    card = result.card
    metrics = card["metrics"]
    scores = (f"val_iou {metrics['val_iou']:.4f}, val_dice {metrics['val_dice']:.4f}, "
              f"val_map {metrics['val_map']:.4f}")
    if card.get("ensemble"):
        members = ", ".join(f"{m['trial_id']}×{m['weight']}" for m in card["ensemble"]["members"])
        best = card["ensemble"]["best_single"]
        print(f"exported an ensemble of {card['experiment']} ({members}; {card['selected_by']}): {scores}; "
              f"best single trial {best['trial_id']}: val_iou {best['val_iou']:.4f}")
    else:
        print(f"exported trial {card['trial_id']} of {card['experiment']} ({card['engine']}): {scores} "
              f"(epoch {metrics['best_epoch']})")
    if card["training"]["retrained_full"]:
        print(f"retrained on train+val ({card['training']['images']} images, {card['training']['epochs']} epochs)")
    check = card.get("verification")
    if check:
        verdict = "reproduced" if check["ok"] else "NOT reproduced"
        print(f"check: the reloaded model scores val_iou {check['val_iou']:.4f} on the validation split "
              f"({verdict}, |diff| {check['abs_diff']:.2g})")
    post = card.get("postprocess")
    if post:
        chosen = post["metrics"]
        print(f"postprocessing chosen on validation: threshold {post['threshold']}, min_size {post['min_size']}, "
              f"h {post['h']}, boundary_threshold {post['boundary_threshold']}, tta {'on' if post.get('tta') else 'off'}:"
              f" val_map {post['val_map_default']:.4f} -> {chosen['val_map']:.4f}, val_iou {chosen['val_iou']:.4f}")
    print(f"wrote {args.out}/: {', '.join(result.files)}")
    if check and not check["ok"]:
        print("error: the exported model does not reproduce its leaderboard score", file=sys.stderr)
        return 1
    return 0


def predict_cmd(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nuclei_search.results.predict import Predictor, collect_inputs, predict_to_folder

    predictor = Predictor.load(args.model)
    images = collect_inputs(args.inputs)
    with tqdm(total=len(images), desc="predict", unit="img", disable=args.quiet, file=sys.stderr) as bar:
        summary = predict_to_folder(
            predictor, images, args.out, threshold=args.threshold, instances=args.instances, rle=args.rle,
            tta=args.tta, tile=args.tile, overwrite=args.overwrite, on_image=lambda record: bar.update(1),
            postprocess=_postprocess_flags(args),
        )
    print(f"wrote {len(summary.images)} masks to {summary.out}" +
          (" (+ instance label maps)" if args.instances else ""))
    if summary.submission:
        print(f"wrote {summary.submission}: {summary.n_instances} instances in {len(summary.images)} images")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nuclei_search.results.leaderboard import display_value
    from nuclei_search.results.predict import evaluate_model_dir

    bar = tqdm(desc="evaluate", unit="img", disable=args.quiet, file=sys.stderr)
    try:
        result = evaluate_model_dir(
            args.model, args.data, limit=args.limit, threshold=args.threshold, tta=args.tta, tile=args.tile,
            split=args.split, on_start=lambda n: setattr(bar, "total", n), on_image=lambda row: bar.update(1),
            postprocess=_postprocess_flags(args),
        )
    finally:
        bar.close()
    if args.format == "json":
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    from rich.table import Table

    tta = "tta on" if result.postprocess.get("tta") else "tta off"
    table = Table(title=f"{args.model} on {result.source} ({len(result.per_image)} images, threshold "
                        f"{result.threshold}, instances: {result.instance_method}, {tta})", title_justify="left")
    for column in ("image", "size", "iou", "dice", "map", "nuclei", "predicted"):
        table.add_column(column, justify="left" if column in ("image", "size") else "right")
    for row in result.per_image:
        table.add_row(row["id"], "×".join(map(str, row["shape"])), display_value(row["iou"]),
                      display_value(row["dice"]), display_value(row["map"]), str(row.get("n_true", "")),
                      str(row.get("n_pred", "")))
    mean = result.mean
    table.add_section()
    table.add_row("mean over images", "", display_value(mean["iou"]), display_value(mean["dice"]),
                  display_value(mean["map"]), "", "", style="bold")
    table.add_row("all pixels pooled", "", display_value(result.iou), display_value(result.dice), "", "", "")
    _print_table(table)
    return 0
