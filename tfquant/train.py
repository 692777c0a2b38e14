"""The main job: train a zoo network on a real dataset, finalize, save, convert, benchmark.

``tfquant train`` is a thin command line over :func:`run`. Artifacts in ``out``:
``model.keras`` (finalized: kernels hold their exact quantized values), ``model.tflite``
(LCE flatbuffer), ``report.json`` and ``report.md`` (accuracy, size, latency, conversion
report, model summary) and ``curves.png`` (training curves; needs matplotlib).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext as _nullcontext
from typing import Any

import numpy as np

from tfquant import _files, datasets, distribute, methods, zoo
from tfquant._keras import keras
from tfquant.callbacks import HardValidation
from tfquant.errors import ConfigError
from tfquant.methods.base import FitContext, Method, Option
from tfquant.models import quantized_layers, save_deployable, summary

__all__ = ["METHODS", "ARTIFACTS", "TrainConfig", "run", "check_config"]

# the built-in methods' names (tfquant.methods.names() also lists those registered later)
METHODS = tuple(methods.names())
ARTIFACTS = ("model.keras", "model.tflite", "report.json", "report.md", "curves.png")
CHECKPOINTS = "checkpoints"  # out/checkpoints: the last epoch's state, for --resume
# config fields a resumed run may change: they do not change what is trained
_RESUME_FREE = ("out", "overwrite", "resume", "verbose", "convert")


@dataclasses.dataclass
class TrainConfig:
    """What ``tfquant train`` runs. Defaults are the README's main job."""

    dataset: str = "fashion_mnist"
    model: str = "bireal_cnn"
    method: str = methods.DEFAULT
    epochs: int = 2
    batch_size: int = 128
    learning_rate: float | None = None  # None: the method's default
    # the methods' declared options (tfquant.methods), None or these defaults: not given
    finetune_epochs: int | None = None  # epochs of TSQ's step 3 (None: epochs // 3, >= 1)
    bits: int | None = None  # bits of weights and activations (None: the method's default)
    learn_bits: bool = False  # learn each layer's weight bit-width, starting at `bits`
    dropbits: str = "A"  # DropBits scheme "A" (range), "B" (resolution) or "none"
    limit: int | None = None  # use only the first `limit` training (and limit//4 test) samples
    data_dir: str | None = None  # an image-folder tree (one folder per class) instead of dataset
    image_size: str | None = None  # data_dir: "H,W" to resize to (None: the images' own size)
    augment: bool = False  # data_dir: random flips and shifts of the training images
    validation_split: float = 0.1  # data_dir: the held-out fraction the report evaluates on
    seed: int = 0
    out: str = "runs/train"
    overwrite: bool = False
    convert: bool = True
    verbose: int | None = None  # Keras verbosity; None: progress bar on a terminal, else lines
    strategy: str = "none"  # "mirrored": tf.distribute (several workers when TF_CONFIG says so)
    resume: bool = False  # continue the run whose checkpoints are in out/checkpoints


# The numeric settings of TrainConfig with their ranges, written once: check_config and
# the command line's flags (tfquant.cli.train) both read them. The methods' own options
# (bits, ...) are declared by the methods (tfquant.methods).
FIELDS: tuple[Option, ...] = (
    Option("epochs", int, 2, "epochs to train", min=1, max=10_000),
    Option("batch_size", int, 128, "training batch size", min=1, max=65_536),
    Option("learning_rate", float, None, "default: the method's", min=0, open_interval=True),
    Option(
        "validation_split",
        float,
        0.1,
        "with --data-dir: held-out fraction",
        min=0,
        max=1,
        open_interval=True,
    ),
    Option("limit", int, None, "train on the first N samples only", min=8),
    Option("seed", int, 0, "seed of the initialization, the batches and step 2", min=0,
           max=2**32 - 1),
)


def method_option_fields() -> tuple[str, ...]:
    """The TrainConfig fields that are methods' options (declared by some method)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return tuple(n for n in methods.options() if n in names)


def _given(config: TrainConfig, name: str) -> bool:
    """Whether ``config`` sets method option ``name`` (not None nor the field's default)."""
    default = TrainConfig.__dataclass_fields__[name].default
    value = getattr(config, name)
    return value is not None and value != default


def check_config(config: TrainConfig) -> None:
    """Raise :class:`~tfquant.errors.ConfigError` (a ValueError) naming what was expected
    and what was received."""
    if config.strategy not in distribute.STRATEGIES:
        raise ConfigError(
            f"Expected strategy in {distribute.STRATEGIES}. Received: {config.strategy!r}"
        )
    if config.data_dir is None and (config.image_size is not None or config.augment):
        raise ConfigError(
            "Expected image_size and augment only with data_dir (an image-folder tree). "
            f"Received: image_size={config.image_size!r}, augment={config.augment!r}"
        )
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise ConfigError(
            f"Expected data_dir an existing directory with one folder per class. Received: "
            f"{config.data_dir!r}"
        )
    if config.data_dir is None and config.dataset not in datasets.DATASETS:
        raise ConfigError(
            f"Unknown dataset {config.dataset!r}. Expected one of {sorted(datasets.DATASETS)}."
        )
    if config.model not in zoo.MODELS:
        raise ConfigError(
            f"Unknown model {config.model!r}. Expected one of {sorted(zoo.MODELS)}."
        )
    method = methods.get(config.method)
    for field in FIELDS:
        value = getattr(config, field.name)
        if value is None and field.default is not None:
            raise ConfigError(f"Expected {field.name} {field.describe_range()}. Received: None")
        field.check(value)
    method_options(config, method)


def method_options(config: TrainConfig, method: Method | None = None) -> dict[str, Any]:
    """The method's resolved options for ``config`` (``zoo.build``'s ``method_options``):
    the TrainConfig fields the method declares, defaults where not given.

    Raises:
        ConfigError: an option given that the method does not declare (naming both), a
            value out of range, or one the method refuses for this run.
    """
    method = method or methods.get(config.method)
    declared = {o.name for o in method.options}
    for name in method_option_fields():
        if name not in declared and _given(config, name):
            who = methods.declaring(name)
            who_text = repr(who[0]) if len(who) == 1 else " or ".join(who)
            raise ConfigError(
                f"Expected {name} only with method {who_text}. Received: "
                f"{name}={getattr(config, name)!r} with method {config.method!r}"
            )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = sorted(declared - fields)
    if missing:
        raise ConfigError(
            f"Expected method {method.name!r}'s options among tfquant train's settings "
            f"{sorted(fields)}. Received: options {missing}"
        )
    options = method.resolve({name: getattr(config, name) for name in declared})
    method.check(options, config.epochs)
    return options


def _check_out(config: TrainConfig) -> _files.Outputs | None:
    """Check ``config.out`` before any work: a directory (or a new path under a writable
    one) whose artifact paths can be written (see :mod:`tfquant._files`); previous
    artifacts there need ``overwrite``. Returns the checked outputs when ``out`` exists."""
    out = pathlib.Path(config.out)
    if not str(config.out):
        raise ConfigError("Expected --out a directory path. Received: an empty string")
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"Expected --out to be a directory. Received: {str(out)!r}, "
            f"{_files.describe(out.stat().st_mode)}"
        )
    if not out.exists():
        ancestor = out.absolute()
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(
                f"Cannot create --out {str(out)!r}: {str(ancestor)!r} is not a directory"
            )
        try:
            _files._probe(str(ancestor))
        except OSError as e:
            raise ConfigError(
                f"Cannot create --out {str(out)!r}: cannot create files in {str(ancestor)!r} "
                f"({e.strerror or e})"
            ) from None
        if config.resume:
            raise ConfigError(
                f"Expected --resume with the checkpoints of a run in {out / CHECKPOINTS}. "
                f"Received: {str(out)!r} does not exist"
            )
        return None
    state = _check_checkpoints(config, out)
    previous = [name for name in ARTIFACTS if os.path.lexists(out / name)]
    if previous and not config.overwrite and not (config.resume and state["config"]["overwrite"]):
        raise ConfigError(
            f"{out} holds a previous run ({', '.join(previous)}). Choose another --out, or "
            "pass --overwrite to replace that set of files (other files there are left alone)."
        )
    overwrite = config.overwrite or bool(config.resume and state["config"]["overwrite"])
    outputs = _files.Outputs(overwrite=overwrite)
    try:
        for name in ARTIFACTS:
            outputs.add(out / name, name)
    except _files.FileError as e:
        raise ConfigError(str(e)) from None
    return outputs


def _check_checkpoints(config: TrainConfig, out: pathlib.Path) -> dict | None:
    """The checkpoint state in ``out`` (``None`` without one), checked against ``config``:
    ``--resume`` needs checkpoints of the same configuration, and a new run needs
    ``--resume`` or ``--overwrite`` where an unfinished run left checkpoints."""
    state = checkpoint_state(out)
    if config.resume and state is None:
        raise ConfigError(
            f"Expected --resume with the checkpoints of a run in {out / CHECKPOINTS}. "
            "Received: none there"
        )
    if state is not None and not state.get("finished") and not (config.resume or config.overwrite):
        raise ConfigError(
            f"{out} holds the checkpoints of a run stopped after epoch {state['epoch']} of "
            f"{state['config']['epochs']}. Pass --resume to continue it, --overwrite to start "
            "over (its checkpoints are replaced), or choose another --out."
        )
    if config.resume:
        _check_resumable(config, state)
    return state


def checkpoint_state(out: str | os.PathLike) -> dict | None:
    """The state of the last checkpoint in ``out/checkpoints`` (``None`` without one):
    ``epoch`` (epochs completed), ``weights`` (the file of the model's and optimizer's
    variables), ``config``, ``history``, ``train_seconds``.

    Raises:
        ValueError: the state file exists but cannot be read, or names a missing file.
    """
    directory = pathlib.Path(out) / CHECKPOINTS
    path = directory / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        state["epoch"], state["config"]["epochs"]  # noqa: B018 (the keys exist)
        weights = directory / state["weights"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"Cannot read the checkpoint state {path}: {e}") from None
    if not weights.exists():
        raise ConfigError(f"The checkpoint state {path} names {weights}, which is missing")
    return state


def _check_resumable(config: TrainConfig, state: dict) -> None:
    saved = state["config"]
    current = dataclasses.asdict(config)
    changed = sorted(
        k for k in current if k not in _RESUME_FREE and saved.get(k, current[k]) != current[k]
    )
    if changed:
        raise ConfigError(
            "Expected --resume with the configuration of the checkpointed run (a resumed run "
            "must train what it would have trained). Received changes: "
            + ", ".join(f"{k}={current[k]!r} (was {saved.get(k)!r})" for k in changed)
        )
    if state.get("finished"):
        raise ConfigError(
            f"The checkpointed run in {config.out} finished its {config.epochs} epochs; "
            "nothing to resume. Received: --resume"
        )


class _Checkpoints(keras.callbacks.Callback):
    """At each epoch end, the model's and optimizer's variables (``model.save_weights``)
    and the run's state (epoch, history, seconds): written to a new file, the state file
    replaced atomically to name it, then the previous epoch's file removed, so a run killed
    at any moment leaves a complete checkpoint. Only the chief writes into ``out``
    (``enabled``); the other workers save the same variables into a temporary directory
    they delete, since reading distributed variables can take collective ops that every
    worker must join (TensorFlow's multi-worker guide), and read the chief's checkpoints on
    resume, as TensorFlow's own BackupAndRestore does (a shared file system).

    It is the :class:`tfquant.methods.Checkpoints` a method fits through: ``initial_epoch``
    and ``method_state`` (the method's own JSON state, saved under the method's name) come
    from the checkpoint ``start`` (``{}`` for a new run), ``restore`` loads its variables."""

    def __init__(self, directory: pathlib.Path, config: TrainConfig, enabled: bool, start: dict):
        super().__init__()
        self.directory, self.config, self.enabled = directory, config, enabled
        self.history = {k: list(v) for k, v in start.get("history", {}).items()}
        self.seconds = float(start.get("train_seconds", 0.0))
        self._start = time.perf_counter()
        self._state = start
        self.initial_epoch: int = int(start.get("epoch", 0))
        self.method_state: dict | None = start.get(config.method)

    def restore(self, model: keras.Model) -> None:
        """Load the checkpoint this run resumes from into ``model`` (see :func:`_restore`)."""
        _restore(model, self.directory, self._state)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.save(self.model, epoch + 1)

    def save(self, model: keras.Model, epochs: int, tag: str = "") -> None:
        """Checkpoint ``model`` as having trained ``epochs`` epochs (``tag``: a name suffix
        for a second checkpoint after the same epoch, e.g. TSQ's step 2)."""
        if not self.enabled:
            with tempfile.TemporaryDirectory(prefix="tfquant-worker-") as scratch:
                _save_variables(model, pathlib.Path(scratch), "w")
            return
        self.directory.mkdir(exist_ok=True)
        previous = checkpoint_state(self.directory.parent)
        name, extra = _save_variables(model, self.directory, f"epoch-{epochs:04d}{tag}")
        state = {
            "epoch": epochs,
            "weights": name,
            "random": extra,
            "config": dataclasses.asdict(self.config),
            "history": self.history,
            "train_seconds": self.seconds + time.perf_counter() - self._start,
            **({} if self.method_state is None else {self.config.method: self.method_state}),
        }
        _write_state(self.directory, state)
        if previous is not None and previous["weights"] != name:
            (self.directory / previous["weights"]).unlink(missing_ok=True)
            (self.directory / previous.get("random", "-")).unlink(missing_ok=True)


def _save_variables(model: keras.Model, directory: pathlib.Path, stem: str) -> tuple[str, str]:
    """Write ``stem.weights.h5`` (``model.save_weights``: weights and optimizer variables)
    and ``stem.random.npz`` (the random generators' states, CPQ's noise and DropBits,
    which save_weights leaves out) into ``directory``; returns the two file names."""
    weights, random = f"{stem}.weights.h5", f"{stem}.random.npz"
    model.save_weights(str(directory / weights), overwrite=True)
    with open(directory / random, "wb") as f:
        np.savez(f, *[v.numpy() for v in _random_states(model)])
    return weights, random


def _random_states(model: keras.Model) -> list:
    """The model's variables that ``save_weights`` leaves out: Keras' random generators'
    states, in the model's order."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _restore(model: keras.Model, directory: pathlib.Path, state: dict) -> None:
    model.optimizer.build(model.trainable_variables)
    model.load_weights(str(directory / state["weights"]))
    with np.load(directory / state["random"]) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    variables = _random_states(model)
    if len(values) != len(variables):
        raise ConfigError(
            f"Expected {len(variables)} random-generator states in {state['random']}. "
            f"Received: {len(values)}"
        )
    for variable, value in zip(variables, values):
        variable.assign(value)


def layer_bits(model: keras.Model) -> list[dict[str, Any]]:
    """Each quantized layer's weight and input bits (32: float), and CPQ's learned grid
    steps: what the report lists."""
    rows = []
    for layer in quantized_layers(model):
        row: dict[str, Any] = {
            "layer": layer.name,
            "weight_bits": layer.kernel_precision,
            "input_bits": layer.input_precision,
        }
        for role, q in (("weight", layer.kernel_quantizer), ("input", layer.input_quantizer)):
            if hasattr(q, "alpha_value"):
                row[f"{role}_alpha"] = q.alpha_value
        rows.append(row)
    return rows


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(predictions, -1) == labels))


def _plot(history: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"test {key} (soft)")
        if f"hard_val_{key}" in history:
            ax.plot(
                epochs, history[f"hard_val_{key}"], "r^-", label=f"test {key} (hard, finalized)"
            )
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return True


def _markdown(report: dict, summary_table: str, conversion_text: str) -> str:
    r = report
    lat = r.get("latency_ms")
    lines = [
        f"# tfquant train: {r['config']['model']} on "
        f"{r['config'].get('data_dir') or r['config']['dataset']} ({r['config']['method']})",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy, hard-quantized Keras | {r['test_accuracy']:.4f} |",
    ]
    if r.get("test_accuracy_tflite") is not None:
        lines.append(
            f"| test accuracy, TFLite (first {r['tflite_eval_samples']} test samples) | "
            f"{r['test_accuracy_tflite']:.4f} (Keras on the same: {r['test_accuracy_keras_same_samples']:.4f}) |"
        )
    lines += [
        f"| epochs / fit time (with per-epoch soft and hard test evaluation) | "
        f"{r['config']['epochs']} / {r['train_seconds']:.0f} s |",
        f"| model size, bit-packed ideal | {r['size']['bitpacked_bytes'] / 1024:.1f} KiB |",
        f"| float-32 equivalent | {r['size']['float32_bytes'] / 1024:.1f} KiB |",
    ]
    if r.get("tflite_bytes"):
        lines.append(f"| model.tflite | {r['tflite_bytes'] / 1024:.1f} KiB |")
    if lat:
        lines.append(
            f"| latency, LCE interpreter on this x86 CPU, 1 thread | {lat['median_ms']:.3f} ms |"
        )
    method = r["config"]["method"]
    if r.get(method):
        lines += methods.get(method).report_markdown(r[method])
    if r.get("layer_bits"):
        lines += [
            "",
            "## Bits per layer" + (" (learned)" if r["config"].get("learn_bits") else ""),
            "",
            "| layer | weight bits | input bits | weight step | input step |",
            "|---|---|---|---|---|",
            *(
                f"| {x['layer']} | {x['weight_bits']} | {x['input_bits']} | "
                + " | ".join(
                    f"{x[k]:.4g}" if k in x else "-" for k in ("weight_alpha", "input_alpha")
                )
                + " |"
                for x in r["layer_bits"]
            ),
        ]
    lines += [
        "",
        "## Conversion",
        "",
        "```",
        conversion_text,
        "```",
        "",
        "## Model",
        "",
        "```",
        summary_table,
        "```",
        "",
    ]
    return "\n".join(lines)


def run(config: TrainConfig) -> dict:
    """Run the main job; returns the report (also written to ``out/report.json``).

    Every artifact is staged beside its final path and all of them are moved into place
    together at the end (:class:`tfquant._files.Outputs`): a run that fails or is
    interrupted leaves its artifacts in ``out`` as they were, and a run with ``overwrite``
    replaces the previous run's set whole, deleting its artifacts this run does not write
    (e.g. ``model.tflite`` under ``convert=False``), never a mix. ``report["artifacts"]``
    lists the files written.

    Each epoch's end writes a checkpoint to ``out/checkpoints`` (the model's and optimizer's
    variables: weights, Adam moments, mirror-descent duals, iterations, learning rate; the
    history); ``resume=True`` continues from it with ``fit(initial_epoch=...)``, and since
    each epoch's batches depend only on ``(seed, epoch)``
    (:func:`tfquant.distribute.epoch_batches`) the resumed run ends with the weights of an
    uninterrupted one. The checkpoints stay after a finished run (``--overwrite`` starts
    over).

    Under ``strategy="mirrored"`` (:func:`tfquant.distribute.strategy`) the model trains
    under ``tf.distribute``; with several workers in ``TF_CONFIG`` only the chief writes
    into ``out``, and the other workers return ``{"worker": ...}`` after training.

    Raises:
        ValueError: a bad configuration or ``out`` (see :func:`check_config`).
        tfquant.datasets.DatasetNotFoundError: the dataset's offline source is missing.
        tfquant.converters.ConversionError: the trained model did not convert.
    """
    check_config(config)
    where = distribute.cluster()
    out = pathlib.Path(config.out)
    if not where.is_chief:
        # A worker reads the chief's checkpoints on --resume (the same --out on a shared
        # file system): refuse here what the chief refuses, rather than wait for it in a
        # collective op that never comes.
        _check_checkpoints(config, out)
        _train(config, out, chief=False)
        return {"worker": f"{where.task_type}:{where.task_index}", "artifacts": []}
    with _files.created_directory(out):
        outputs = _check_out(config)
        assert outputs is not None  # out exists now
        with outputs:
            report = _run(config, out, outputs)
            for name in ARTIFACTS:
                outputs.remove_on_commit(out / name)
            outputs.commit()
    state = checkpoint_state(out)
    if state is not None:  # the artifacts are this run's
        _write_state(out / CHECKPOINTS, {**state, "finished": True})
    return report


def _write_state(directory: pathlib.Path, state: dict) -> None:
    tmp = directory / f".state.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, directory / "state.json")


@dataclasses.dataclass
class _Data:
    """The data of a run: ``x``, ``y`` arrays (a dataset's training split; for an image
    folder, 20 batches for BatchNorm and calibration, or all of it for TSQ), the held-out
    ``xte``, ``yte``, the input shape and classes, and ``batches(epochs, initial_epoch)``
    -> (dataset, steps per epoch) of the training batches, which depend only on the seed and
    the epoch."""

    x: np.ndarray
    y: np.ndarray
    xte: np.ndarray
    yte: np.ndarray
    input_shape: tuple
    classes: int
    described: str  # what the progress line says it trains on
    batches: Callable[[int, int], tuple[Any, int]]
    batch_size: int

    @property
    def bn_data(self) -> np.ndarray:
        """The inputs BatchNorm is re-estimated on: the first 20 training batches."""
        return self.x[: 20 * self.batch_size]


def _array_batches(x: np.ndarray, y: np.ndarray, config: TrainConfig) -> Callable:
    """``_Data.batches`` over arrays: :func:`tfquant.distribute.epoch_batches`."""
    return lambda epochs, initial: distribute.epoch_batches(
        x, y, config.batch_size, config.seed, epochs, initial
    )


def _load(config: TrainConfig, say) -> _Data:
    if config.data_dir is not None:
        say(f"reading the image folders in {config.data_dir}")
        folder = datasets.image_folder(
            config.data_dir,
            config.image_size,
            batch_size=config.batch_size,
            validation_split=config.validation_split,
            seed=config.seed,
            augment=config.augment,
        )
        steps = math.ceil(folder.train_size / config.batch_size)
        if config.limit:
            steps = min(steps, math.ceil(config.limit / config.batch_size))
        first = folder.train.take(steps)
        # Evaluation, BatchNorm re-estimation and calibration read arrays: the held-out
        # split, and 20 training batches (or all of it, for a method that reads the arrays).
        xte, yte = datasets.to_numpy(
            folder.validation, max(config.limit // 4, 8) if config.limit else None
        )
        whole = methods.get(config.method).reads_arrays  # its fit reads the arrays
        x, y = datasets.to_numpy(first, None if whole else 20 * config.batch_size)
        input_shape, classes = folder.input_shape, len(folder.class_names)
        say(
            f"{folder.train_size} training and {folder.validation_size} held-out images, "
            f"{classes} classes, {input_shape[0]}x{input_shape[1]}x{input_shape[2]}"
        )
        return _Data(
            x=x,
            y=y,
            xte=xte,
            yte=yte,
            input_shape=input_shape,
            classes=classes,
            described=config.data_dir,
            # such a method trains on the arrays it reads (without further augmentation)
            batches=_array_batches(x, y, config)
            if whole
            else lambda epochs, initial: (folder.train_epochs(epochs, initial, steps), steps),
            batch_size=config.batch_size,
        )
    say(f"loading {config.dataset}")
    (xtr, ytr), (xte, yte) = datasets.load(config.dataset)
    if config.limit:
        xtr, ytr = xtr[: config.limit], ytr[: config.limit]
        xte, yte = xte[: max(config.limit // 4, 8)], yte[: max(config.limit // 4, 8)]
    return _Data(
        x=xtr,
        y=ytr,
        xte=xte,
        yte=yte,
        input_shape=xtr.shape[1:],
        classes=datasets.NUM_CLASSES[config.dataset],
        described=f"{len(xtr)} samples",
        batches=_array_batches(xtr, ytr, config),
        batch_size=config.batch_size,
    )


def _build(config: TrainConfig, data: _Data) -> tuple[keras.Model, list]:
    """The zoo model built for the method, compiled with its optimizer (unless its fit
    compiles the model itself), and the method's callbacks."""
    method = methods.get(config.method)
    options = method_options(config, method)
    model = zoo.build(
        config.model,
        method=method,
        method_options=options,
        input_shape=data.input_shape,
        classes=data.classes,
    )
    if method.compiles_itself:
        return model, []
    lr = config.learning_rate or method.learning_rate
    model.compile(
        optimizer=method.optimizer(lr, options),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model, method.callbacks(model, config.epochs, options)


def _train(config: TrainConfig, out: pathlib.Path, chief: bool, say=None, verbose=0):
    """Train (under the strategy, from the checkpoint when resuming); returns ``(model,
    data, history, train_seconds, report)`` with ``model`` an undistributed copy and
    ``report`` what the method adds to the report (or ``None``)."""
    say = say or (lambda m: None)
    method = methods.get(config.method)
    options = method_options(config, method)
    strategy = distribute.strategy(config.strategy)
    if strategy is not None:
        where = distribute.cluster()
        say(
            f"tf.distribute: {type(strategy).__name__}, {strategy.num_replicas_in_sync} "
            f"replica(s) on {where.workers} worker(s)"
        )
    keras.utils.set_random_seed(config.seed)
    data = _load(config, say)

    def scope():
        return strategy.scope() if strategy is not None else _nullcontext()

    with scope():
        model, callbacks = _build(config, data)
    if strategy is not None:
        distribute.prepare(model, strategy)
        keras.utils.set_random_seed(config.seed)
        local, _ = _build(config, data)  # undistributed: validation, finalize, export
        if method.compiles_itself:  # its fit compiles the trained model
            local.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        local = model
    # Keras validates the network as it trains (soft under mirror descent, with lagging
    # BatchNorm statistics); the curves also show the deployed one at every epoch. It only
    # measures: no epoch is chosen on the test set.
    hard_validation = HardValidation(
        (data.xte, data.yte),
        data.bn_data,
        batch_size=config.batch_size,
        model=None if local is model else local,
    )
    state = checkpoint_state(out) if config.resume else None
    checkpoints = _Checkpoints(out / CHECKPOINTS, config, chief, state or {})
    say(
        f"training {config.model} with {config.method} for {config.epochs} epoch(s) on "
        f"{data.described}"
        + (f", resuming after epoch {checkpoints.initial_epoch}" if state else "")
    )
    described = method.describe(config.epochs, options)
    if described:
        say(described)
    if state is not None and not method.compiles_itself:
        with scope():
            checkpoints.restore(model)
    start = time.perf_counter()
    result = method.fit(
        model,
        FitContext(
            x=data.x,
            y=data.y,
            batches=data.batches,
            validation_data=(data.xte, data.yte),
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate or method.learning_rate,
            seed=config.seed,
            verbose=verbose,
            options=options,
            callbacks=[*callbacks, hard_validation, checkpoints],
            checkpoints=checkpoints,
            strategy=strategy,
            say=say,
        ),
    )
    history = checkpoints.history
    train_seconds = checkpoints.seconds + time.perf_counter() - start
    if local is not model:
        distribute.copy_state(model, local)
    return local, data, history, train_seconds, method.report(result)


def _run(config: TrainConfig, out: pathlib.Path, outputs: _files.Outputs) -> dict:
    def stage(name: str) -> str:
        return outputs.stage_path(out / name)

    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    say = (lambda m: print(f"[tfquant train] {m}", flush=True)) if verbose else (lambda m: None)
    method = methods.get(config.method)
    model, data, history, train_seconds, method_report = _train(config, out, True, say, verbose)
    xtr, xte, yte, bn_data = data.x, data.xte, data.yte, data.bn_data

    say("finalizing: exact quantized kernels, BatchNorm re-estimated on 20 training batches")
    method.finalize(model, bn_data, batch_size=config.batch_size)
    test_pred = model.predict(xte, batch_size=512, verbose=0)
    model_summary = summary(model, print_fn=None)
    save_deployable(model, stage("model.keras"))  # the checkpoints keep the training state

    report: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "test_accuracy": _accuracy(test_pred, yte),
        "test_samples": int(len(yte)),
        "train_seconds": train_seconds,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "size": {
            "bitpacked_bytes": model_summary.memory_bytes,
            "float32_bytes": model_summary.float32_bytes,
            "compression": model_summary.compression,
        },
        "summary": model_summary.as_dict(),
    }
    conversion_text = "(not converted: --no-convert)"
    if config.convert:
        from tfquant import converters

        say("converting through Larq Compute Engine")
        flatbuffer, conversion = converters.convert_with_report(
            model, calibration_data=xtr[:64], parity_inputs=xte[:64]
        )
        outputs.write(out / "model.tflite", flatbuffer)
        conversion_text = conversion.text()
        n = min(len(xte), 1000)
        tflite_pred = converters.flatbuffer.run(flatbuffer, xte[:n])[0]
        say("benchmarking latency in LCE's interpreter")
        latency = converters.bench.local_latency(flatbuffer, threads=(1,), runs=50)[0]
        report.update(
            {
                "tflite_bytes": len(flatbuffer),
                "tflite_eval_samples": n,
                "test_accuracy_tflite": _accuracy(tflite_pred, yte[:n]),
                "test_accuracy_keras_same_samples": _accuracy(test_pred[:n], yte[:n]),
                "latency_ms": latency,
                "conversion": conversion.as_dict(),
            }
        )
    if method_report is not None:
        report[method.name] = method_report
    report["layer_bits"] = layer_bits(model)
    report["curves_png"] = _plot(history, stage("curves.png"))
    if not report["curves_png"]:
        outputs.unstage(out / "curves.png")
    stage("report.json")
    stage("report.md")
    report["artifacts"] = [os.path.basename(p) for p in outputs.staged]
    outputs.write(out / "report.json", json.dumps(report, indent=2))
    outputs.write(out / "report.md", _markdown(report, model_summary.table(), conversion_text))
    return report
