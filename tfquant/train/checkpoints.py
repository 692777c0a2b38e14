"""A run's checkpoints in ``out/checkpoints``: the callback that writes one at each epoch's
end (:class:`_Checkpoints`, the :class:`tfquant.methods.Checkpoints` a method fits through),
reading the last one's state (:func:`checkpoint_state`), restoring it, and the checks that a
``--resume`` continues the run it names.

Imports :mod:`tfquant.train.config`, :mod:`tfquant.errors` and Keras.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from tfquant._keras import keras
from tfquant.errors import ConfigError
from tfquant.train.config import TrainConfig

CHECKPOINTS = "checkpoints"  # out/checkpoints: the last epoch's state, for --resume
# config fields a resumed run may change: they do not change what is trained
_RESUME_FREE = ("out", "overwrite", "resume", "verbose", "convert")


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
    if config.resume and state is not None:  # (--resume without a state raised above)
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


def _write_state(directory: pathlib.Path, state: dict) -> None:
    tmp = directory / f".state.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, directory / "state.json")
