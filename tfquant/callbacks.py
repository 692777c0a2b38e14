"""Training callbacks: mirror-descent beta annealing over a ``fit`` call, and beta logging.

Example:

>>> from tfquant.callbacks import BetaAnnealing, BetaLogger
>>> callbacks = [BetaAnnealing(), BetaLogger()]  # model.fit(..., callbacks=callbacks)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfquant._keras import keras, tf

__all__ = ["BetaAnnealing", "BetaLogger", "quantization_gap"]


def _mirror_descent(model, optimizer):
    from tfquant.optimizers import MirrorDescent

    opt = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if not isinstance(opt, MirrorDescent):
        raise ValueError(
            "Expected a model compiled with tfquant.MirrorDescent (or optimizer=...). "
            f"Received: {type(opt).__name__}"
        )
    return opt


def quantization_gap(optimizer) -> float:
    """Mean :math:`|w - Q(w)|` over the quantized kernels a built ``MirrorDescent`` trains:
    how far the primal the forward pass uses is from its hard quantization (0 = hard)."""
    from tfquant.layers import quantization_of

    total, count = 0.0, 0
    for var in getattr(optimizer, "_mirror_vars", []):
        w = tf.convert_to_tensor(var)
        hard = quantization_of(var).quantizer.exact(w)
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
    """

    def __init__(self, log_dir: str | None = None, update_freq: Any = "epoch", optimizer=None):
        super().__init__()
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                f"Expected update_freq 'epoch' or an integer >= 1. Received: {update_freq!r}"
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
