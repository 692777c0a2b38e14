r"""Cluster-Promoting Quantization (CPQ) with DropBits and learned bit-widths.

The pure functions of :mod:`tfquant.quantizers.cpq_ops` carry the math, re-exported here
(which choices are reconstructions, and why: docs/methods.md, "CPQ and DropBits"); the class
:class:`CPQQuantizer` holds the learned grid step :math:`\alpha`, the logistic noise scale
:math:`\sigma` and the hard-concrete bit gates, and is registered as ``"cpq"``.

* **Grid** (RQ eq. 1): integer codes :math:`k \in [k_{min}, k_{max}]`, :math:`2^b` of them
  (signed :math:`\{-2^{b-1}, \dots, 2^{b-1}-1\}`, unsigned :math:`\{0, \dots, 2^b-1\}`), grid
  points :math:`g_k = \alpha k`, offset :math:`\beta = 0`.
* **Categorical** (RQ eqs. 2-4 with Algorithm 1's fuzz :math:`\epsilon`), with
  :math:`c(e) = \operatorname{sigmoid}((e - x)/\sigma)`:

  \\[ \pi_k(x) = \frac{c(g_k + \alpha/2) - c(g_k - \alpha/2) + \epsilon}
      {c(g_{max} + \alpha/2) - c(g_{min} - \alpha/2) + K\epsilon} \\]

* **Forward**: the mode of :math:`\pi`, which is the nearest grid point (ties to the lower
  code), :math:`\hat x = \alpha\,\operatorname{clip}(\lceil x/\alpha - \tfrac12\rceil,
  k_{min}, k_{max})`. It is computed in this closed form, not by an argmax over
  :math:`\pi`: the two agree in exact arithmetic, but in float32 :math:`\pi` underflows to the
  uniform fuzz far outside the grid, where an argmax would pick :math:`k_{min}`.
* **Backward**: the multi-class STE, :math:`\partial y/\partial \pi = I`:

  \\[ \frac{\partial \hat x}{\partial x} = \sum_k g_k \frac{\partial \pi_k}{\partial x},\quad
      \frac{\partial \hat x}{\partial \alpha} = k^* + \sum_k g_k
      \frac{\partial \pi_k}{\partial \alpha},\quad
      \frac{\partial \hat x}{\partial \sigma} = \sum_k g_k
      \frac{\partial \pi_k}{\partial \sigma} \\]

  computed in closed form: :math:`\sum_k k\pi_k` telescopes into logistic densities at the
  cell boundaries (:func:`_ste_backward`), so the backward costs a few elementwise passes
  over the boundaries and keeps no per-code tensor.
* **Bit levels** (DropBits): codes are grouped into levels (rings) :math:`j = 1..b` so that keeping
  levels :math:`1..j` leaves a valid :math:`j`-bit grid. Scheme ``"A"`` drops range (most
  significant bits), scheme ``"B"`` drops resolution (least significant bits). A level weight
  :math:`w_j \ge 0` (nested, :math:`w_1 = 1`) multiplies the probabilities of level
  :math:`j`'s codes: :math:`\tilde\pi_k = \pi_k w_{r(k)} / \sum_i \pi_i w_{r(i)}`; the forward
  is the nearest code among the levels with :math:`w_j > 0`, and the STE runs through
  :math:`\tilde\pi`. DropBits' Bernoulli masks and the hard-concrete gates are such weights.

References:
    J. H. Lee, J. Yun, S. J. Hwang, E. Yang, "Cluster-Promoting Quantization with Bit-Drop for
    Minimizing Network Quantization Loss", ICCV 2021 (arXiv 2109.02100).
    C. Louizos, M. Reisser, T. Blankevoort, E. Gavves, M. Welling, "Relaxed Quantization for
    Discretized Neural Networks", ICLR 2019 (arXiv 1810.01875).
    C. Louizos, M. Welling, D. P. Kingma, "Learning Sparse Neural Networks through L0
    Regularization", ICLR 2018 (the hard-concrete gate).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tfquant._keras import keras, tf
from tfquant.quantizers import cpq_ops
from tfquant.quantizers.base import Grid, Quantizer
from tfquant.quantizers.cpq_ops import (  # noqa: F401  (the functions' public home is here too)
    _GATE_SNAP,
    _U_EPS,
    BIT_COSTS,
    HARD_CONCRETE,
    SCHEMES,
    _as,
    _forward_codes,
    bit_levels,
    code_range,
    cpq_probabilities,
    cpq_quantize,
    hard_concrete_gate,
    hard_concrete_nonzero,
    hard_concrete_sample,
)

__all__ = ["CPQQuantizer", *cpq_ops.__all__]


# ----------------------------------------------------------------- the quantizer
def _check_positive(name: str, value: Any) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
    if not (ok and math.isfinite(value) and value > 0):
        raise ValueError(f"Expected {name} a finite number > 0. Received: {name}={value!r}")
    return float(value)


def _check_number(name: str, value: Any, expected: str, ok) -> float:
    valid = not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
    if not (valid and math.isfinite(value) and ok(value)):
        raise ValueError(f"Expected {name} {expected}. Received: {name}={value!r}")
    return float(value)


@keras.utils.register_keras_serializable(package="tfquant")
class CPQQuantizer(Quantizer):
    r"""Cluster-Promoting Quantization with DropBits and learned bit-widths (alias ``"cpq"``).

    Forward: the nearest point of the learned grid :math:`\alpha\{k_{min}, \dots, k_{max}\}`;
    backward: the multi-class STE through RQ's categorical (:func:`cpq_quantize`), small near
    grid points and large near decision boundaries, so that weights cluster on the grid.
    Variables (made in ``__init__``, so a loaded model has them): ``log_alpha``,
    ``log_sigma`` (positive by the log) and, for ``bits > 1``, ``bit_gates``, the
    hard-concrete :math:`\log a_j` of levels :math:`2..b`. In training DropBits keeps each
    level :math:`j \ge 2` of each element with probability :math:`1 - p`, nested; with
    ``learn_bits`` a gate sample per level multiplies the level weights and
    :math:`\lambda_b \sum_j P(z_j \ne 0)\,c_j` is added with ``add_loss``;
    :meth:`learned_bits` reads the width off the test-time gates, :meth:`finalize` fixes it.
    The paper leaves most of these details open: what was reconstructed and why is in
    docs/methods.md#cpq-and-dropbits.

    Args:
        bits: 1 to 8.
        signed: codes :math:`\{-2^{b-1}, \dots, 2^{b-1}-1\}` (weights) or
            :math:`\{0, \dots, 2^b - 1\}` (post-ReLU activations).
        alpha: the initial grid step > 0, or ``None``: set from the first training batch to
            :math:`2\,\mathrm{mean}|x| / \sqrt{q_{max}}` (LSQ's initial step); 1 until then.
        sigma: the initial noise scale > 0, or ``None`` for :math:`\alpha/3`.
        dropbits: ``"A"`` (drop range, default), ``"B"`` (drop resolution) or ``None`` (no
            DropBits, no gates); the zoo applies it to kernels only.
        drop_rate: per-level drop probability in [0, 1) (default 0.1).
        learn_bits: learn the width with hard-concrete gates (needs ``dropbits``).
        bit_penalty: :math:`\lambda_b \ge 0` (default 1e-3).
        bit_cost: the cost :math:`c_j` of a level: ``"bits"`` (1) or ``"elements"`` (the
            tensor's size).
        gate_init: initial :math:`\log a` (default 3.0: gates open).
        fuzz: RQ's :math:`\epsilon \ge 0` (default 0: the masses are computed without
            cancellation, and any :math:`\epsilon > 0` adds a wrong-signed slope far
            outside the grid).
        local_grid: the backward's window half-width in codes when
            :math:`2^b > 2\,` ``local_grid`` :math:`+ 1` (default 4); ``None`` for the
            whole grid.
        seed: seed of DropBits' and the gates' noise.

    Raises:
        ValueError: for bits outside 1..8, non-positive alpha or sigma, a drop rate outside
            [0, 1), an unknown scheme or bit cost, a negative penalty or fuzz, a bad
            local_grid, or ``learn_bits`` without ``dropbits``.

    Example:

    >>> import numpy as np
    >>> q = tfquant.quantizers.get("cpq")
    >>> q(np.array([-3.0, -0.5, 0.5, 0.7, 2.0], "float32")).numpy().tolist()
    [-2.0, -1.0, 0.0, 1.0, 1.0]
    >>> q.precision, q.levels, q.learned_bits()
    (2, (-2.0, -1.0, 0.0, 1.0), 2)
    """

    def __init__(
        self,
        bits: int = 2,
        signed: bool = True,
        alpha: float | None = 1.0,
        sigma: float | None = None,
        dropbits: str | None = "A",
        drop_rate: float = 0.1,
        learn_bits: bool = False,
        bit_penalty: float = 1e-3,
        bit_cost: str = "bits",
        gate_init: float = 3.0,
        fuzz: float = 0.0,
        local_grid: int | None = 4,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
            raise ValueError(f"Expected bits an integer in [1, 8]. Received: bits={bits!r}")
        self.bits = int(bits)
        self.signed = bool(signed)
        self.auto_alpha = alpha is None
        self.alpha = 1.0 if alpha is None else _check_positive("alpha", alpha)
        self.auto_sigma = sigma is None
        self.sigma = _check_positive("sigma", self.alpha / 3.0 if sigma is None else sigma)
        if dropbits not in (*SCHEMES, None):
            raise ValueError(
                f"Expected dropbits in {SCHEMES} or None. Received: dropbits={dropbits!r}"
            )
        self.dropbits = dropbits
        self.drop_rate = _check_number("drop_rate", drop_rate, "in [0, 1)", lambda v: 0 <= v < 1)
        if learn_bits and dropbits is None:
            raise ValueError(
                "Expected dropbits 'A' or 'B' with learn_bits=True (the gates act on the "
                f"DropBits levels). Received: dropbits=None, learn_bits={learn_bits!r}"
            )
        self.learn_bits = bool(learn_bits)
        self.bit_penalty = _check_number("bit_penalty", bit_penalty, ">= 0", lambda v: v >= 0)
        if bit_cost not in BIT_COSTS:
            raise ValueError(f"Expected bit_cost in {BIT_COSTS}. Received: bit_cost={bit_cost!r}")
        self.bit_cost = bit_cost
        self.gate_init = _check_number("gate_init", gate_init, "a finite number", lambda v: True)
        self.fuzz = _check_number("fuzz", fuzz, ">= 0", lambda v: v >= 0)
        if local_grid is not None and (
            isinstance(local_grid, bool)
            or not isinstance(local_grid, (int, np.integer))
            or local_grid < 1
        ):
            raise ValueError(
                f"Expected local_grid an integer >= 1 or None. Received: local_grid={local_grid!r}"
            )
        self.local_grid = None if local_grid is None else int(local_grid)
        self.seed = seed
        kwargs.setdefault("trainable", True)
        super().__init__(**kwargs)
        self.log_alpha = self.add_weight(
            name="log_alpha",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(math.log(self.alpha)),
            trainable=True,
            # set once from the first batch in a replica's context (the same on all)
            aggregation="only_first_replica",
        )
        self.log_sigma = self.add_weight(
            name="log_sigma",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(math.log(self.sigma)),
            trainable=True,
            # set once from the first batch in a replica's context (the same on all)
            aggregation="only_first_replica",
        )
        self.bit_gates = None
        if self.bits > 1:
            self.bit_gates = self.add_weight(
                name="bit_gates",
                shape=(self.bits - 1,),
                dtype="float32",
                initializer=keras.initializers.Constant(self.gate_init),
                trainable=self.learn_bits,
            )
        # Created after bit_gates: Keras saves trainable then non-trainable variables in
        # creation order, and bit_gates turns non-trainable when finalized.
        # 1 once alpha is set from data (alpha=None), saved with the model so that a loaded
        # or resumed model keeps its learned alpha.
        self.alpha_initialized = self.add_weight(
            name="alpha_initialized",
            shape=(),
            dtype="float32",
            initializer="zeros" if self.auto_alpha else "ones",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    # -------------------------------------------------------------- read-outs
    def _open_gates(self) -> int:
        if self.bit_gates is None:
            return 0
        z = hard_concrete_gate(self.bit_gates.numpy()).numpy()
        return int(np.cumprod(z > 0).sum())

    def learned_bits(self) -> int:
        """The deterministic bit-width: 1 + the number of consecutive open test-time gates
        (``bits`` while the gates are at their open initial value)."""
        return 1 + self._open_gates()

    def finalize(self) -> int:
        """Fix the bit-width at :meth:`learned_bits`: snap the gates to exactly open or
        closed, stop learning them (no sampling, no regulariser, not trainable). ``bits``
        stays the size of the grid the variables describe; ``precision`` and ``levels``
        give the fixed width. Returns the bit-width."""
        learned = self.learned_bits()
        if self.bit_gates is not None:
            values = [_GATE_SNAP if j < learned - 1 else -_GATE_SNAP for j in range(self.bits - 1)]
            self.bit_gates.assign(np.asarray(values, np.float32))
            self.bit_gates.trainable = False
        self.learn_bits = False
        return learned

    @property
    def precision(self) -> int:  # type: ignore[override]
        return self.learned_bits()

    @property
    def grid(self) -> Grid:
        """Codes ``k_min..k_max`` of the learned width, step ``alpha`` (times
        :math:`2^{b - j}` after scheme ``"B"`` dropped bits); ``k = ceil(x / u - 1/2)``
        rounds ties down."""
        j = self.learned_bits()
        lo, hi = code_range(j, self.signed)
        stride = 2 ** (self.bits - j) if self.dropbits == "B" else 1
        return Grid(
            step=self.alpha_value * stride, k_min=lo, k_max=hi, ties="down", learned=True
        )

    @property
    def alpha_value(self) -> float:
        """The current learned grid step."""
        return float(np.exp(self.log_alpha.numpy()))

    @property
    def sigma_value(self) -> float:
        """The current learned noise scale."""
        return float(np.exp(self.log_sigma.numpy()))

    # -------------------------------------------------------------- forward
    def _level_weights(self, x, training: bool):
        """Nested level weights (…, bits) or None for the plain full grid."""
        if self.bit_gates is None:
            return None
        log_a = tf.cast(self.bit_gates, x.dtype)
        if training and self.learn_bits:
            u = keras.random.uniform(
                (self.bits - 1,), _U_EPS, 1.0 - _U_EPS, seed=self.seed_generator
            )
            z = hard_concrete_sample(log_a, u)
        else:
            z = hard_concrete_gate(log_a)
        # nested gates Z_j = z_1 ... z_j by explicit products: tf.math.cumprod's gradient
        # divides by its input, NaN where a gate is exactly 0
        z = tf.unstack(tf.cast(z, x.dtype))
        products = [z[0]]
        for gate in z[1:]:
            products.append(products[-1] * gate)
        weights = tf.stack(products)  # (bits - 1,)
        if training and self.dropbits is not None and self.drop_rate > 0:
            shape = tf.concat([tf.shape(x), [self.bits - 1]], axis=0)
            u = keras.random.uniform(shape, seed=self.seed_generator)
            keep = tf.cast(u >= self.drop_rate, x.dtype)
            weights = tf.math.cumprod(keep, axis=-1) * weights
        ones = tf.ones_like(weights[..., :1])
        return tf.concat([ones, weights], axis=-1)

    def _init_alpha(self, x):
        """alpha=None: on the first training call, alpha = 2 mean|x| / sqrt(q_max) (LSQ's
        initial step, Esser et al. 2020; q_max the largest code's magnitude), sigma = alpha/3
        unless given. A no-op once done."""
        q_max = max(abs(c) for c in code_range(self.bits, self.signed))
        mean_abs = tf.reduce_mean(tf.abs(tf.cast(x, tf.float32)))
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # under tf.distribute: the global batch's mean, so every replica sets one alpha
            mean_abs = replica.all_reduce("MEAN", mean_abs)
        alpha = tf.maximum(2.0 * mean_abs / math.sqrt(max(q_max, 1)), 1e-6)
        # Assigned on every call (a no-op once initialized) rather than under tf.cond: a
        # distributed variable cannot be assigned inside a cond in a replica's context.
        done = self.alpha_initialized > 0.5
        ops = [self.log_alpha.assign(tf.where(done, self.log_alpha, tf.math.log(alpha)))]
        if self.auto_sigma:
            ops.append(
                self.log_sigma.assign(tf.where(done, self.log_sigma, tf.math.log(alpha / 3.0)))
            )
        with tf.control_dependencies(ops):
            return self.alpha_initialized.assign(1.0)

    def _bit_regulariser(self, x):
        nonzero = hard_concrete_nonzero(self.bit_gates)
        cost = 1.0 if self.bit_cost == "bits" else tf.cast(tf.size(x), nonzero.dtype)
        return self.bit_penalty * cost * tf.reduce_sum(nonzero)

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        training = bool(training)
        if training and self.auto_alpha:
            with tf.control_dependencies([self._init_alpha(x)]):
                x = tf.identity(x)
        if training and self.learn_bits and self.bit_penalty > 0:
            self.add_loss(self._bit_regulariser(x))
        return cpq_quantize(
            x,
            tf.exp(tf.cast(self.log_alpha, x.dtype)),
            tf.exp(tf.cast(self.log_sigma, x.dtype)),
            self.bits,
            self.signed,
            level_weights=self._level_weights(x, training),
            scheme=self.dropbits or "A",
            fuzz=self.fuzz,
            local_grid=self.local_grid,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "bits": self.bits,
            "signed": self.signed,
            "alpha": None if self.auto_alpha else self.alpha,
            "sigma": None if self.auto_sigma else self.sigma,
            "dropbits": self.dropbits,
            "drop_rate": self.drop_rate,
            "learn_bits": self.learn_bits,
            "bit_penalty": self.bit_penalty,
            "bit_cost": self.bit_cost,
            "gate_init": self.gate_init,
            "fuzz": self.fuzz,
            "local_grid": self.local_grid,
            "seed": self.seed,
        }
