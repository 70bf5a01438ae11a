"""Train one U-Net from a TrialConfig: the function every search trial calls.

`train(config, on_epoch_end=...)` prepares the data (cached), splits it, builds the
model, trains with the encoder frozen for `freeze_epochs` and then fine-tuned at a
lower learning rate, and validates on whole validation images after every
`validation_freq`-th epoch and the last (foreground IoU over all nucleus pixels, Dice,
Kaggle mAP; Keras' `validation_freq`), less often before the last `validation_tail` of the
schedule (`validation_epochs`). The hook receives each validated epoch's
metrics and the model: `nuclei-search train` writes files with it, the Ray Tune
trainable reports and checkpoints with it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from nuclei_search.config import TrialConfig
from nuclei_search.contract import MODEL_FILE, STATE_FILE
from nuclei_search.data_pipeline.loader import load_data
from nuclei_search.errors import DataError, NucleiSearchError
from nuclei_search.models.runtime import configure_tensorflow, released_custom_gradients

log = logging.getLogger(__name__)

#: on_epoch_end(epoch (1-based), metrics of that epoch, model, state to checkpoint)
EpochHook = Callable[[int, dict, object, "TrainState"], None]

#: At least this many train steps per call into TensorFlow (Keras' `steps_per_execution`) in an epoch
#: of at least twice as many: the same steps, fewer round trips through Python (BENCHMARKS.md, `train_step`).
STEPS_PER_EXECUTION = 8
#: Before the last `validation_tail` of a schedule, validation runs this many times less often.
SPARSE_FACTOR = 4


def execution_steps(steps: int, target: int = STEPS_PER_EXECUTION) -> int:
    """The smallest divisor of `steps` (an epoch's batches) that is at least `target` (or `steps`);
    1 for an epoch of fewer than 2 × `target` steps.

    Keras runs whole executions, so a value that does not divide the epoch would add steps. Several
    steps per call are traced as a `tf.while_loop`, a few seconds more once per fit: worth it only
    when it saves many round trips an epoch (a small epoch saves a few milliseconds).
    """
    steps = max(1, int(steps))
    if steps < 2 * target:
        return 1
    return next(d for d in range(target, steps + 1) if steps % d == 0)  # steps itself at the latest


class TrialDiverged(NucleiSearchError, RuntimeError):
    """The training loss became NaN or infinite (exit code 1: not a usage error)."""

    exit_code = 1


@dataclass
class TrainState:
    """What a checkpoint needs besides the model to continue a run exactly where it was."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # metrics of the best epoch (by val_iou)

    def save(self, folder: str | Path, model) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / MODEL_FILE)
        (folder / STATE_FILE).write_text(json.dumps(self.__dict__, indent=1, default=float))

    @classmethod
    def load(cls, folder: str | Path) -> "TrainState":
        values = json.loads((Path(folder) / STATE_FILE).read_text())
        return cls(**values)


@dataclass
class TrainResult:
    config: TrialConfig
    best: dict
    history: list[dict]
    epochs_run: int
    seconds: float
    data_fingerprint: str
    n_train: int
    n_val: int
    model: object = field(repr=False, default=None)
    val_ids: list[str] = field(default_factory=list)  # the validation split, for the model card

    def metrics_record(self) -> dict:
        """The content of metrics.json."""
        from nuclei_search.models.evaluation import type_metrics

        best = self.best
        return {
            "val_iou": best.get("val_iou"),
            "val_dice": best.get("val_dice"),
            "val_map": best.get("val_map"),
            "val_iou_per_image": best.get("val_iou_per_image"),
            "by_type": type_metrics(best),
            "best_epoch": best.get("epoch"),
            "epochs": self.epochs_run,
            "seconds": round(self.seconds, 2),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "data_fingerprint": self.data_fingerprint,
            "config": self.config.to_dict(),
        }


def compile_model(model, config: TrialConfig, learning_rate: float, decay_steps: int,
                  steps_per_execution: int = 1, jit_compile: bool | str = "auto") -> None:
    """Adam (cosine-decayed over `decay_steps` when configured), the config's loss, IoU and Dice.

    `steps_per_execution` > 1 runs that many train steps per call (per-batch callbacks then
    see every n-th batch); it does not change what is computed. `jit_compile="auto"` is
    Keras' choice: XLA on a GPU, not on a CPU, where it made a step 3.5x slower
    (BENCHMARKS.md, `train_step`).
    """
    import keras

    from nuclei_search.models.losses import get_loss
    from nuclei_search.models.metrics import keras_metrics

    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate, decay_steps=max(1, decay_steps), alpha=0.05
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=get_loss(config.loss),
        metrics=keras_metrics(),
        steps_per_execution=max(1, int(steps_per_execution)),
        jit_compile=jit_compile,
    )
    # Create the optimizer's slots now, eagerly. Built lazily inside the first traced train
    # step, each slot variable gets tf.cond initialisers whose branch functions stay in
    # TensorFlow's eager context for the life of the process (~170 MB per MobileNetV2
    # trial when trials share a process, as KerasTuner's do; benchmarks/worker_memory.py).
    model.optimizer.build(model.trainable_variables)


def training_phases(config: TrialConfig) -> list[tuple[bool, float, int, int]]:
    """(encoder trainable, learning rate, first epoch, end epoch) of each training phase.

    The encoder is frozen for `freeze_epochs` (only an encoder worth freezing), then
    everything is fine-tuned at `learning_rate × fine_tune_lr_factor`.
    """
    freeze_until = min(config.freeze_epochs, config.epochs) if config.backbone != "none" else 0
    phases = [(False, config.learning_rate, 0, freeze_until)] if freeze_until else []
    fine_tune_lr = config.learning_rate * (config.fine_tune_lr_factor if freeze_until else 1.0)
    phases.append((True, fine_tune_lr, freeze_until, config.epochs))
    return phases


def validation_epochs(config: TrialConfig, milestones: Iterable[int] = ()) -> list[int]:
    """The 1-based epochs validated (and reported), in order: every `validation_freq`-th epoch in
    the last `validation_tail` of the schedule (where a cosine schedule's best epoch falls), every
    `SPARSE_FACTOR × validation_freq`-th before it, the `milestones` (the epochs a search scheduler
    reads, e.g. ASHA's rungs) and the last epoch. `validation_tail: 1` (the default) validates
    every `validation_freq`-th epoch, as Keras' `validation_freq` does."""
    epochs, freq = int(config.epochs), int(config.validation_freq)
    tail_from = epochs - math.floor(float(config.validation_tail) * epochs + 1e-9)
    chosen = {e for e in range(freq, epochs + 1, freq) if e > tail_from or e % (SPARSE_FACTOR * freq) == 0}
    chosen.update(int(m) for m in milestones if 1 <= int(m) <= epochs)
    chosen.add(epochs)
    return sorted(chosen)


def load_checkpoint_model(folder: str | Path):
    """Load a checkpoint's model with its optimizer state (safe_mode: no lambdas)."""
    from nuclei_search.models.unet import load_unet

    return load_unet(Path(folder) / MODEL_FILE, compile=True)


def fit_phases(model, dataset, config: TrialConfig, steps: int, *, per_execution: int, first_epoch: int = 0,
               last_epoch: int | None = None, callbacks=(), verbose: int = 0,
               keep_optimizer_of_phase: bool | None = None) -> float:
    """Fit `model` through the config's training phases (`training_phases`) from epoch
    `first_epoch` to `last_epoch` (default: the config's epochs); returns the last training loss.

    Each phase is compiled with its learning rate and a cosine schedule over the rest of the
    phase, except the phase whose encoder-trainable flag is `keep_optimizer_of_phase` (a model
    resumed from a checkpoint keeps its optimizer state while it stays in its phase).
    """
    from nuclei_search.models.unet import set_encoder_trainable

    done, loss = first_epoch, math.nan
    last = config.epochs if last_epoch is None else last_epoch
    for trainable, lr, _start, until in training_phases(config):
        stop = min(until, last)
        if done >= stop:
            continue
        set_encoder_trainable(model, trainable)
        if trainable != keep_optimizer_of_phase or getattr(model, "optimizer", None) is None:
            compile_model(model, config, lr, decay_steps=(until - done) * steps, steps_per_execution=per_execution)
        keep_optimizer_of_phase = None
        history = model.fit(dataset, epochs=stop, initial_epoch=done, steps_per_epoch=steps,
                            callbacks=list(callbacks), verbose=verbose, shuffle=False)  # the dataset shuffles itself
        loss = float((history.history.get("loss") or [loss])[-1])
        done = stop
    return loss


def divergence_guard():
    """A Keras callback raising TrialDiverged as soon as a batch's loss is NaN or infinite."""
    import keras

    class DivergenceGuard(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise TrialDiverged(f"training loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}")

    return DivergenceGuard()


@dataclass
class Validation:
    """The whole validation images, their labels and types, scored after validation epochs."""

    images: list
    labels: list
    types: list[str]
    multiple: int

    def score(self, model, config: TrialConfig) -> dict:
        from nuclei_search.models.evaluation import evaluate_model

        return evaluate_model(model, self.images, self.labels, multiple=self.multiple, threshold=config.threshold,
                              instance_method=config.instance_method, types=self.types).as_metrics()


def epoch_recorder(config: TrialConfig, state: TrainState, validation: Validation, on_epoch_end: EpochHook | None,
                   milestones: Iterable[int] = ()):
    """A Keras callback writing each epoch into `state` (history, best), validating on whole images
    after the validation epochs (`validation_epochs`) and calling the hook with their metrics."""
    import keras

    validated = set(validation_epochs(config, milestones))

    class EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            row = {"epoch": epoch + 1, "learning_rate": float(self.model.optimizer.learning_rate),
                   "epoch_seconds": time.perf_counter() - self.epoch_started}
            state.epoch = epoch + 1
            if state.epoch in validated:
                validation_started = time.perf_counter()
                logs.update(validation.score(self.model, config))
                row["validation_seconds"] = time.perf_counter() - validation_started
            row.update({k: float(v) for k, v in logs.items()})
            state.history.append(row)
            if "val_iou" not in row:
                log.info("epoch %d (not validated): %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
                return
            if not state.best or row["val_iou"] > state.best["val_iou"]:
                state.best = dict(row)
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row, self.model, state)

    return EpochRecorder()


def train(
    config: TrialConfig,
    on_epoch_end: EpochHook | None = None,
    *,
    cpus: int | None = None,
    resume_from: str | Path | None = None,
    progress: bool = False,
    steps_per_execution: int | None = None,
    validation_milestones: Iterable[int] = (),
) -> TrainResult:
    """Train `config` for `config.epochs` epochs; return the best epoch's metrics and the model.

    `resume_from` is a checkpoint folder written by `TrainState.save`: training goes on
    from the epoch after it, with the optimizer state it held. `steps_per_execution`
    defaults to `execution_steps(steps per epoch)`. `validation_milestones`: epochs validated
    besides the config's own (`validation_epochs`), e.g. the rungs of the search's scheduler.
    """
    from nuclei_search.data_pipeline.loader import make_train_dataset, steps_per_epoch, val_arrays

    config.validate()
    started = time.perf_counter()
    # the data first: a missing or broken source fails before TensorFlow is imported (~5 s of a trial)
    prepared, train_ids, val_ids = load_data(config, progress=progress)
    if not train_ids or not val_ids:
        raise DataError(
            f"data source {config.data!r} has {len(prepared.ids)} images: too few for a train/val split "
            f"with val_fraction={config.val_fraction}"
        )
    configure_tensorflow(cpus=cpus, seed=config.seed)
    from nuclei_search.models.unet import build_unet, pad_multiple

    dataset = make_train_dataset(prepared, train_ids, config, cpus=cpus)
    steps = steps_per_epoch(len(train_ids), config)
    per_execution = execution_steps(steps) if steps_per_execution is None else int(steps_per_execution)
    if steps % per_execution:
        raise ValueError(f"steps_per_execution {per_execution} must divide the {steps} steps of an epoch")
    val = val_arrays(prepared, val_ids)
    validation = Validation(images=[image for image, _ in val], labels=[labels for _, labels in val],
                            types=[prepared.types.get(i, "unknown") for i in val_ids], multiple=pad_multiple(config))

    if resume_from is not None:
        state = TrainState.load(resume_from)
        model = load_checkpoint_model(resume_from)
        log.info("resuming from %s after epoch %d", resume_from, state.epoch)
    else:
        state = TrainState()
        model = build_unet(config)
    freeze_until = training_phases(config)[-1][2]  # the fine-tune phase starts where the frozen one ends
    with released_custom_gradients():
        fit_phases(model, dataset, config, steps, per_execution=per_execution, first_epoch=state.epoch,
                   callbacks=[divergence_guard(),
                              epoch_recorder(config, state, validation, on_epoch_end, validation_milestones)],
                   verbose=1 if progress else 0,
                   keep_optimizer_of_phase=None if resume_from is None else state.epoch >= freeze_until)
    return TrainResult(
        config=config,
        best=state.best,
        history=state.history,
        epochs_run=state.epoch,
        seconds=time.perf_counter() - started,
        data_fingerprint=prepared.fingerprint,
        n_train=len(train_ids),
        n_val=len(val_ids),
        model=model,
        val_ids=list(val_ids),
    )


def write_history_csv(history: list[dict], path: str | Path) -> None:
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def train_to_folder(config: TrialConfig, out: str | Path, *, cpus: int | None = None,
                    progress: bool = False) -> TrainResult:
    """`nuclei-search train`: train and write model.keras (best epoch), history.csv, metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def keep_best(epoch: int, row: dict, model, state: TrainState) -> None:
        if state.best.get("epoch") == epoch:
            model.save(out / MODEL_FILE)
        write_history_csv(state.history, out / "history.csv")

    result = train(config, keep_best, cpus=cpus or os.cpu_count(), progress=progress)
    (out / "metrics.json").write_text(json.dumps(result.metrics_record(), indent=2))
    (out / "config.yaml").write_text(_yaml(config.to_dict()))
    return result


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
