"""The run itself: check ``out``, load the data, build the zoo model for the method, fit it
(under a ``tf.distribute`` strategy when asked, from the checkpoint when resuming),
finalize, save, convert, benchmark and report (:func:`run`).

Imports the other modules of :mod:`tfquant.train` and the packages below it
(:mod:`tfquant.converters` lazily, only when converting).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from contextlib import nullcontext as _nullcontext
from typing import Any

from tfquant import _files, distribute, methods, zoo
from tfquant._keras import keras
from tfquant.callbacks import HardValidation
from tfquant.errors import ConfigError
from tfquant.methods.base import FitContext
from tfquant.models import save_deployable, summary
from tfquant.progress import EpochLines
from tfquant.train.checkpoints import (
    CHECKPOINTS,
    _check_checkpoints,
    _Checkpoints,
    _write_state,
    checkpoint_state,
)
from tfquant.train.config import TrainConfig, check_config, method_options
from tfquant.train.data import _Data, _load
from tfquant.train.report import _accuracy, _markdown, _plot, layer_bits

ARTIFACTS = ("model.keras", "model.tflite", "report.json", "report.md", "curves.png")


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
    resumes_overwrite = bool(config.resume and state is not None and state["config"]["overwrite"])
    if previous and not config.overwrite and not resumes_overwrite:
        raise ConfigError(
            f"{out} holds a previous run ({', '.join(previous)}). Choose another --out, or "
            "pass --overwrite to replace that set of files (other files there are left alone)."
        )
    overwrite = config.overwrite or resumes_overwrite
    outputs = _files.Outputs(overwrite=overwrite)
    try:
        for name in ARTIFACTS:
            outputs.add(out / name, name)
    except _files.FileError as e:
        raise ConfigError(str(e)) from None
    return outputs


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
    _check_out(config)  # --out's problems before anything is created, loaded or trained
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
    # One whole line per epoch (reads the same in a log as on a terminal); Keras' own bar
    # only on a terminal (verbose 1), drawn by a ProgbarLogger given before the lines, so that
    # it ends its line first (Keras would append its own after every callback given).
    lines = [keras.callbacks.ProgbarLogger()] if verbose == 1 else []
    lines += [EpochLines()] if verbose else []
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
            verbose=1 if verbose == 1 else 0,
            options=options,
            callbacks=[*callbacks, hard_validation, checkpoints, *lines],
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
    started = time.perf_counter()

    def say(message: str) -> None:  # each stage's line with the job's time so far
        if verbose:
            print(f"[tfquant train] {message}  {time.perf_counter() - started:.1f} s", flush=True)

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
