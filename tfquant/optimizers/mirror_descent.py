"""``tfquant.MirrorDescent``: mirror descent for quantized networks (Ajanthan et al. 2021).

A thin Keras 3 optimizer over the pure functions of :mod:`tfquant.optimizers.mirror_maps`.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from tfquant._keras import check_keras3, keras, tf
from tfquant.layers import quantization_of
from tfquant.optimizers import mirror_maps as mm

__all__ = ["MirrorDescent"]

_FORWARDS = ("primal", "quantized")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value!r}")
    return float(value)


def _unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < 1:
        raise ValueError(f"Expected {name} in [0, 1). Received: {name}={value!r}")
    return float(value)


def _rounds_to_nearest(quantizer, levels: tuple[float, ...]) -> bool:
    """Whether ``quantizer.exact(x)`` maps values to their nearest level (ties excluded)."""
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
    variable would wait for a merge with replicas that do not build. A ``keras.Variable``
    wraps its backend variable (a ``tf.distribute`` MirroredVariable under a strategy) in
    ``value``."""
    inner = variable.value if isinstance(variable, keras.Variable) else variable
    components = getattr(inner, "values", None)
    for component in components if isinstance(components, tuple) else (inner,):
        component.assign(value)


def _variable_path(variable) -> str:
    """``keras.Variable.path`` ("sequential/quant_dense/kernel"), else the tf name."""
    return getattr(variable, "path", None) or variable.name


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

    * stable (MD-tanh-S, MD-softmax-S, ternary): the dual :math:`u` is an optimizer
      variable, :math:`u_{t+1} = u_t - \eta d_t` (the gradient with respect to the primal
      updates the dual unchanged), and the kernel holds the primal
      :math:`w_{t+1} = P_{\beta_{t+1}}(u_{t+1})`;
    * non-stable (MD-tanh, MD-softmax): the primal is updated through the mirror map,
      :math:`w_{t+1} = \tanh(\operatorname{atanh}(w_t) - \eta \beta_t d_t)`, or by
      exponentiated gradient on a simplex variable of ``d`` coordinates per weight.

    Each dual starts at the mirror-map inverse of its kernel, so mirror descent starts from
    the weights the model was built (or pre-trained) with.

    **Forward pass.** With ``forward="primal"`` (the paper's) ``build`` sets each quantized
    layer's gate to 0, so the layer forwards the primal :math:`P_\beta(u)`: soft while
    :math:`\beta` is small, nearly hard late. ``fit`` and ``tf.function`` loops build the
    optimizer while tracing their first step, before it runs; an eager loop
    (``run_eagerly=True`` or plain Python) should call
    ``optimizer.build(model.trainable_variables)`` before its first forward pass, which
    would otherwise use ``Q(w)``. ``forward="quantized"`` keeps the gate (1): the forward
    pass is :math:`\operatorname{sign}(u)` and mirror descent reduces to BinaryConnect on the
    dual.

    **Annealing** :math:`\beta`. With ``beta_horizon=T`` steps :math:`\beta` grows
    geometrically from ``beta`` to ``beta_max`` over ``T`` steps, then stays;
    :class:`tfquant.callbacks.BetaAnnealing` sets ``T`` to the length of the ``fit`` call.
    Without a horizon :math:`\beta \leftarrow \min(\beta\rho, \beta_{\max})` every
    ``beta_every`` steps (the paper's rule, ``rho = beta_growth``). :math:`\beta` is a
    function of ``iterations`` and of the horizon variable, so checkpoints resume it exactly.

    **Defaults.** ``learning_rate=1e-2`` because Adam moves a dual by about the rate per step
    and the duals start at the Glorot scale (about 0.1): a few-epoch run needs that rate to
    move them by their own scale (the paper's 1e-3 is for 100k-step runs).
    ``beta_max=100`` makes a dual of 0.1 project to :math:`|w| > 0.99999`, nearly hard at
    the end of annealing. The measurements behind these choices are in
    ``benchmarks/README.md``.

    **Hard quantization.** ``tfquant.finalize(model)`` stores ``Q(w)``: sign for the tanh
    map, thresholds at :math:`\pm 1/2` for the ternary map, and for two-level softmax the
    paper's argmax; for softmax over more levels it calls :meth:`hard_quantize` (the argmax
    of the simplex, not rounding its mean).

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
        name: the optimizer's name.
        **kwargs: the Keras optimizer arguments (``weight_decay`` applies to the Adam
            variables only, ``clipnorm``, ``use_ema``, ``gradient_accumulation_steps``...).

    Raises:
        ValueError: for an invalid argument; in ``build``, for a quantized kernel whose
            quantizer does not fit ``mirror_map`` (naming both).
        TypeError: in ``build``, for the variables of a tf-keras (Keras 2) model.

    Example:

    >>> import keras
    >>> import tfquant
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

    mirror_map: str
    stable: bool
    forward: str
    beta_growth: float
    beta_every: int
    beta_max: float
    beta_1: float
    beta_2: float
    epsilon: float
    _beta_0: float
    _initial_horizon: int | None
    _beta_horizon: Any  # a keras.Variable (int64 scalar)

    def __init__(
        self,
        learning_rate: Any = 1e-2,
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
        if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
            learning_rate = float(learning_rate)  # Keras 3 takes a float, not an int
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
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
        self._initial_horizon = None if beta_horizon is None else int(beta_horizon)
        # 0 = no horizon (per-step rule). A variable, so BetaAnnealing can set it after the
        # train step is traced, and checkpoints and .keras files keep it.
        self._beta_horizon = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_horizon or 0),
            dtype="int64",
            aggregation="only_first_replica",
            name="beta_horizon",
        )
        self._mirror: dict[int, tuple[tuple[float, ...], int | None]] = {}
        self._states: list = []

    # ---- beta -----------------------------------------------------------------------------

    def beta_at(self, step) -> tf.Tensor:
        """:math:`\\beta` used at (0-based) training step ``step``."""
        horizon = tf.convert_to_tensor(self._beta_horizon)
        per_step = mm.paper_beta(
            step, self._beta_0, self.beta_growth, self.beta_every, self.beta_max
        )
        annealed = mm.annealed_beta(step, self._beta_0, self.beta_max, tf.maximum(horizon, 1))
        return tf.where(horizon > 0, annealed, per_step)

    @property
    def beta(self) -> float:
        """The current :math:`\\beta` (the one the next step uses); :math:`\\beta_0` before
        training."""
        return float(self.beta_at(tf.convert_to_tensor(self.iterations)))

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

    def project(self, dual, levels=None) -> tf.Tensor:
        """The current projection :math:`P_\\beta` applied to ``dual`` (``levels``: the
        softmax map's level set)."""
        beta = self.beta_at(tf.convert_to_tensor(self.iterations))
        return mm.project(self.mirror_map, dual, beta, levels)

    # ---- state ----------------------------------------------------------------------------

    @property
    def _built(self) -> bool:
        # tf-keras' name for ``built``: Keras 3's exclude_from_weight_decay and
        # tfquant.finalize read it.
        return bool(self.built)

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
        if not fits or levels is None:  # (fits implies levels)
            want = "any unscaled level set" if expected is None else f"levels {expected}"
            hint = {
                "tanh": "kernel_quantizer='ste_sign'",
                "ternary": "kernel_quantizer=tfquant.quantizers.SteTernary(method='fixed')",
                "softmax": "'ste_sign' or SteTernary(method='fixed')",
            }[self.mirror_map]
            raise ValueError(
                f"Expected the kernel quantizer of variable {_variable_path(variable)!r} "
                f"(layer {info.layer_name!r}) to fit mirror_map={self.mirror_map!r}: {want}, "
                f"no scale, hard quantization to the nearest level (e.g. {hint}). Received: "
                f"{type(quantizer).__name__} with levels {levels}"
                f"{', scaled' if quantizer.scaled else ''}"
            )
        return levels

    @staticmethod
    def _check_variables(variables: list) -> None:
        for variable in variables:
            check_keras3(variable, "variable")
        if variables and not any(isinstance(v, keras.Variable) for v in variables):
            raise TypeError(
                "Expected the keras.Variable objects of a Keras 3 model "
                "(model.trainable_variables). Received: only "
                f"{type(variables[0]).__module__}.{type(variables[0]).__name__} objects, as a "
                "tf-keras (Keras 2) model has. tfquant is built on Keras 3: build the model "
                "with `import keras` and tfquant.layers."
            )

    def _slot(self, variable, name: str, shape, initializer: Any = "zeros"):
        """An optimizer variable beside ``variable`` (its dtype, colocated with it), named
        as Keras names them ("<variable path>_<name>"), of any ``shape``."""
        if tuple(shape) == tuple(variable.shape):
            return self.add_variable_from_reference(variable, name, initializer=initializer)
        inner = variable.value if isinstance(variable, keras.Variable) else variable
        prefix = _variable_path(variable).replace("/", "_").replace(":", "_")
        with tf.distribute.get_strategy().extended.colocate_vars_with(inner):
            return self.add_variable(
                shape=tuple(shape),
                initializer=initializer,
                dtype=variable.dtype,
                name=f"{prefix}_{name}",
            )

    def build(self, variables: list) -> None:
        """Create Adam's moments for every variable and, for quantized kernels, the dual
        (stable) or simplex (non-stable softmax) initialised from the kernel; with
        ``forward="primal"``, set the quantized layers' gates to 0."""
        if self.built:
            return
        variables = list(variables)
        self._check_variables(variables)
        # Eagerly, also when Keras builds inside the first traced train step: the duals are
        # computed from the kernels' values, and the gates are 0 before that step runs.
        with tf.init_scope():
            # Every quantizer is checked before anything is created, so a refused one leaves
            # the optimizer unbuilt.
            infos = [quantization_of(var) for var in variables]
            all_levels = [
                None if info is None else self._levels_for(var, info)
                for var, info in zip(variables, infos)
            ]
            super().build(variables)
            beta = float(self.beta_at(tf.convert_to_tensor(self.iterations)))
            momentums, velocities, states, mirror = [], [], [], {}
            for i, (var, info, levels) in enumerate(zip(variables, infos, all_levels)):
                shape = tuple(var.shape)
                if levels is not None and self.mirror_map == "softmax":
                    shape = shape + (len(levels),)
                momentums.append(self._slot(var, "momentum", shape))
                velocities.append(self._slot(var, "velocity", shape))
                if levels is None:
                    continue
                state = None
                if self.stable or self.mirror_map == "softmax":
                    states.append(
                        self._slot(
                            var,
                            "dual" if self.stable else "simplex",
                            shape,
                            initializer=self._initial_state(var, levels, beta),
                        )
                    )
                    state = len(states) - 1
                mirror[i] = (levels, state)
                if self.forward == "primal":
                    assert info is not None  # levels come from info
                    _set_everywhere(info.gate, 0.0)
        self._momentums, self._velocities, self._states = momentums, velocities, states
        self._mirror = mirror  # variable index -> (levels, index in _states or None)
        if variables and not mirror:
            warnings.warn(
                f"MirrorDescent found no tfquant quantized kernel among the {len(variables)} "
                "variables it trains, so it behaves as Adam. Build the model with "
                "tfquant.layers and a kernel_quantizer to train quantized weights.",
                UserWarning,
                stacklevel=2,
            )

    def _use_weight_decay(self, variable) -> bool:
        # Weight decay is for the Adam variables: a quantized kernel is a projected primal.
        index = self._trainable_variables_indices.get(self._var_key(variable))
        if index in self._mirror:
            return False
        return super()._use_weight_decay(variable)

    def _initial_state(self, var, levels: tuple[float, ...], beta: float) -> np.ndarray:
        w = np.asarray(var.numpy(), np.float64)
        if self.mirror_map == "tanh":
            u = mm.tanh_inverse(w, beta)
        elif self.mirror_map == "ternary":
            u = mm.ternary_inverse(w, beta)
        else:
            u = mm.softmax_inverse(w, beta, levels)
            if not self.stable:
                z = np.exp(beta * (u - u.max(-1, keepdims=True)))
                u = z / z.sum(-1, keepdims=True)
        return u.astype(keras.backend.standardize_dtype(var.dtype))

    def _state_of(self, variable):
        """(levels, state variable or None) of a quantized kernel; None for a variable that
        is not a quantized kernel this optimizer trains."""
        index = self._trainable_variables_indices.get(self._var_key(variable))
        entry = self._mirror.get(index)
        if entry is None:
            return None
        levels, state = entry
        return levels, None if state is None else self._states[state]

    @property
    def _mirror_vars(self) -> list:
        """The quantized kernels this optimizer trains by mirror descent (after ``build``)."""
        return [self._trainable_variables[i] for i in sorted(self._mirror)]

    def _check_built(self) -> None:
        if not self.built:
            raise ValueError(
                "Expected a built optimizer (train a step or call build first). "
                "Received: an unbuilt MirrorDescent"
            )

    def dual(self, variable):
        """The dual variable of a quantized kernel (stable variants), else ``None``.

        Raises:
            ValueError: if the optimizer is not built yet.
        """
        self._check_built()
        entry = self._state_of(variable)
        return entry[1] if entry is not None and self.stable else None

    # ---- the update -----------------------------------------------------------------------

    def update_step(self, gradient, variable, learning_rate) -> None:
        """One step: mirror descent for a quantized kernel, Adam for any other variable.
        Under ``tf.distribute`` ``variable`` is one replica's component."""
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        dtype = variable.dtype
        gradient = tf.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        lr = tf.cast(learning_rate, dtype)
        iterations = tf.convert_to_tensor(self.iterations)
        entry = self._state_of(variable)
        if entry is not None and self.mirror_map == "softmax":
            q = tf.constant(entry[0], dtype)
            gradient = gradient[..., None] * q  # dL/dx_l = q_l dL/dw
        self.assign_add(m, (gradient - m) * (1.0 - self.beta_1))
        self.assign_add(v, (tf.square(gradient) - v) * (1.0 - self.beta_2))
        direction = mm.adam_direction(
            tf.convert_to_tensor(m),
            tf.convert_to_tensor(v),
            iterations + 1,
            self.beta_1,
            self.beta_2,
            self.epsilon,
        )
        if entry is None:
            self.assign_sub(variable, lr * direction)
            return
        levels, state = entry
        if self.stable:
            self.assign_sub(state, lr * direction)
            beta_next = tf.cast(self.beta_at(iterations + 1), dtype)
            dual = tf.convert_to_tensor(state)
            self.assign(variable, mm.project(self.mirror_map, dual, beta_next, levels))
            return
        step_size = lr * tf.cast(self.beta_at(iterations), dtype)
        if self.mirror_map == "tanh":
            primal = tf.convert_to_tensor(variable)
            self.assign(variable, mm.tanh_primal_update(primal, direction, step_size))
        else:
            simplex = mm.softmax_primal_update(tf.convert_to_tensor(state), direction, step_size)
            self.assign(state, simplex)
            self.assign(variable, tf.reduce_sum(simplex * tf.constant(levels, dtype), axis=-1))

    def hard_quantize(self) -> None:
        """Write the paper's hard quantization into every quantized kernel: the argmax level
        of the simplex for the softmax map, ``Q(w)`` (sign, thresholds at +-1/2) otherwise.
        ``tfquant.finalize`` calls it, then keeps these values (levels are fixed points of
        ``Q``).

        Raises:
            ValueError: if the optimizer is not built yet.
        """
        self._check_built()
        for var in self._mirror_vars:
            levels, state = self._state_of(var)
            if self.mirror_map == "softmax":
                hard = mm.argmax_levels(tf.convert_to_tensor(state), levels)
            else:
                info = quantization_of(var)
                assert info is not None  # every mirror variable is a quantized kernel
                hard = info.quantizer.exact(tf.convert_to_tensor(var))
            var.assign(tf.cast(hard, var.dtype))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
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
