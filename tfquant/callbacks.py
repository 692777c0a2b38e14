"""Training callbacks: mirror-descent beta annealing over a ``fit`` call, and beta logging.

Example:

>>> from tfquant.callbacks import BetaAnnealing, BetaLogger
>>> callbacks = [BetaAnnealing(), BetaLogger()]  # model.fit(..., callbacks=callbacks)

:class:`HardValidation` validates the network ``tfquant.finalize`` will deploy while any
method trains, and can keep the best epoch.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from tfquant._keras import check_keras3, keras, tf

__all__ = ["BetaAnnealing", "BetaLogger", "HardValidation", "quantization_gap"]


def _mirror_descent(model, optimizer):
    from tfquant.optimizers import MirrorDescent

    if model is not None:
        check_keras3(model)
    opt = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if not isinstance(opt, MirrorDescent):
        raise ValueError(
            "Expected a model compiled with tfquant.MirrorDescent (or optimizer=...). "
            f"Received: {type(opt).__name__}"
        )
    return opt


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def quantization_gap(optimizer) -> float:
    """Mean :math:`|w - Q(w)|` over the quantized kernels a built ``MirrorDescent`` trains:
    how far the primal the forward pass uses is from its hard quantization (0 = hard)."""
    from tfquant.layers import quantization_of

    total, count = 0.0, 0
    for var in optimizer._mirror_vars if getattr(optimizer, "built", False) else []:
        w = tf.convert_to_tensor(var)
        info = quantization_of(var)
        assert info is not None  # every mirror variable is a quantized kernel
        hard = info.quantizer.exact(w)
        total += float(tf.reduce_sum(tf.abs(w - tf.cast(hard, w.dtype))))
        count += int(np.prod(w.shape))
    return total / max(count, 1)


class BetaAnnealing(keras.callbacks.Callback):
    r"""Anneal ``MirrorDescent``'s :math:`\beta` from ``beta`` to ``beta_max`` over this ``fit``.

    At the start of ``fit`` it sets the optimizer's ``beta_horizon`` to ``epochs * steps``
    (the steps ``fit`` announces), so :math:`\beta` grows geometrically and reaches
    ``beta_max`` on the last step: the last epochs train a nearly hard network and
    ``tfquant.finalize`` loses little. :math:`\beta` depends only on the optimizer's
    ``iterations``, so a run resumed from a checkpoint with ``fit(..., initial_epoch=k)``
    follows the same schedule; a further ``fit`` call on an already trained model (its
    ``iterations`` past the new horizon) continues at ``beta_max``.

    Args:
        optimizer: the ``MirrorDescent`` to drive; default the model's.
        fraction: reach ``beta_max`` after this fraction of the run (in (0, 1]).
    """

    def __init__(self, optimizer=None, fraction: float = 1.0) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"Expected fraction in (0, 1]. Received: fraction={fraction!r}")
        self._optimizer = optimizer
        self.fraction = float(fraction)

    def on_train_begin(self, logs=None):
        opt = _mirror_descent(self.model, self._optimizer)
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps or not epochs:
            raise ValueError(
                "BetaAnnealing needs the number of steps per epoch: pass steps_per_epoch to "
                f"fit for a dataset of unknown length. Received: steps={steps}, epochs={epochs}"
            )
        opt.beta_horizon = max(1, int(round(self.fraction * steps * epochs)))


class BetaLogger(keras.callbacks.Callback):
    r"""Make ``MirrorDescent``'s :math:`\beta` and quantization gap visible.

    At each epoch end it adds ``beta`` and ``quantization_gap`` (mean :math:`|w - Q(w)|`) to
    the logs, so ``History`` records them and a ``keras.callbacks.TensorBoard`` placed after
    this callback writes them as ``epoch_beta`` / ``epoch_quantization_gap``. Given
    ``log_dir`` it also writes the TensorBoard scalars ``mirror_descent/beta`` and
    ``mirror_descent/quantization_gap`` itself (step = optimizer iterations), every epoch
    or every ``update_freq`` batches.

    Args:
        log_dir: a TensorBoard log directory, or ``None`` to only add to the logs.
        update_freq: ``"epoch"`` or an integer number of batches.
        optimizer: the ``MirrorDescent``; default the model's.

    Raises:
        ValueError: for a bad ``update_freq``.
        ImportError: for a ``log_dir`` without the ``tensorboard`` package, which
            ``tf.summary`` needs (TensorFlow 2.21 no longer installs it).
    """

    def __init__(self, log_dir: str | None = None, update_freq: Any = "epoch", optimizer=None):
        super().__init__()
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                f"Expected update_freq 'epoch' or an integer >= 1. Received: {update_freq!r}"
            )
        if log_dir is not None and not _has_tensorboard():
            raise ImportError(
                "Expected the tensorboard package for BetaLogger(log_dir=...): tf.summary "
                "writes TensorBoard files with it, and TensorFlow 2.21 no longer installs it "
                f"(pip install tensorboard). Received: log_dir={log_dir!r} without tensorboard"
            )
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._optimizer = optimizer
        self._writer = None

    def on_train_begin(self, logs=None):
        _mirror_descent(self.model, self._optimizer)
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _write(self, opt, with_gap: bool) -> None:
        if self._writer is None:
            return
        step = int(opt.iterations.numpy())
        with self._writer.as_default():
            tf.summary.scalar("mirror_descent/beta", opt.beta, step=step)
            if with_gap:
                tf.summary.scalar(
                    "mirror_descent/quantization_gap", quantization_gap(opt), step=step
                )
        self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq != "epoch" and (batch + 1) % self.update_freq == 0:
            self._write(_mirror_descent(self.model, self._optimizer), with_gap=False)

    def on_epoch_end(self, epoch, logs=None):
        opt = _mirror_descent(self.model, self._optimizer)
        if logs is not None:
            logs["beta"] = opt.beta
            logs["quantization_gap"] = quantization_gap(opt)
        self._write(opt, with_gap=True)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_MODES = ("auto", "max", "min")


class HardValidation(keras.callbacks.Callback):
    r"""Validate the hard-quantized network at every epoch end, as ``tfquant.finalize`` makes it.

    While ``MirrorDescent`` trains, the forward pass uses the soft primal
    :math:`P_\beta(u)`, and BatchNorm's moving statistics follow it: Keras's ``val_accuracy``
    then measures a network that is never deployed (for STE and BinaryRelax too, the moving
    statistics lag the weights). At each epoch end this callback saves the model's weights,
    applies :func:`tfquant.finalize` (exact quantized kernels, BatchNorm re-estimated on
    ``bn_data``), evaluates the compiled loss and metrics on ``validation_data``, adds them to
    the logs as ``hard_val_loss``, ``hard_val_accuracy``, ... and puts the weights back, so
    training continues exactly as without the callback. Place it before callbacks that
    read the logs (``TensorBoard``, ``ModelCheckpoint``, ``EarlyStopping``).

    The mirror-descent authors validate the hard-rounded network during training and keep
    the best; ``restore_best=True`` does that: at the end of ``fit`` the model's weights and
    the optimizer's state (duals, moments, iterations) return to the end of the best epoch by
    ``monitor``, so ``tfquant.finalize(model, bn_data)`` then gives the network that scored
    best. It keeps one copy of both (about 3-4x the weights' memory with Adam or
    ``MirrorDescent``).

    Args:
        validation_data: ``(x, y)`` arrays, or a ``tf.data.Dataset`` of ``(x, y)`` batches;
            never the test set if the best epoch is chosen with it.
        bn_data: the training inputs BatchNorm is re-estimated on (what ``finalize`` will be
            given: an array, a dataset of ``x`` or ``(x, y)`` batches), or ``None`` to keep
            the moving statistics (for models without BatchNorm).
        bn_steps: at most this many batches of ``bn_data`` (default 20).
        batch_size: batch size for arrays.
        monitor: the log key that picks the best epoch (default ``"hard_val_accuracy"``).
        mode: ``"max"``, ``"min"`` or ``"auto"`` (``min`` for keys containing ``loss``).
        restore_best: return to the best epoch's state at the end of ``fit``.
        model: evaluate this model instead, the same network built (and compiled) outside
            the ``tf.distribute`` strategy the trained one runs under: at each epoch end
            the weights and optimizer variables are copied into it, so ``finalize`` and
            ``evaluate`` run on one device and each worker computes the same numbers.

    Attributes:
        best: the best ``monitor`` value so far; ``best_epoch``: its epoch (0-based).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import tfquant
    >>> model = keras.Sequential([keras.Input((8,)),
    ...     tfquant.layers.QuantDense(3, kernel_quantizer="ste_sign"),
    ...     keras.layers.BatchNormalization(), keras.layers.Softmax()])
    >>> model.compile(tfquant.MirrorDescent(), "sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> x, y = np.random.default_rng(0).normal(size=(64, 8)), np.arange(64) % 3
    >>> hard = tfquant.callbacks.HardValidation((x, y), bn_data=x, restore_best=True)
    >>> history = model.fit(x, y, epochs=2, callbacks=[hard], verbose=0)
    >>> sorted(k for k in history.history if k.startswith("hard_val"))
    ['hard_val_accuracy', 'hard_val_loss']
    >>> hard.best_epoch in (0, 1)
    True
    """

    def __init__(
        self,
        validation_data,
        bn_data=None,
        *,
        bn_steps: int | None = 20,
        batch_size: int = 128,
        monitor: str = "hard_val_accuracy",
        mode: str = "auto",
        restore_best: bool = False,
        model: keras.Model | None = None,
    ) -> None:
        super().__init__()
        if restore_best and model is not None:
            raise ValueError(
                "Expected restore_best=False with model=...: the best state is kept for the "
                "trained model. Received: restore_best=True and a model to evaluate"
            )
        self._evaluated = model
        if isinstance(validation_data, tf.data.Dataset):
            self._x, self._y = validation_data, None
        elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            self._x, self._y = validation_data
        else:
            raise ValueError(
                "Expected validation_data as (x, y) arrays or a tf.data.Dataset of (x, y) "
                f"batches. Received: {type(validation_data).__name__}"
            )
        if mode not in _MODES:
            raise ValueError(f"Expected mode in {_MODES}. Received: mode={mode!r}")
        if bn_steps is not None and (isinstance(bn_steps, bool) or int(bn_steps) < 1):
            raise ValueError(f"Expected bn_steps None or >= 1. Received: bn_steps={bn_steps!r}")
        self.bn_data = bn_data
        self.bn_steps = bn_steps
        self.batch_size = int(batch_size)
        self.monitor = monitor
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        self.mode = mode
        self.restore_best = bool(restore_best)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._best_state: tuple[list, list] | None = None  # (weights, optimizer variables)

    def on_train_begin(self, logs=None):
        check_keras3(self.model)
        if self.restore_best and getattr(self.model.optimizer, "use_ema", False):
            raise ValueError(
                "Expected an optimizer without use_ema=True when restore_best=True: the best "
                "epoch is judged on the current weights, and fit replaces them with their "
                "moving average before restore_best could act. Received: use_ema=True"
            )
        self.best, self.best_epoch, self._best_state = None, None, None

    def _evaluate_hard(self) -> dict:
        from tfquant.models import finalize

        model = self.model
        if self._evaluated is not None:
            from tfquant.distribute import copy_state

            copy_state(model, self._evaluated)
            model = self._evaluated
        saved = model.get_weights()
        try:
            finalize(model, self.bn_data, batch_size=self.batch_size, steps=self.bn_steps)
            if self._y is None:
                results = model.evaluate(self._x, verbose=0, return_dict=True)
            else:
                results = model.evaluate(
                    self._x, self._y, batch_size=self.batch_size, verbose=0, return_dict=True
                )
        finally:
            model.set_weights(saved)
        return {f"hard_val_{name}": float(value) for name, value in results.items()}

    def on_epoch_end(self, epoch, logs=None):
        results = self._evaluate_hard()
        if logs is not None:
            logs.update(results)
        if self.monitor not in results:
            raise ValueError(
                f"Expected monitor to be one of {sorted(results)} (the model's compiled loss "
                f"and metrics, prefixed hard_val_). Received: monitor={self.monitor!r}"
            )
        value = results[self.monitor]
        better = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
        if not better:
            return
        self.best, self.best_epoch = value, epoch
        if self.restore_best:
            optimizer = self.model.optimizer
            self._best_state = (
                self.model.get_weights(),
                [v.numpy() for v in optimizer.variables],
            )

    def on_train_end(self, logs=None):
        if not self.restore_best or self._best_state is None:
            return
        weights, optimizer_state = self._best_state
        self.model.set_weights(weights)
        for variable, value in zip(self.model.optimizer.variables, optimizer_state):
            variable.assign(value)
