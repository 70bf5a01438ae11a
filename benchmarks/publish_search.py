"""Publish a finished search: `python -m benchmarks.publish_search EXPERIMENT [--storage DIR]`.

Writes, for the README and BENCHMARKS.md, into `benchmarks/results/`:
`<name>_leaderboard.md` (the top rows of `nuclei-search leaderboard`), `<name>_iou_over_time.png`
(each trial as a bar from its start to its end at the height of its best validation IoU,
coloured by how it stopped, with the running best) and `<name>.json` (the winner and the
search's totals). With `--export DIR` (an ensemble exported from the search) it also writes
`<name>_proof.md`: on the same validation images, the seed notebook (`--seed-notebook`, its
benchmark's JSON), the best exploration trial, the best refit trial, the ensemble and the
ensemble with its chosen postprocessing, overall and by image type. Only scores are
published: no image of the data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from benchmarks.common import RESULTS

COLOURS = {"completed": "#1f77b4", "early-stopped": "#ff7f0e", "ERROR": "#d62728", "interrupted": "#7f7f7f"}


def plot_iou_over_time(experiment, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = sorted((t for t in experiment.trials if t.ended is not None and t.best is not None), key=lambda t: t.ended)
    start = min(t.started or t.ended for t in timed)
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    shown = set()
    for t in timed:
        kind = t.stop_reason.split(":")[0]
        kind = "interrupted" if kind in ("pending", "paused", "running") else kind  # the search was stopped
        y = float(t.best["val_iou"])
        x0, x1 = ((t.started or t.ended) - start) / 60, (t.ended - start) / 60
        ax.plot([x0, x1], [y, y], color=COLOURS.get(kind, "#7f7f7f"), lw=3, marker="o", markevery=[1],
                label=None if kind in shown else kind)
        ax.annotate(t.trial_id[-5:], (x1, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        shown.add(kind)
    best, xs, ys = float("-inf"), [], []
    for t in timed:
        best = max(best, float(t.best["val_iou"]))
        xs.append((t.ended - start) / 60)
        ys.append(best)
    ax.step(xs, ys, where="post", color="black", ls=":", label="best so far")
    ax.set_xlabel("minutes since the search started")
    ax.set_ylabel("best validation foreground IoU of the trial")
    ax.set_title(f"{experiment.name}: validation IoU by trial over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", fontsize=8)  # the lower corners hold the first and last trials
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _row(model: str, metrics: dict, minutes: float | None, note: str = "") -> dict:
    flat = {**metrics, **(metrics.get("by_type") or {})}
    row = {"model": model}
    for key in ("val_iou", "val_iou_per_image", "val_dice", "val_map"):
        row[key] = flat.get(key)
    from nuclei_search.data_pipeline.preprocess import IMAGE_TYPES

    for kind in IMAGE_TYPES:
        for m in ("iou", "map"):
            row[f"{m} {kind}"] = flat.get(f"val_{m}_{kind}")
    row["minutes"] = round(minutes, 1) if minutes is not None else None
    row["what"] = note
    return row


def proof_rows(experiment, card: dict, seed: dict | None, wall_minutes: float | None) -> list[dict]:
    """The issue-13 table: seed notebook | best single trial | refit winner | ensemble | + postprocessing."""
    rows = []
    if seed is not None:
        details = seed["details"]
        by_type = {f"val_{m}_{k}": v[m] for k, v in (details.get("by_type") or {}).items() for m in ("iou", "map")}
        rows.append(_row("seed notebook", {**details, "by_type": by_type}, details["train_seconds"] / 60,
                         f"fixed recipe, {details['epochs']} epochs"))
    scored = [t for t in experiment.trials if t.best is not None]
    explored = [t for t in scored if not t.refit_of]
    refits = [t for t in scored if t.refit_of]
    for label, trials in (("best single search trial", explored), ("refit winner", refits)):
        if trials:
            best = max(trials, key=lambda t: float(t.best["val_iou"]))
            rows.append(_row(label, best.best, best.seconds / 60,
                             f"trial {best.trial_id}, epoch {best.best_epoch} of {best.epochs_run}"))
    members = ", ".join(f"{m['trial_id']}×{m['weight']}" for m in card["ensemble"]["members"])
    rows.append(_row("ensemble", card["metrics"], wall_minutes, f"{members}; search + refit wall time"))
    post = card.get("postprocess")
    if post:
        rows.append(_row("ensemble + chosen postprocessing", post["metrics"], wall_minutes,
                         f"threshold {post['threshold']}, min_size {post['min_size']}, h {post['h']}, "
                         f"boundary_threshold {post['boundary_threshold']}, tta {'on' if post.get('tta') else 'off'}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    from nuclei_search.results.leaderboard import experiment_frame, markdown_table, sort_leaderboard
    from nuclei_search.results.trials import load_experiment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.publish_search", description=__doc__)
    parser.add_argument("experiment")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--export", default=None, metavar="DIR", help="an ensemble exported from the search")
    parser.add_argument("--seed-notebook", default=None, metavar="JSON",
                        help="the seed notebook benchmark's result (benchmarks/results/seed_notebook.json)")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.experiment, args.storage)
    frame = sort_leaderboard(experiment_frame(experiment))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = experiment.name
    columns = [c for c in ("id", "stage", *experiment.searched, "val_iou", "val_iou_per_image", "val_dice", "val_map",
                           "best_epoch", "epochs_run", "minutes", "stop_reason") if c in frame.columns]
    top = frame.head(args.top)[columns]
    table = markdown_table(top)
    (RESULTS / f"{name}_leaderboard.md").write_text(table + "\n")
    plot_iou_over_time(experiment, RESULTS / f"{name}_iou_over_time.png")
    stamps = [t.started for t in experiment.trials if t.started] + [t.ended for t in experiment.trials if t.ended]
    winner = frame.iloc[0].to_dict()
    summary = {
        "experiment": name,
        "trials": len(experiment.trials),
        "stop_reasons": frame["stop_reason"].str.split(":").str[0].value_counts().to_dict(),
        "trial_epochs": int(sum(t.epochs_run for t in experiment.trials)),
        "wall_minutes": (max(stamps) - min(stamps)) / 60 if stamps else None,
        "winner": {k: (v.item() if hasattr(v, "item") else v) for k, v in winner.items() if k in columns},
        "published": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.export:
        import pandas as pd

        card = json.loads((Path(args.export) / "model_card.json").read_text())
        seed = json.loads(Path(args.seed_notebook).read_text()) if args.seed_notebook else None
        rows = proof_rows(experiment, card, seed, summary["wall_minutes"])
        proof = markdown_table(pd.DataFrame(rows))
        (RESULTS / f"{name}_proof.md").write_text(proof + "\n")
        summary["proof"] = rows
        print(proof)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table)
    print(json.dumps(summary["winner"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
