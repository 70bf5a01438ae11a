"""Export a trial's best checkpoint, or an ensemble of the best, as a servable model folder.

`export_trial(ref, out)` (one trial) and `export_ensemble(ref, out, size)` (several,
averaged inside one model: models.ensemble, members chosen by results.ensemble) write

* ``model.keras`` — the best epoch's model without optimizer state; loads with
  ``keras.models.load_model(path, safe_mode=True, compile=False)`` once ``models`` is
  imported (it registers the package's preprocessing layer);
* ``saved_model/`` — a TensorFlow SavedModel (``model.export``) whose ``serve``
  endpoint takes float32 [batch, H, W, 3] with H and W multiples of the stride;
* ``model_card.json`` — the full TrialConfig, the data fingerprint and split, the
  validation metrics, the input/output contract, library versions, provenance.

By default the export is checked: the reloaded ``model.keras`` is evaluated on the
trial's own validation split (same data, same split seed, same scoring code as
training) and must reproduce the leaderboard val_iou within 0.001.

The postprocessing (threshold, smallest nucleus, watershed markers, and whether to average
the 8 flips/rotations at test time) is then chosen on the validation predictions
(models.postprocess_choice) and stored in the card's ``postprocess`` section, which
`predict` and `evaluate` use.

``retrain_full=True`` instead trains the winning config from scratch on train+val for
the winning epoch count (same recipe, learning-rate schedule and freeze phases as the
search run, stopped at the best epoch). That model has no held-out data left: its
card keeps the search's validation metrics, labelled as such, and is not verified.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import platform
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from nuclei_search.config import TrialConfig
from nuclei_search.contract import CARD_FILE, MODEL_FILE, SAVED_MODEL_DIR
from nuclei_search.data_pipeline.augment import HIGH_PERCENTILE, LOW_PERCENTILE
from nuclei_search.errors import ConfigError, ExperimentError, NucleiSearchError
from nuclei_search.lock import writer_lock
from nuclei_search.models.evaluation import score_predictions, type_metrics
from nuclei_search.models.inference import predict_images, predict_images_tta
from nuclei_search.models.postprocess import Postprocess
from nuclei_search.models.runtime import configure_tensorflow
from nuclei_search.outputs import prepare_output_dir
from nuclei_search.results.ensemble import DEFAULT_POOL, parse_size, ranked_trials, select_members
from nuclei_search.results.trials import ENSEMBLE_RECORD, Experiment, TrialRecord, load_experiment

log = logging.getLogger(__name__)

EXPORT_FILES = (CARD_FILE, MODEL_FILE, SAVED_MODEL_DIR)
CARD_VERSION = 1
TOLERANCE = 1e-3
VERSION_PACKAGES = ("nuclei-search", "tensorflow", "keras", "numpy", "ray", "optuna", "keras-tuner",
                    "opencv-python-headless", "scikit-image", "scipy")


@dataclass
class ExportResult:
    out: Path
    card: dict
    verified_val_iou: float | None = None
    files: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool | None:
        check = self.card.get("verification")
        return None if not check else bool(check.get("ok"))


# --------------------------------------------------------------------------- helpers
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def select_trial(experiment: Experiment, trial_id: str | None = None) -> TrialRecord:
    """The chosen trial (must have its best-epoch checkpoint) or the experiment's best."""
    if trial_id is None:
        return experiment.best_trial()
    trial = experiment.trial(trial_id)
    if trial.best is None:
        raise ExperimentError(f"trial {trial.trial_id} of {experiment.name} never reported val_iou "
                              f"({trial.stop_reason}); nothing to export")
    if trial.best_checkpoint is None:
        raise ExperimentError(f"trial {trial.trial_id} of {experiment.name}: the checkpoint of its best epoch "
                              f"({trial.best_epoch}) was not kept")
    return trial


def input_spec(config: TrialConfig, stride: int | None = None) -> dict:
    """The input contract; `stride` overrides the U-Net's (an ensemble pads inside: 1)."""
    from nuclei_search.models.unet import pad_multiple

    multiple = pad_multiple(config) if stride is None else int(stride)
    return {
        "name": "image",
        "dtype": "float32",
        "shape": [None, None, None, 3],
        "layout": "NHWC, RGB",
        "stride_multiple": multiple,
        "preprocessing": (
            "decode to uint8 RGB (grayscale repeated, alpha dropped, 16-bit scaled to 8-bit); then per image: "
            f"low, high = the {LOW_PERCENTILE} and {HIGH_PERCENTILE} percentiles of all uint8 values; "
            "x = clip((image - low) / max(high - low, 1), 0, 1) as float32 "
            "(nuclei_search.data_pipeline.augment.normalize_image)"
        ),
        "normalisation": {"function": "nuclei_search.data_pipeline.augment.normalize_image",
                          "low_percentile": LOW_PERCENTILE, "high_percentile": HIGH_PERCENTILE},
        "padding": (f"images of any size: reflect-pad bottom/right to a multiple of {multiple}, "
                    "predict, crop back (nuclei_search.models.inference.predict_images); never resized; very large images "
                    "may be predicted in overlapping blended tiles (nuclei_search.models.inference.predict_tiled)"),
    }


def output_spec(config: TrialConfig, postprocess: Postprocess | None = None) -> dict:
    post = postprocess or Postprocess(threshold=config.threshold)
    channels = ["nucleus"] + (["boundary"] if config.boundary_channel else [])
    return {
        "dtype": "float32",
        "shape": [None, None, None, len(channels)],
        "channels": channels,
        "activation": "sigmoid (per-pixel probability)",
        "threshold": post.threshold,
        "instance_method": config.instance_method,
        "postprocess": (f"nuclei_search.models.postprocess.instances_from_prediction(prob, threshold={post.threshold}, "
                        f"method=instance_method, min_size={post.min_size}, h={post.h}, "
                        f"boundary_threshold={post.boundary_threshold}); the boundary channel, when present, "
                        "seeds the watershed; the card's `postprocess` section says how these were chosen"),
        "test_time_augmentation": (post.tta, "when true, `predict` averages the probability maps of the 8 "
                                             "flips/rotations of the image, each turned back, before thresholding"),
    }


# --------------------------------------------------------------------------- retraining
def retrain_full(config: TrialConfig, epochs: int, *, cpus: int | None = None, progress: bool = False):
    """Train `config` from scratch on train+val for `epochs` epochs; return (model, n_images, final loss).

    The recipe matches models.train.train: the same freeze / fine-tune phases and the
    same per-phase learning-rate schedule length (config.epochs), stopped after
    `epochs` epochs, so the model is the winning run's recipe with the validation
    images added to the training set.
    """
    from nuclei_search.data_pipeline.loader import load_data, make_train_dataset, steps_per_epoch
    from nuclei_search.models.train import TrialDiverged, divergence_guard, execution_steps, fit_phases
    from nuclei_search.models.unet import build_unet

    if epochs < 1:
        raise ConfigError(f"retraining needs at least one epoch (got {epochs})")
    configure_tensorflow(cpus=cpus, seed=config.seed)
    prepared, train_ids, val_ids = load_data(config)
    ids = sorted(set(train_ids) | set(val_ids))
    dataset = make_train_dataset(prepared, ids, config, cpus=cpus)
    steps = steps_per_epoch(len(ids), config)
    model = build_unet(config)
    done = min(epochs, config.epochs)
    loss = fit_phases(model, dataset, config, steps, per_execution=execution_steps(steps), last_epoch=done,
                      callbacks=[divergence_guard()], verbose=1 if progress else 0)
    if not math.isfinite(loss):
        raise TrialDiverged(f"retraining on train+val diverged (loss {loss}) at epoch {done}")
    log.info("retrained %s on %d images for %d epochs (final loss %.4f)", config.backbone, len(ids), done, loss)
    return model, len(ids), loss


# --------------------------------------------------------------------------- export
def one_writer(export):
    """Hold the lock of the export folder (the second argument) while `export` writes it."""
    @functools.wraps(export)
    def locked(ref, out, *args, **kwargs):
        with writer_lock(Path(out), "export folder"):
            return export(ref, out, *args, **kwargs)

    return locked


@one_writer
def export_trial(
    ref: str | Path,
    out: str | Path,
    *,
    trial_id: str | None = None,
    storage: str | None = None,
    overwrite: bool = False,
    retrain: bool = False,
    verify: bool = True,
    saved_model: bool = True,
    postprocess: bool = True,
    tta: bool | None = None,
    cpus: int | None = None,
    progress: bool = False,
) -> ExportResult:
    """Export the best (or `trial_id`'s) best-epoch checkpoint of experiment `ref` into `out`.

    With `postprocess` (and the validation split at hand, not `retrain`), the
    postprocessing is chosen on the validation split and stored in the card."""
    out = Path(out)
    experiment = load_experiment(ref, storage)
    trial = select_trial(experiment, trial_id)
    config = trial.trial_config().replace(cache_dir=None)
    best = dict(trial.best or {})
    prepare_output_dir(out, overwrite, EXPORT_FILES)
    configure_tensorflow(cpus=cpus)
    prepared, train_ids, val_ids = _trial_data(config, required=verify or retrain)
    if retrain:
        model, training = _retrained(config, trial, cpus, progress)
    else:
        model, training = _best_checkpoint(trial, len(train_ids) if prepared is not None else None)
    files = save_model_files(model, out, saved_model)
    verification, chosen, post_section = None, None, None
    if prepared is not None and not retrain and (verify or postprocess):
        verification, chosen, post_section = _check_and_choose(out, config, prepared, val_ids, best, verify,
                                                               postprocess, tta)
    card = {
        **card_header(experiment),
        "trial_id": trial.trial_id,
        "selected_by": "--trial" if trial_id else "best val_iou of the experiment",
        "config": config.to_dict(),
        "data": data_section(config, prepared.fingerprint if prepared is not None else None,
                             len(train_ids) if prepared is not None else None, val_ids),
        "metrics": {
            "split": "validation",
            **{key: best.get(key) for key in ("val_iou", "val_dice", "val_map", "val_iou_per_image")},
            "by_type": type_metrics(best),
            "best_epoch": trial.best_epoch,
            "epochs_run": trial.epochs_run,
        },
        "verification": verification,
        "postprocess": post_section,
        "training": training,
        "input": input_spec(config),
        "output": output_spec(config, chosen),
        **card_footer(saved_model),
    }
    files.append(write_card(out, card))
    log.info("exported trial %s of %s to %s", trial.trial_id, experiment.name, out)
    return ExportResult(out=out, card=card, verified_val_iou=verification["val_iou"] if verification else None,
                        files=files)


def _trial_data(config: TrialConfig, required: bool):
    """(prepared data, train ids, val ids) of the trial; without the data here and not `required`
    (--no-verify), (None, [], []): the card then leaves the data fields unknown."""
    from nuclei_search.data_pipeline.loader import load_data

    try:
        return load_data(config)
    except NucleiSearchError as exc:
        if required:
            raise
        log.warning("data %r not available here (%s): the card will not record its fingerprint and split",
                    config.data, exc)
        return None, [], []


def _retrained(config: TrialConfig, trial: TrialRecord, cpus: int | None, progress: bool):
    """The winning config trained again on train+val for the winning epoch count, and the card's `training`."""
    model, n_images, final_loss = retrain_full(config, int(trial.best_epoch), cpus=cpus, progress=progress)
    return model, {"retrained_full": True, "images": n_images, "epochs": int(trial.best_epoch),
                   "final_loss": final_loss, "data": "train+val",
                   "note": "retrained from scratch on train+val for the winning epoch count; the metrics "
                           "below are the search run's validation metrics (no held-out data is left)"}


def _best_checkpoint(trial: TrialRecord, n_train: int | None):
    """The trial's best-epoch model (no optimizer state), and the card's `training`."""
    from nuclei_search.models.unet import load_unet

    model = load_unet(trial.best_checkpoint / MODEL_FILE, compile=False)
    return model, {"retrained_full": False, "images": n_train, "epochs": int(trial.best_epoch),
                   "data": "train split", "checkpoint": str(trial.best_checkpoint)}


def _check_and_choose(out: Path, config: TrialConfig, prepared, val_ids: list, best: dict, verify: bool,
                      postprocess: bool, tta: bool | None):
    """The reloaded export predicts the validation split: its scores against the leaderboard's
    (`verify`), and the postprocessing chosen there (`postprocess`). Returns (verification,
    chosen Postprocess, card section), None where not asked."""
    from nuclei_search.data_pipeline.loader import val_arrays
    from nuclei_search.models.unet import pad_multiple

    val = val_arrays(prepared, val_ids)
    images, labels = [image for image, _ in val], [lab for _, lab in val]
    types = [prepared.types.get(i, "unknown") for i in val_ids]
    reloaded = load_exported_model(out)
    probs = predict_images(reloaded, images, multiple=pad_multiple(config))
    verification = verify_scores(probs, labels, config, float(best["val_iou"]), types) if verify else None
    chosen, section = None, None
    if postprocess:
        tta_probs = validation_tta(reloaded, images, pad_multiple(config), tta)
        chosen, section = choose_for_card(probs, labels, types, config, tta_probs, tta)
    return verification, chosen, section


@one_writer
def export_ensemble(
    ref: str | Path,
    out: str | Path,
    size: str | int = "auto",
    *,
    storage: str | None = None,
    overwrite: bool = False,
    saved_model: bool = True,
    postprocess: bool = True,
    tta: bool | None = None,
    pool: int | None = None,
    cpus: int | None = None,
) -> ExportResult:
    """Export an ensemble of experiment `ref`'s best checkpoints as one model (results.ensemble).

    `size`: a number of members (the top K trials) or ``"auto"`` (greedy selection on the
    validation split). The model averages its members' probability maps; it is re-scored
    on validation after reloading, and its postprocessing is chosen there."""
    from nuclei_search.data_pipeline.loader import load_data, val_arrays
    from nuclei_search.models.ensemble import build_ensemble
    from nuclei_search.models.unet import load_unet, pad_multiple

    members_wanted = parse_size(size)
    if pool is not None and pool < 1:
        raise ConfigError(f"--ensemble-pool must be >= 1 (got {pool})")
    out = Path(out)
    experiment = load_experiment(ref, storage)
    ranked = ranked_trials(experiment)
    if not ranked:
        raise ExperimentError(f"experiment {experiment.name} has no trial with a checkpoint of its best epoch yet")
    if members_wanted is not None and members_wanted > len(ranked):
        raise ConfigError(f"--ensemble {members_wanted}: experiment {experiment.name} has only {len(ranked)} "
                          "trial(s) with a best-epoch checkpoint")
    prepare_output_dir(out, overwrite, EXPORT_FILES)
    configure_tensorflow(cpus=cpus)
    base = ranked[0].trial_config().replace(cache_dir=None)
    prepared, train_ids, val_ids = load_data(base)
    val = val_arrays(prepared, val_ids)
    images, labels = [i for i, _ in val], [lab for _, lab in val]
    types = [prepared.types.get(i, "unknown") for i in val_ids]
    selection = select_members(experiment, members_wanted, images, labels, pool=pool or DEFAULT_POOL)

    models = [load_unet(m.trial.best_checkpoint / MODEL_FILE, compile=False) for m in selection.members]
    strides = [pad_multiple(m.config) for m in selection.members]
    model = build_ensemble(models, strides, selection.weights)
    channels = int(model.output_shape[-1])
    config = selection.members[0].config.replace(cache_dir=None, boundary_channel=channels == 2)
    files = save_model_files(model, out, saved_model)

    reloaded = load_exported_model(out)
    probs = predict_images(reloaded, images, multiple=1)
    expected = selection.mean_probs()
    drift = max(float(np.abs(a - b).max()) for a, b in zip(probs, expected))
    scores = score_predictions(probs, labels, config.threshold, config.instance_method, types=types)
    flat = scores.as_metrics()
    metrics = {"split": "validation", **flat, "by_type": type_metrics(flat)}
    verification = {"val_iou": scores.iou, "selection_val_iou": selection.val_iou,
                    "abs_diff": abs(scores.iou - selection.val_iou), "max_prob_diff": drift,
                    "tolerance": TOLERANCE, "ok": abs(scores.iou - selection.val_iou) <= TOLERANCE}
    if not verification["ok"]:
        log.warning("the reloaded ensemble scores val_iou %.5f, its selection %.5f", scores.iou, selection.val_iou)
    chosen, post_section = None, None
    if postprocess:
        tta_probs = validation_tta(reloaded, images, 1, tta)
        chosen, post_section = choose_for_card(probs, labels, types, config, tta_probs, tta)
    best_single = ranked[0]
    card = {
        **card_header(experiment),
        "trial_id": None,
        "selected_by": selection.method,
        "config": config.to_dict(),
        "data": data_section(config, prepared.fingerprint, len(train_ids), val_ids),
        "metrics": metrics,
        "verification": verification,
        "postprocess": post_section,
        "ensemble": {
            "method": selection.method,
            "members": [{"trial_id": m.trial.trial_id, "weight": w, "stride": st,
                         "checkpoint": str(m.trial.best_checkpoint), "val_iou": m.val_iou,
                         "leaderboard_val_iou": float(m.trial.best["val_iou"]), "refit_of": m.trial.refit_of,
                         "config": m.config.to_dict()}
                        for m, w, st in zip(selection.members, selection.weights, strides)],
            "trace": selection.trace,
            "best_single": {"trial_id": best_single.trial_id, "val_iou": float(best_single.best["val_iou"]),
                            "val_map": best_single.best.get("val_map")},
        },
        "training": {"retrained_full": False, "images": len(train_ids), "data": "train split",
                     "note": "an ensemble of the members' best-epoch checkpoints"},
        "input": input_spec(config, stride=1),
        "output": output_spec(config, chosen),
        **card_footer(saved_model),
    }
    files.append(write_card(out, card))
    record_ensemble(experiment, out, card)
    log.info("exported an ensemble of %d trial(s) of %s to %s", len(selection.members), experiment.name, out)
    return ExportResult(out=out, card=card, verified_val_iou=scores.iou, files=files)


# --------------------------------------------------------------------------- card pieces
def save_model_files(model, out: Path, saved_model: bool) -> list[str]:
    """model.keras (not compiled: no optimizer state) and, optionally, the SavedModel."""
    model.save(out / MODEL_FILE)
    files = [MODEL_FILE]
    if saved_model:
        model.export(str(out / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
        files.append(SAVED_MODEL_DIR + "/")
    return files


def verify_scores(probs: list, labels: list, config: TrialConfig, leaderboard_iou: float, types: list) -> dict:
    """The reloaded export's validation scores against the leaderboard's, at the training threshold."""
    metrics = score_predictions(probs, labels, config.threshold, config.instance_method, types=types).as_metrics()
    diff = abs(float(metrics["val_iou"]) - leaderboard_iou)
    if diff > TOLERANCE:
        log.warning("exported model scores val_iou %.5f on the validation split, the leaderboard says %.5f",
                    metrics["val_iou"], leaderboard_iou)
    return {"val_iou": metrics["val_iou"], "val_dice": metrics["val_dice"], "val_map": metrics["val_map"],
            "leaderboard_val_iou": leaderboard_iou, "abs_diff": diff, "tolerance": TOLERANCE, "ok": diff <= TOLERANCE}


def choose_for_card(probs: list, labels: list, types: list, config: TrialConfig,
                    tta_probs: list | None = None, tta: bool | None = None) -> tuple[Postprocess, dict]:
    """Postprocessing chosen on the validation predictions, and the card section describing it
    (with the validation scores it gives, overall and by image type).

    With `tta_probs` (the same images predicted with test-time augmentation) it is chosen on
    both, and TTA is kept only if its best validation mAP is higher (`tta` True or False: only
    that one is considered)."""
    from nuclei_search.models.postprocess_choice import choose_postprocessing

    options = {False: probs, True: tta_probs}
    if tta is not None:
        options = {tta: options[tta]}
    choices = {use: choose_postprocessing(p, labels, config.instance_method,
                                          default=Postprocess(threshold=config.threshold))
               for use, p in options.items() if p is not None}
    use_tta = max(choices, key=lambda use: choices[use].val_map)  # dicts keep order: no TTA on a tie
    choice = choices[use_tta]
    choice.chosen = replace(choice.chosen, tta=use_tta)
    chosen_probs = options[use_tta]
    scores = score_predictions(chosen_probs, labels, choice.chosen.threshold, config.instance_method, types=types,
                               postprocess=choice.chosen.instance_kwargs()).as_metrics()
    section = choice.card(len(labels))
    section["tta_compared"] = {("tta" if use else "plain"): {"val_map": c.val_map, "evaluations": c.evaluations}
                               for use, c in choices.items()}
    section["metrics"] = {**{k: scores[k] for k in ("val_iou", "val_dice", "val_map", "val_iou_per_image")},
                          "by_type": type_metrics(scores)}
    return choice.chosen, section


def validation_tta(model, images: list, multiple: int, tta: bool | None) -> list | None:
    """The validation images predicted with test-time augmentation (8 predictions of each),
    unless the postprocessing choice is told to leave TTA out (`tta` False)."""
    if tta is False:
        return None
    return predict_images_tta(model, images, multiple=multiple)


def card_header(experiment: Experiment | None) -> dict:
    """Card version, time, and the experiment the model comes from (None: `nuclei-search train`)."""
    return {
        "card_version": CARD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "experiment": experiment.name if experiment else None,
        "experiment_path": str(experiment.path) if experiment else None,
        "engine": experiment.engine if experiment else "train",
    }


def card_footer(saved_model: bool) -> dict:
    return {
        "files": {"keras": MODEL_FILE, "saved_model": SAVED_MODEL_DIR if saved_model else None},
        "loading": ("import nuclei_search.models.layers; keras.models.load_model('model.keras', safe_mode=True, "
                    "compile=False) — or tf.saved_model.load('saved_model').serve(x)"),
        "versions": library_versions(),
    }


def data_section(config: TrialConfig, fingerprint: str | None, n_train: int | None, val_ids: list) -> dict:
    return {
        "source": config.data,
        "fingerprint": fingerprint,
        "split_seed": config.split_seed,
        "val_fraction": config.val_fraction,
        "n_train": n_train,
        "n_val": len(val_ids) if fingerprint is not None else None,
        "val_ids": list(val_ids),
    }


def train_card(result) -> dict:
    """The model card of a `nuclei-search train` folder (a `models.train.TrainResult`): the same
    sections as an export's, so `predict`, `evaluate --split val` and the dashboard take it."""
    config = result.config.replace(cache_dir=None)
    best = result.best
    return {
        **card_header(None),
        "trial_id": None,
        "selected_by": "nuclei-search train: the best validation epoch",
        "config": config.to_dict(),
        "data": data_section(config, result.data_fingerprint, result.n_train, result.val_ids),
        "metrics": {"split": "validation", **{k: best.get(k) for k in ("val_iou", "val_dice", "val_map",
                                                                        "val_iou_per_image")},
                    "by_type": type_metrics(best), "best_epoch": best.get("epoch"), "epochs_run": result.epochs_run},
        "verification": None,
        "postprocess": None,
        "training": {"retrained_full": False, "images": result.n_train, "epochs": result.epochs_run,
                     "data": "train split", "seconds": round(result.seconds, 2)},
        "input": input_spec(config),
        "output": output_spec(config),
        **card_footer(saved_model=False),
    }


def write_card(out: Path, card: dict) -> str:
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, default=_json_default))
    return CARD_FILE


def record_ensemble(experiment: Experiment, out: Path, card: dict) -> None:
    """Note the exported ensemble in the experiment folder, for the leaderboard and the report."""
    post = card.get("postprocess") or {}
    record = {"out": str(out.resolve()), "created": card["created"], "method": card["ensemble"]["method"],
              "members": [{"trial_id": m["trial_id"], "weight": m["weight"]} for m in card["ensemble"]["members"]],
              "metrics": card["metrics"], "postprocess_metrics": post.get("metrics"),
              "postprocess_tta": bool(post.get("tta")),
              "best_single": card["ensemble"]["best_single"]}
    try:
        (experiment.path / ENSEMBLE_RECORD).write_text(json.dumps(record, indent=2, default=_json_default))
    except OSError as exc:  # a read-only experiment folder: the export itself is complete
        log.warning("could not note the ensemble in %s (%s)", experiment.path, exc)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# --------------------------------------------------------------------------- loading
def load_model_card(model_dir: str | Path) -> dict:
    """The model card of an export folder; ExperimentError saying what is missing otherwise."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExperimentError(f"model folder {model_dir} does not exist; create one with `nuclei-search export`")
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        raise ExperimentError(f"{model_dir} has no {CARD_FILE}: not an exported model "
                              "(create one with `nuclei-search export EXP --out DIR`)")
    try:
        card = json.loads(card_path.read_text())
        TrialConfig.from_dict(card["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{card_path} is unreadable ({exc}); export the model again") from None
    if not (model_dir / MODEL_FILE).is_file():
        raise ExperimentError(f"{model_dir} has a model card but no {MODEL_FILE}; export the model again")
    return card


def load_exported_model(model_dir: str | Path):
    """The exported Keras model (safe_mode, not compiled)."""
    from nuclei_search.models.unet import load_unet

    path = Path(model_dir) / MODEL_FILE
    try:
        return load_unet(path, compile=False)
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"cannot load {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    except TypeError as exc:  # e.g. a Lambda wrapping a named function: safe_mode will not look it up
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExperimentError(f"cannot load {path}: it holds custom or unsafe layers (a Lambda or an "
                              f"unregistered class) that safe_mode refuses to deserialize ({first[:160]})") from None
