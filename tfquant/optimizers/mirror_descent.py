"""``tfquant.MirrorDescent``: mirror descent for quantized networks (Ajanthan et al. 2021).

A thin Keras optimizer over the pure functions of :mod:`tfquant.optimizers.mirror_maps`.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from tfquant._keras import keras, tf
from tfquant.layers import quantization_of
from tfquant.optimizers import mirror_maps as mm

__all__ = ["MirrorDescent"]

_FORWARDS = ("primal", "quantized")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value!r}")
    return float(value)


def _unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"Expected {name} in [0, 1). Received: {name}={value!r}")
    return float(value)


def _rounds_to_nearest(quantizer, levels: tuple[float, ...]) -> bool:
    """Whether ``quantizer.exact`` maps values to their nearest level (ties excluded)."""
    q = np.asarray(levels)
    probe = np.linspace(q[0] - 0.5, q[-1] + 0.5, 97)
    mids = (q[1:] + q[:-1]) / 2
    probe = probe[np.min(np.abs(probe[:, None] - mids[None, :]), axis=1) > 1e-3]
    nearest = q[np.argmin(np.abs(probe[:, None] - q[None, :]), axis=1)]
    out = quantizer.exact(tf.constant(probe, tf.float32)).numpy()
    return bool(np.allclose(out, nearest))


def _set_everywhere(variable, value: float) -> None:
    """Assign ``value`` to a variable and, under tf.distribute, to each replica's component
    directly: ``build`` may run in one replica's context, where assigning the distributed
    variable would wait for a merge with replicas that do not build."""
    components = getattr(variable, "values", None)
    for component in components if isinstance(components, tuple) else (variable,):
        component.assign(value)


@keras.utils.register_keras_serializable(package="tfquant")
class MirrorDescent(keras.optimizers.Optimizer):
    r"""Mirror descent for quantized weights, Adam for every other variable.

    Every trainable variable that is a tfquant quantized kernel (found from the variable
    itself with :func:`tfquant.layers.quantization_of`, under ``tf.distribute`` too) is
    trained by mirror descent towards its quantizer's levels; every other variable
    (BatchNorm, float layers, biases) by Adam. With :math:`d_t` Adam's bias-corrected
    direction :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon)` of the gradient
    :math:`g_t = \partial L / \partial w` (softmax: :math:`g_{t,l} = q_l\,\partial L/\partial w`
    for the ``d`` coordinates of a weight):

    * stable (MD-tanh-S, MD-softmax-S, ternary): the dual :math:`u` is a slot variable,
      :math:`u_{t+1} = u_t - \eta d_t` ("full STE": the gradient with respect to the primal
      updates the dual unchanged), and the kernel holds the primal
      :math:`w_{t+1} = P_{\beta_{t+1}}(u_{t+1})`;
    * non-stable (MD-tanh, MD-softmax): the primal is updated through the mirror map,
      :math:`w_{t+1} = \tanh(\operatorname{atanh}(w_t) - \eta \beta_t d_t)`, or by
      exponentiated gradient on a simplex slot of ``d`` coordinates per weight.

    The kernel's initial value is the initial primal: each dual starts at the mirror-map
    inverse of its kernel, so the weights a model was built (or pre-trained) with are where
    mirror descent starts.

    **Forward pass.** With ``forward="primal"`` (default, the paper's) the optimizer sets each
    quantized layer's gate to 0 in ``build``, so the layer forwards the stored primal
    :math:`P_\beta(u)`: soft while :math:`\beta` is small, nearly hard late. ``build`` runs
    inside the first traced train step before that step executes, so ``fit`` forwards the
    primal from its first step; an eager loop (``run_eagerly=True`` or a hand-written loop)
    forwards ``Q(w)`` on its very first step unless ``optimizer.build(model.trainable_variables)``
    is called first. ``forward="quantized"`` keeps the gate (1): the forward pass is
    :math:`\operatorname{sign}(P_\beta(u)) = \operatorname{sign}(u)` and mirror descent
    reduces to BinaryConnect on the dual. Measured with the defaults (hard test accuracy
    after ``finalize``, one seed): Fashion-MNIST CNN (20k images, 3 epochs) 84.7% primal,
    84.7% quantized (train accuracy 86.6% vs 85.0%); digits MLP (10 epochs, 1e-2) 98.1%
    both. The primal forward is the default: it is the paper's method, and no worse here.

    **Annealing** :math:`\beta`. With ``beta_horizon=T`` (steps) :math:`\beta` grows
    geometrically from ``beta`` to ``beta_max`` over ``T`` steps and stays there;
    :class:`tfquant.callbacks.BetaAnnealing` sets ``T`` to the length of the ``fit`` call,
    so a run of any length starts soft and ends nearly hard. Without a horizon :math:`\beta`
    follows the paper's rule :math:`\beta \leftarrow \min(\beta\rho, \beta_{\max})` every
    ``beta_every`` steps (``rho = beta_growth``); the defaults (1.02 every 2 steps, cap 100)
    reach the cap after 465 steps, i.e. within a few epochs. The paper's long CIFAR-10 runs
    used ``learning_rate=1e-3, beta_growth=1.02, beta_every=200`` and no practical cap.
    :math:`\beta` is a function of ``iterations``, so checkpoints resume it exactly.

    **Defaults for short runs.** The dual starts at the kernel's initial (Glorot) scale,
    about 0.1, and Adam moves it by about ``learning_rate`` per step, so a few-epoch run
    needs ``learning_rate=1e-2`` (the paper's 1e-3 is for 100k-step runs) to move the duals
    by their own scale; with :math:`\beta_{\max} = 100` a dual of 0.1 has
    :math:`|\tanh(100 \cdot 0.1)| > 0.99999`: most weights end practically hard, and the
    duals still near 0 cost ``tfquant.finalize`` 1-3 points. On Fashion-MNIST (binary-weight
    CNN, 20k images, 3 epochs = 471 steps, ``BetaAnnealing``, mean of 3 seeds) the hard test
    accuracy was 83.7% (soft, BatchNorm re-estimated: 85.6%) against 83.8% for STE + Adam
    (seed spread about 0.7 points), and
    83.4% with ``beta_max=1e3``; ``learning_rate=1e-3`` gave 74.7% (10k images, 2 epochs,
    STE + Adam 81.5%). With binary activations too (``tfquant.zoo.binary_cnn``),
    ``learning_rate=3e-3, beta_max=1e3`` did better on a validation split
    (``benchmarks/md_sweep.py``: 0.819 against 0.805), though on the test set it stayed
    below larq (``benchmarks/compare_larq.py``, 8 seeds: 0.813 against 0.817 for STE + Adam
    and 0.821 for Bop); the defaults were better with float activations (0.845 against
    0.840), so they stay. In longer runs (50k images, 10 epochs, validation split) STE + Adam
    led the defaults by 0.4-0.9 points, and smaller rates (the paper's 1e-3 included) left
    more duals near 0 and lost more at ``finalize``. :class:`tfquant.callbacks.HardValidation` tracks the hard network during
    training and can keep its best epoch.

    **Hard quantization.** ``tfquant.finalize(model)`` stores ``Q(w)``: sign for the tanh map,
    thresholds at :math:`\pm 1/2` for the ternary map (``SteTernary(method="fixed")``), and
    for two-level softmax ``sign(x_2 - x_1)``, the paper's argmax. For softmax over more
    levels call :meth:`hard_quantize` first (argmax of the simplex, not rounding its mean).

    Args:
        learning_rate: :math:`\eta` (float, schedule or callable), default 1e-2.
        mirror_map: ``"tanh"`` (binary, levels (-1, 1)), ``"ternary"`` (levels (-1, 0, 1)) or
            ``"softmax"`` (over the levels of each kernel's quantizer).
        stable: keep the dual (``-S`` variants, default) or update the primal (``False``;
            tanh and softmax only).
        beta: :math:`\beta_0 > 0`.
        beta_growth: :math:`\rho \ge 1` of the per-step rule.
        beta_every: apply :math:`\rho` every this many steps (integer >= 1).
        beta_max: the cap :math:`\beta_{\max} \ge \beta_0`.
        beta_horizon: ``None`` (per-step rule) or the number of steps over which
            :math:`\beta` anneals geometrically from ``beta`` to ``beta_max``.
        forward: ``"primal"`` (gate 0, default) or ``"quantized"`` (gate untouched).
        beta_1, beta_2, epsilon: Adam's parameters (PyTorch's :math:`\epsilon` placement).
        **kwargs: the Keras optimizer arguments (``weight_decay`` applies to the Adam
            variables only, ``clipnorm``, ``use_ema``, ``jit_compile``, ``name``...).

    Raises:
        ValueError: for an invalid argument; in ``build``, for a quantized kernel whose
            quantizer does not fit ``mirror_map`` (naming both).

    Example:

    >>> import tfquant
    >>> from tfquant._keras import keras
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     tfquant.layers.QuantDense(2, kernel_quantizer="ste_sign")])
    >>> opt = tfquant.MirrorDescent(mirror_map="tanh")
    >>> model.compile(optimizer=opt, loss="mse")
    >>> opt.beta
    1.0

    References:
        Ajanthan, Gupta, Torr, Hartley, Dokania, "Mirror Descent View for Neural Network
        Quantization", AISTATS 2021.
    """

    def __init__(
        self,
        learning_rate=1e-2,
        mirror_map: str = "tanh",
        stable: bool = True,
        beta: float = 1.0,
        beta_growth: float = 1.02,
        beta_every: int = 2,
        beta_max: float = 100.0,
        beta_horizon: int | None = None,
        forward: str = "primal",
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        name: str = "MirrorDescent",
        **kwargs: Any,
    ) -> None:
        if mirror_map not in mm.MIRROR_MAPS:
            raise ValueError(
                f"Expected mirror_map in {mm.MIRROR_MAPS}. Received: mirror_map={mirror_map!r}"
            )
        if not isinstance(stable, bool):
            raise ValueError(f"Expected stable True or False. Received: stable={stable!r}")
        if mirror_map == "ternary" and not stable:
            raise ValueError(
                "Expected stable=True with mirror_map='ternary' (the ternary projection is "
                "applied to a stored dual). Received: stable=False"
            )
        if forward not in _FORWARDS:
            raise ValueError(f"Expected forward in {_FORWARDS}. Received: forward={forward!r}")
        beta = _positive("beta", beta)
        if (
            isinstance(beta_growth, bool)
            or not isinstance(beta_growth, numbers.Real)
            or not (beta_growth >= 1)
        ):
            raise ValueError(f"Expected beta_growth >= 1. Received: beta_growth={beta_growth!r}")
        if (
            isinstance(beta_every, bool)
            or not isinstance(beta_every, numbers.Integral)
            or beta_every < 1
        ):
            raise ValueError(
                f"Expected beta_every an integer >= 1. Received: beta_every={beta_every!r}"
            )
        beta_max = _positive("beta_max", beta_max)
        if beta_max < beta:
            raise ValueError(
                f"Expected beta_max >= beta. Received: beta_max={beta_max}, beta={beta}"
            )
        if beta_horizon is not None:
            if (
                isinstance(beta_horizon, bool)
                or not isinstance(beta_horizon, numbers.Integral)
                or (beta_horizon < 1)
            ):
                raise ValueError(
                    "Expected beta_horizon None or an integer >= 1. "
                    f"Received: beta_horizon={beta_horizon!r}"
                )
        if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool) or epsilon < 0:
            raise ValueError(f"Expected epsilon >= 0. Received: epsilon={epsilon!r}")
        super().__init__(name=name, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.mirror_map = mirror_map
        self.stable = stable
        self._beta_0 = beta
        self.beta_growth = float(beta_growth)
        self.beta_every = int(beta_every)
        self.beta_max = beta_max
        self.forward = forward
        self.beta_1 = _unit("beta_1", beta_1)
        self.beta_2 = _unit("beta_2", beta_2)
        self.epsilon = float(epsilon)
        with tf.init_scope():
            # 0 = no horizon (per-step rule). A variable, so BetaAnnealing can set it after
            # the train step is traced, and checkpoints keep it.
            self._beta_horizon = tf.Variable(
                0 if beta_horizon is None else beta_horizon,
                name="beta_horizon",
                dtype=tf.int64,
                trainable=False,
            )
        self._variables.append(self._beta_horizon)
        self._initial_horizon = None if beta_horizon is None else int(beta_horizon)

    # ---- beta -----------------------------------------------------------------------------

    def beta_at(self, step) -> tf.Tensor:
        """:math:`\\beta` used at (0-based) training step ``step``."""
        horizon = self._beta_horizon
        per_step = mm.paper_beta(
            step, self._beta_0, self.beta_growth, self.beta_every, self.beta_max
        )
        annealed = mm.annealed_beta(step, self._beta_0, self.beta_max, tf.maximum(horizon, 1))
        return tf.where(horizon > 0, annealed, per_step)

    @property
    def beta(self) -> float:
        """The current :math:`\\beta` (the one the next step uses); :math:`\\beta_0` before
        training."""
        return float(self.beta_at(self.iterations))

    @property
    def beta_horizon(self) -> int | None:
        """Steps over which :math:`\\beta` anneals to ``beta_max``; ``None``: per-step rule."""
        value = int(self._beta_horizon.numpy())
        return value or None

    @beta_horizon.setter
    def beta_horizon(self, steps: int | None) -> None:
        if steps is not None and (isinstance(steps, bool) or int(steps) < 1):
            raise ValueError(f"Expected beta_horizon None or >= 1. Received: {steps!r}")
        self._beta_horizon.assign(0 if steps is None else int(steps))

    def project(self, dual, levels=None):
        """The current projection :math:`P_\\beta` applied to ``dual``."""
        return mm.project(self.mirror_map, dual, self.beta_at(self.iterations), levels)

    # ---- state ----------------------------------------------------------------------------

    def _levels_for(self, variable, info) -> tuple[float, ...]:
        quantizer = info.quantizer
        levels = None if quantizer.levels is None else tuple(float(x) for x in quantizer.levels)
        expected = mm.MAP_LEVELS[self.mirror_map]
        fits = (
            levels is not None
            and len(levels) >= 2
            and not quantizer.scaled
            and (expected is None or levels == expected)
            and _rounds_to_nearest(quantizer, levels)
        )
        if not fits:
            want = "any unscaled level set" if expected is None else f"levels {expected}"
            hint = {
                "tanh": "kernel_quantizer='ste_sign'",
                "ternary": "kernel_quantizer=tfquant.quantizers.SteTernary(method='fixed')",
                "softmax": "'ste_sign' or SteTernary(method='fixed')",
            }[self.mirror_map]
            raise ValueError(
                f"Expected the kernel quantizer of variable {variable.name!r} (layer "
                f"{info.layer_name!r}) to fit mirror_map={self.mirror_map!r}: {want}, no "
                f"scale, hard quantization to the nearest level (e.g. {hint}). Received: "
                f"{type(quantizer).__name__} with levels {levels}"
                f"{', scaled' if quantizer.scaled else ''}"
            )
        return levels

    @tf.autograph.experimental.do_not_convert
    def build(self, var_list):
        """Create Adam's moments for every variable and, for quantized kernels, the dual
        (stable) or simplex (non-stable softmax) slot initialised from the kernel."""
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._momentums, self._velocities, self._states = [], [], []
        self._mirror = self._no_dependency({})  # var index -> (levels, state index or None)
        self._mirror_vars = self._no_dependency([])
        beta = float(self.beta_at(self.iterations))
        for i, var in enumerate(var_list):
            info = quantization_of(var)
            levels = None if info is None else self._levels_for(var, info)
            shape = var.shape
            if levels is not None and self.mirror_map == "softmax":
                shape = var.shape + (len(levels),)
            self._momentums.append(self.add_variable_from_reference(var, "m", shape=shape))
            self._velocities.append(self.add_variable_from_reference(var, "v", shape=shape))
            if levels is None:
                continue
            state = None
            if self.stable or self.mirror_map == "softmax":
                state = self._initial_state(var, levels, beta)
                self._states.append(
                    self.add_variable_from_reference(
                        var,
                        "dual" if self.stable else "simplex",
                        shape=shape,
                        initial_value=state,
                    )
                )
                state = len(self._states) - 1
            self._mirror[i] = (levels, state)
            self._mirror_vars.append(var)
            if self.forward == "primal":
                _set_everywhere(info.gate, 0.0)
        if var_list and not self._mirror_vars:
            warnings.warn(
                f"MirrorDescent found no tfquant quantized kernel among the {len(var_list)} "
                "variables it trains, so it behaves as Adam. Build the model with "
                "tfquant.layers and a kernel_quantizer to train quantized weights.",
                UserWarning,
                stacklevel=2,
            )

    def _use_weight_decay(self, variable) -> bool:
        # Weight decay is for the Adam variables: a quantized kernel is a projected primal.
        index = getattr(self, "_index_dict", {}).get(self._var_key(variable))
        if index in getattr(self, "_mirror", {}):
            return False
        return super()._use_weight_decay(variable)

    @tf.autograph.experimental.do_not_convert
    def _initial_state(self, var, levels, beta) -> tf.Tensor:
        w = np.asarray(tf.convert_to_tensor(var).numpy(), np.float64)
        if self.mirror_map == "tanh":
            u = mm.tanh_inverse(w, beta)
        elif self.mirror_map == "ternary":
            u = mm.ternary_inverse(w, beta)
        else:
            u = mm.softmax_inverse(w, beta, levels)
            if not self.stable:
                z = np.exp(beta * (u - u.max(-1, keepdims=True)))
                u = z / z.sum(-1, keepdims=True)
        return tf.constant(u, dtype=var.dtype)

    def _state_of(self, variable):
        """(levels, state slot or None) of a quantized kernel; None for other variables."""
        entry = self._mirror.get(self._index_dict[self._var_key(variable)])
        if entry is None:
            return None
        levels, state = entry
        return levels, None if state is None else self._states[state]

    def dual(self, variable):
        """The dual slot of a quantized kernel (stable variants), else ``None``."""
        entry = self._state_of(variable)
        return entry[1] if entry is not None and self.stable else None

    # ---- the update -----------------------------------------------------------------------

    def update_step(self, gradient, variable):
        """One step: mirror descent for quantized kernels, Adam for the rest."""
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        idx = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[idx], self._velocities[idx]
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = self.iterations + 1
        entry = self._state_of(variable)
        if entry is not None and self.mirror_map == "softmax":
            q = tf.constant(entry[0], dtype)
            gradient = gradient[..., None] * q  # dL/dx_l = q_l dL/dw
        m.assign_add((gradient - m) * (1.0 - self.beta_1))
        v.assign_add((tf.square(gradient) - v) * (1.0 - self.beta_2))
        direction = mm.adam_direction(m, v, step, self.beta_1, self.beta_2, self.epsilon)
        if entry is None:
            variable.assign_sub(lr * direction)
            return
        levels, state = entry
        if self.stable:
            state.assign_sub(lr * direction)
            beta_next = tf.cast(self.beta_at(self.iterations + 1), dtype)
            variable.assign(mm.project(self.mirror_map, state, beta_next, levels))
            return
        step_size = lr * tf.cast(self.beta_at(self.iterations), dtype)
        if self.mirror_map == "tanh":
            variable.assign(mm.tanh_primal_update(variable, direction, step_size))
        else:
            state.assign(mm.softmax_primal_update(state, direction, step_size))
            variable.assign(tf.reduce_sum(state * tf.constant(levels, dtype), axis=-1))

    def hard_quantize(self) -> None:
        """Write the paper's hard quantization into every quantized kernel: the argmax level
        of the simplex for the softmax map, ``Q(w)`` (sign, thresholds at +-1/2) otherwise.
        ``tfquant.finalize`` keeps these values (levels are fixed points of ``Q``)."""
        if not getattr(self, "_built", False):
            raise ValueError("Expected a built optimizer (train a step or call build first)")
        for var in self._mirror_vars:
            levels, state = self._state_of(var)
            if self.mirror_map == "softmax":
                hard = mm.argmax_levels(tf.convert_to_tensor(state), levels)
            else:
                hard = quantization_of(var).quantizer.exact(tf.convert_to_tensor(var))
            var.assign(tf.cast(hard, var.dtype))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "learning_rate": self._serialize_hyperparameter(self._learning_rate),
                "mirror_map": self.mirror_map,
                "stable": self.stable,
                "beta": self._beta_0,
                "beta_growth": self.beta_growth,
                "beta_every": self.beta_every,
                "beta_max": self.beta_max,
                "beta_horizon": self._initial_horizon,
                "forward": self.forward,
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
            }
        )
        return config
