r"""BinaryRelax: relaxed quantization with continuation, then exact quantization.

Yin et al. relax the constraint "the weights lie in the quantized set :math:`\mathcal Q`" by
its Moreau envelope :math:`\frac{\lambda}{2}\operatorname{dist}(u, \mathcal Q)^2`. Training
keeps float weights :math:`x` and forwards the pseudo-quantized weights

\\[ u = \operatorname{prox}(x) = \frac{x + \lambda\, Q(x)}{1 + \lambda}, \\]

where :math:`Q` is the projection onto :math:`\mathcal Q` (the wrapped quantizer). One step,
with learning rate :math:`\gamma_t` and any optimizer in place of the gradient step:

* phase one: :math:`x^{t+1} = x^t - \gamma_t \nabla f(u^t)`,
  :math:`u^{t+1} = (x^{t+1} + \lambda_t Q(x^{t+1})) / (1 + \lambda_t)`,
  :math:`\lambda_{t+1} = \rho\, \lambda_t` with :math:`\rho \ge 1`;
* phase two: :math:`x^{t+1} = x^t - \gamma_t \nabla f(u^t)`, :math:`u^{t+1} = Q(x^{t+1})`
  (:math:`\lambda = \infty`), usually with a smaller learning rate.

The gradient at :math:`u` is applied to :math:`x` unchanged (straight-through:
:math:`\partial u / \partial x := 1`). The authors' code starts at :math:`\lambda_0 = 1` and
multiplies by :math:`\rho = 1.04` each epoch.

In tfquant the relaxation is a quantizer, :class:`RelaxedQuantizer`, that wraps any weight
quantizer and owns :math:`\lambda` as a non-trainable variable (a weight of the layer using
it, so it is saved with the model and in checkpoints), and a callback,
:class:`BinaryRelaxSchedule`, that sets :math:`\lambda` from the epoch index (so resuming
from a checkpoint with ``initial_epoch`` continues the schedule) and switches to phase two.
``tfquant train --method binary-relax`` (:class:`BinaryRelaxMethod`) builds the layers with a
:class:`RelaxedQuantizer` kernel quantizer directly and passes the schedule to ``fit``;
:func:`apply` does both for a model already built with other kernel quantizers. Which of the
method's settings are tfquant's choices: ``docs/methods.md#binaryrelax``.

Example:

>>> import keras
>>> import numpy as np
>>> import tfquant
>>> from tfquant.methods import binary_relax
>>> model = keras.Sequential([
...     keras.Input((8,)),
...     tfquant.layers.QuantDense(4, kernel_quantizer="scaled_sign", use_bias=False)])
>>> callbacks = binary_relax.apply(
...     model, growth=2.0, phase_two_epoch=2, lr_multiplier=0.1, epochs=3)
>>> model.compile(keras.optimizers.SGD(0.1), "mse")
>>> x, y = np.ones((16, 8), "float32"), np.zeros((16, 4), "float32")
>>> history = model.fit(x, y, epochs=3, callbacks=callbacks, verbose=0)
>>> history.history["relax_lambda"]
[1.0, 2.0, inf]
>>> round(float(model.optimizer.learning_rate.numpy()), 4)
0.01
>>> _ = tfquant.finalize(model)  # the kernel becomes ScaledSign(w) exactly

References:
    Yin, Zhang, Lyu, Osher, Qi, Xin, "BinaryRelax: A Relaxation Approach for Training Deep
    Neural Networks with Quantized Weights", SIAM J. Imaging Sciences 11(4), 2018
    (arXiv:1801.06313).
"""

from __future__ import annotations

import math
from typing import Any

from tfquant import quantizers
from tfquant._keras import check_keras3, keras, tf
from tfquant.layers import KernelQuantization, attach_quantization, quantization_of
from tfquant.methods.base import Method
from tfquant.models import quantized_layers

__all__ = [
    "RelaxedQuantizer",
    "BinaryRelaxSchedule",
    "BinaryRelaxMethod",
    "apply",
    "relax",
    "relaxation_weight",
    "relaxed_quantizers",
]

_UPDATES = ("epoch", "step")


# ----------------------------------------------------------------- pure functions
def relax(x: tf.Tensor, q: tf.Tensor, lam: tf.Tensor | float) -> tf.Tensor:
    r"""The relaxed weights :math:`u = (x + \lambda q) / (1 + \lambda)`, straight-through.

    Computed as :math:`q + (x - q) / (1 + \lambda)`, which is exactly :math:`q` for
    :math:`\lambda = \infty` (no ``inf / inf``). The backward pass is the identity in
    :math:`x`: :math:`\partial u / \partial x := 1`, and no gradient flows to :math:`q` or
    :math:`\lambda`.

    Args:
        x: the float weights.
        q: the quantized weights :math:`Q(x)`, same shape.
        lam: :math:`\lambda \in [0, \infty]`, a scalar.

    Returns:
        :math:`u`, the shape and dtype of ``x``.
    """
    q = tf.stop_gradient(tf.cast(q, x.dtype))
    lam = tf.stop_gradient(tf.cast(lam, x.dtype))

    @tf.custom_gradient
    def _call(x):
        return q + (x - q) / (1.0 + lam), lambda dy: dy

    return _call(x)


def relaxation_weight(
    epoch: int,
    *,
    lambda_init: float = 1.0,
    growth: float = 1.04,
    phase_two_epoch: int | None = None,
    step: int = 0,
    steps_per_epoch: int | None = None,
) -> float:
    r""":math:`\lambda` during batch ``step`` of epoch ``epoch`` (both 0-based).

    :math:`\lambda = \lambda_0 \rho^{e}` per epoch (``steps_per_epoch=None``), or
    :math:`\lambda_0 \rho^{e S + s}` per step with :math:`S` steps per epoch;
    :math:`\infty` from ``phase_two_epoch`` on.

    >>> [relaxation_weight(e, growth=2.0, phase_two_epoch=3) for e in range(4)]
    [1.0, 2.0, 4.0, inf]
    """
    if phase_two_epoch is not None and epoch >= phase_two_epoch:
        return math.inf
    exponent = epoch if steps_per_epoch is None else epoch * steps_per_epoch + step
    try:
        return float(lambda_init * growth**exponent)
    except OverflowError:
        return math.inf


# ----------------------------------------------------------------- quantizer
def _check_lambda(lambda_init: float) -> float:
    try:
        value = float(lambda_init)
    except (TypeError, ValueError):
        value = math.nan
    if not value >= 0:  # also rejects NaN
        raise ValueError(
            f"Expected lambda_init >= 0 (inf for exact quantization). "
            f"Received: lambda_init={lambda_init!r}"
        )
    return value


@keras.utils.register_keras_serializable(package="tfquant")
class RelaxedQuantizer(quantizers.Quantizer):
    r"""BinaryRelax's relaxation of a weight quantizer :math:`Q`:

    \\[ u = \frac{x + \lambda Q(x)}{1 + \lambda}, \qquad
        \frac{\partial u}{\partial x} := 1, \\]

    with :math:`\lambda = \infty` giving :math:`u = Q(x)` exactly (phase two). The wrapped
    quantizer's own surrogate gradient is not used: the gradient at :math:`u` is applied to
    :math:`x`, as in the paper.

    :math:`\lambda` is a non-trainable scalar variable (``relax_lambda``) created with the
    quantizer (under the distribution strategy in scope), hence a weight of the layer whose
    ``kernel_quantizer`` this is: it is saved with the model and in checkpoints.
    :class:`BinaryRelaxSchedule` drives it. ``precision``, ``levels`` and ``scaled`` are the
    wrapped quantizer's, and ``exact`` (what ``tfquant.finalize`` applies) is the wrapped
    quantizer.

    Loading a saved model that uses it needs ``import tfquant.methods.binary_relax`` (which
    registers the class) before ``keras.models.load_model``.

    Args:
        quantizer: the weight quantizer to relax (alias, config dict or instance), e.g.
            ``"scaled_sign"``, ``SteTernary()``, ``UniformQuantizer(2, mode="weight")``.
        lambda_init: the initial :math:`\lambda \ge 0`; ``float("inf")`` for exact
            quantization.

    Raises:
        ValueError: for a missing quantizer or :math:`\lambda_0 < 0`.

    Example:

    >>> import numpy as np
    >>> from tfquant.methods.binary_relax import RelaxedQuantizer
    >>> q = RelaxedQuantizer("ste_sign", lambda_init=3.0)
    >>> u = q(np.array([-0.2, 0.6], "float32"))  # (x + 3 sign(x)) / 4
    >>> [round(float(v), 4) for v in u]
    [-0.8, 0.9]
    >>> q.quantizer.get_config()["name"], q.levels
    ('ste_sign', (-1.0, 1.0))
    """

    def __init__(self, quantizer: Any = "scaled_sign", lambda_init: float = 1.0, **kwargs: Any):
        wrapped = quantizers.get(quantizer)
        if wrapped is None:
            raise ValueError(
                "Expected a weight quantizer to relax (alias, config dict or "
                f"tfquant.quantizers.Quantizer). Received: quantizer={quantizer!r}"
            )
        self.lambda_init = _check_lambda(lambda_init)
        super().__init__(**kwargs)
        self.quantizer = wrapped
        # A scalar whatever the input: created here, so the layer that owns this quantizer
        # holds it (saved, checkpointed) before its first call.
        self.relax_lambda = self.add_weight(
            name="relax_lambda",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(self.lambda_init),
            trainable=False,
            aggregation="only_first_replica",
        )

    @property
    def precision(self) -> int:  # type: ignore[override]
        return self.quantizer.precision

    @property
    def grid(self):
        """The wrapped quantizer's grid: what :meth:`exact` (phase two, deployment) outputs."""
        return self.quantizer.grid

    @property
    def levels(self):
        return self.quantizer.levels

    @property
    def scaled(self) -> bool:
        return self.quantizer.scaled

    def exact(self, inputs):
        return self.quantizer.exact(inputs)

    def build(self, input_shape):
        if not self.quantizer.built:
            self.quantizer.build(input_shape)

    def call(self, inputs):
        return relax(inputs, self.quantizer(inputs), self.relax_lambda)

    def get_config(self):
        return {
            **super().get_config(),
            "quantizer": quantizers.serialize(self.quantizer),
            "lambda_init": self.lambda_init,
        }


quantizers.register_alias("relaxed", RelaxedQuantizer)


def relaxed_quantizers(model: keras.Model) -> list[RelaxedQuantizer]:
    """The :class:`RelaxedQuantizer` kernel quantizers of ``model``'s tfquant layers."""
    return [
        layer.kernel_quantizer
        for layer in quantized_layers(model)
        if isinstance(layer.kernel_quantizer, RelaxedQuantizer)
    ]


# ----------------------------------------------------------------- callback
class BinaryRelaxSchedule(keras.callbacks.Callback):
    r"""Drives :math:`\lambda` of every :class:`RelaxedQuantizer` in the model and switches
    to phase two.

    :math:`\lambda = \lambda_0 \rho^{e}` during epoch :math:`e` (``update="epoch"``), or
    :math:`\lambda_0 \rho^{e S + s}` during batch :math:`s` of :math:`S`
    (``update="step"``; :math:`\rho` is then a per-step factor), and :math:`\infty` from
    ``phase_two_epoch`` on (the forward pass uses :math:`Q(x)` exactly). At the start of
    epoch ``phase_two_epoch`` the optimizer's learning rate is multiplied by
    ``lr_multiplier``. It also logs ``relax_lambda`` each epoch.

    The schedule is a function of the epoch index Keras passes (:func:`relaxation_weight`),
    not of counters in the callback, and :math:`\lambda` lives in the model weights, so
    ``model.fit(..., initial_epoch=k)`` after restoring a checkpoint continues it. The
    learning rate is multiplied once, when entering epoch ``phase_two_epoch``: a checkpoint
    taken later carries the reduced rate in the optimizer state. (Restoring only the model
    weights into a fresh optimizer past that epoch leaves the rate as compiled.) Any Keras
    optimizer with a float learning rate works; it is set through
    ``optimizer.learning_rate``.

    Args:
        lambda_init: :math:`\lambda_0 \ge 0` (the authors use 1).
        growth: :math:`\rho \ge 1` per epoch or per step (the authors use 1.04 per epoch).
        update: ``"epoch"`` or ``"step"``.
        phase_two_epoch: first epoch (0-based) of phase two, or ``None`` for none; must be
            less than ``epochs``, or, without it, than the ``epochs`` of ``fit`` (checked
            when training begins).
        lr_multiplier: factor in :math:`(0, \infty)` applied to the learning rate when
            phase two begins, or ``None``.
        epochs: the planned total number of epochs, checked against ``phase_two_epoch`` at
            construction. Give it when training runs in several ``fit`` calls (resuming
            with ``initial_epoch``), some of which end before phase two.

    Raises:
        ValueError: for a bad argument; at the start of training, for a model without
            relaxed quantizers, for ``phase_two_epoch >= epochs``, or for ``lr_multiplier``
            with a learning-rate schedule.
    """

    def __init__(
        self,
        lambda_init: float = 1.0,
        growth: float = 1.04,
        *,
        update: str = "epoch",
        phase_two_epoch: int | None = None,
        lr_multiplier: float | None = None,
        epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.lambda_init = _check_lambda(lambda_init)
        if not (isinstance(growth, (int, float)) and growth >= 1 and math.isfinite(growth)):
            raise ValueError(f"Expected growth >= 1 (finite). Received: growth={growth!r}")
        if update not in _UPDATES:
            raise ValueError(f"Expected update in {_UPDATES}. Received: update={update!r}")
        if phase_two_epoch is not None and (
            isinstance(phase_two_epoch, bool)
            or not isinstance(phase_two_epoch, int)
            or phase_two_epoch < 0
        ):
            raise ValueError(
                "Expected phase_two_epoch an integer >= 0 or None. "
                f"Received: phase_two_epoch={phase_two_epoch!r}"
            )
        if lr_multiplier is not None and not (
            isinstance(lr_multiplier, (int, float))
            and lr_multiplier > 0
            and math.isfinite(lr_multiplier)
        ):
            raise ValueError(
                f"Expected lr_multiplier > 0 (finite) or None. "
                f"Received: lr_multiplier={lr_multiplier!r}"
            )
        if lr_multiplier is not None and phase_two_epoch is None:
            raise ValueError(
                "Expected phase_two_epoch with lr_multiplier (the rate changes when phase "
                f"two begins). Received: lr_multiplier={lr_multiplier}, phase_two_epoch=None"
            )
        self.growth = float(growth)
        self.update = update
        self.phase_two_epoch = phase_two_epoch
        self.lr_multiplier = None if lr_multiplier is None else float(lr_multiplier)
        self.epochs = epochs
        self._check_phase_two(epochs)
        self._epoch = 0
        self._quantizers: list[RelaxedQuantizer] = []

    def _check_phase_two(self, epochs: Any) -> None:
        if self.phase_two_epoch is None or epochs is None:
            return
        if self.phase_two_epoch >= epochs:
            raise ValueError(
                f"Expected phase_two_epoch < epochs (phase two must start within training). "
                f"Received: phase_two_epoch={self.phase_two_epoch}, epochs={epochs}"
            )

    def get_config(self) -> dict[str, Any]:
        return {
            "lambda_init": self.lambda_init,
            "growth": self.growth,
            "update": self.update,
            "phase_two_epoch": self.phase_two_epoch,
            "lr_multiplier": self.lr_multiplier,
            "epochs": self.epochs,
        }

    def lambda_at(self, epoch: int, step: int = 0) -> float:
        """:math:`\\lambda` during batch ``step`` of epoch ``epoch``."""
        steps = self.params.get("steps") if self.update == "step" and self.params else None
        if self.update == "step" and not steps:
            raise ValueError(
                "Expected a known number of steps per epoch with update='step' (pass "
                "steps_per_epoch to fit, or use an input of known length). Received: "
                f"steps={steps!r}"
            )
        return relaxation_weight(
            epoch,
            lambda_init=self.lambda_init,
            growth=self.growth,
            phase_two_epoch=self.phase_two_epoch,
            step=step,
            steps_per_epoch=steps if self.update == "step" else None,
        )

    def _assign(self, value: float) -> None:
        for q in self._quantizers:
            q.relax_lambda.assign(value)

    def on_train_begin(self, logs=None):
        check_keras3(self.model)
        planned = self.epochs if self.epochs is not None else (self.params or {}).get("epochs")
        self._check_phase_two(planned)
        self._quantizers = relaxed_quantizers(self.model)
        if not self._quantizers:
            raise ValueError(
                "Expected a model whose tfquant layers have RelaxedQuantizer kernel quantizers "
                f"(see binary_relax.apply). Received: model {self.model.name!r} with none"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._assign(self.lambda_at(self._epoch))
        if self.lr_multiplier is not None and self._epoch == self.phase_two_epoch:
            optimizer = self.model.optimizer
            rate = optimizer.learning_rate
            try:
                optimizer.learning_rate = (
                    float(keras.ops.convert_to_numpy(rate)) * self.lr_multiplier
                )
            except (TypeError, ValueError) as error:
                raise ValueError(
                    "Expected an optimizer with a float learning rate to multiply by "
                    f"lr_multiplier. Received: {type(optimizer).__name__} with learning rate "
                    f"{rate!r} ({error})"
                ) from error

    def on_train_batch_begin(self, batch, logs=None):
        if self.update == "step":
            self._assign(self.lambda_at(self._epoch, int(batch)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._quantizers:
            logs["relax_lambda"] = float(self._quantizers[0].relax_lambda.numpy())


# ----------------------------------------------------------------- convenience
def _replace_kernel_quantizer(layer: Any, quantizer: RelaxedQuantizer) -> None:
    """Make ``quantizer`` the kernel quantizer of a built layer. The quantizer is a tracked
    sub-layer, and Keras 3 locks a built layer's state: the old one is untracked and the new
    one tracked with the lock lifted, as Keras's own ``Layer.quantize`` does."""
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        tracker.untrack(layer.kernel_quantizer)
        layer.kernel_quantizer = quantizer
    finally:
        if locked:
            tracker.lock()


def apply(
    model: keras.Model,
    lambda_init: float = 1.0,
    growth: float = 1.04,
    *,
    update: str = "epoch",
    phase_two_epoch: int | None = None,
    lr_multiplier: float | None = None,
    epochs: int | None = None,
) -> list[keras.callbacks.Callback]:
    r"""Train ``model`` with BinaryRelax: relax every kernel quantizer, return the callbacks.

    Each tfquant layer's ``kernel_quantizer`` :math:`Q` is replaced, in place, by
    ``RelaxedQuantizer(Q, lambda_init)`` (layers already relaxed are kept), created under
    ``model.distribute_strategy`` with its :math:`\lambda` variable. The
    forward pass then uses :math:`u = (x + \lambda Q(x)) / (1 + \lambda)` and the gradient at
    :math:`u` updates :math:`x`:

    \\[ x^{t+1} = x^t - \gamma_t \nabla f(u^t), \quad
        u^{t+1} = \frac{x^{t+1} + \lambda_t Q(x^{t+1})}{1 + \lambda_t}, \quad
        \lambda_{t+1} = \rho \lambda_t, \\]

    then, from ``phase_two_epoch`` on, :math:`u = Q(x)` (:math:`\lambda = \infty`) with the
    learning rate times ``lr_multiplier``. After training, ``tfquant.finalize(model)`` stores
    :math:`Q(x)`. Input quantizers are left alone (BinaryRelax is about weights).

    Call it before ``compile``/``fit`` (a compiled model is re-traced at the next ``fit``).
    Building a model with ``kernel_quantizer=RelaxedQuantizer(...)`` (alias ``"relaxed"``)
    and passing ``BinaryRelaxSchedule(...)`` to ``fit`` is the same thing.

    Args:
        model: a built model with tfquant quantized layers (modified in place).
        lambda_init, growth, update, phase_two_epoch, lr_multiplier, epochs: see
            :class:`BinaryRelaxSchedule`.

    Returns:
        ``[BinaryRelaxSchedule(...)]``, to pass to ``model.fit(callbacks=...)``.

    Raises:
        ValueError: for bad arguments, an unbuilt model, or a model without quantized
            kernels.
        TypeError: for a tf-keras (Keras 2) model.
    """
    check_keras3(model)
    schedule = BinaryRelaxSchedule(
        lambda_init,
        growth,
        update=update,
        phase_two_epoch=phase_two_epoch,
        lr_multiplier=lr_multiplier,
        epochs=epochs,
    )
    if not model.built:
        raise ValueError(f"Expected a built model. Received: {model.name!r}, which is not built")
    layers: list[Any] = [  # Keras layers with the QuantizerMixin
        layer for layer in quantized_layers(model) if layer.kernel_quantizer is not None
    ]
    if not layers:
        raise ValueError(
            "Expected a model with tfquant quantized layers that have a kernel_quantizer. "
            f"Received: model {model.name!r} with none"
        )
    with model.distribute_strategy.scope():
        for layer in layers:
            kernel = layer.kernel_variable
            relaxed = layer.kernel_quantizer
            if not isinstance(relaxed, RelaxedQuantizer):
                relaxed = RelaxedQuantizer(relaxed, lambda_init)
                _replace_kernel_quantizer(layer, relaxed)
                info = quantization_of(kernel)
                gate = layer.kernel_gate if info is None else info.gate
                attach_quantization(kernel, KernelQuantization(relaxed, gate, layer.name))
            if not relaxed.built:
                relaxed.build(kernel.shape)
    # Functions traced before the swap would keep the old quantizers: re-trace at next use.
    model.train_function = model.test_function = model.predict_function = None
    return [schedule]


# ----------------------------------------------------------------- the registry's method
class BinaryRelaxMethod(Method):
    """``binary-relax`` for ``tfquant train``: the layers are built with a
    :class:`RelaxedQuantizer` over ``scaled_sign`` kernels (the paper's scaled binary set)
    and sign inputs; :math:`\\lambda` grows from 1 to 100 over all epochs but the last, which
    is phase two (exact :math:`Q`, learning rate x0.1), Adam. See
    ``docs/methods.md#binaryrelax``."""

    name = "binary-relax"
    summary = "binary, relaxed quantization with continuation (BinaryRelax), then exact"

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        if role != "hidden":
            return super().quantizers(role)
        return "ste_sign", RelaxedQuantizer("scaled_sign", lambda_init=1.0)

    def callbacks(self, model: Any, epochs: int, options: dict) -> list:
        two = epochs > 1
        return [
            BinaryRelaxSchedule(
                1.0,
                100.0 ** (1.0 / max(epochs - 1, 1)),
                phase_two_epoch=epochs - 1 if two else None,
                lr_multiplier=0.1 if two else None,
                epochs=epochs,
            )
        ]
