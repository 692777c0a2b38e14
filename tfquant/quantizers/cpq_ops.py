r"""CPQ's math as pure functions: the grid, the truncated categorical, the multi-class
straight-through estimator in closed form, DropBits' bit levels and the hard-concrete gates.

:mod:`tfquant.quantizers.cpq` holds the quantizer class over these and says what each is;
which choices reconstruct the paper, and why: docs/methods.md, "CPQ and DropBits".
"""
from __future__ import annotations

import math

import numpy as np

from tfquant._keras import tf

__all__ = [
    "cpq_quantize",
    "cpq_probabilities",
    "code_range",
    "bit_levels",
    "hard_concrete_sample",
    "hard_concrete_gate",
    "hard_concrete_nonzero",
    "HARD_CONCRETE",
]

SCHEMES = ("A", "B")
BIT_COSTS = ("bits", "elements")
#: The hard-concrete constants (beta, gamma, zeta) of Louizos, Welling, Kingma 2018.
HARD_CONCRETE = (2.0 / 3.0, -0.1, 1.1)
_GATE_SNAP = 10.0  # |log a| that finalize() writes: the test-time gate is then exactly 0 or 1
_U_EPS = 1e-6  # the uniform noise of the gates is drawn from (eps, 1 - eps)


# ----------------------------------------------------------------- grid and levels
def code_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """The integer codes ``(k_min, k_max)`` of a ``bits``-bit grid.

    >>> code_range(2), code_range(2, signed=False)
    ((-2, 1), (0, 3))
    """
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def bit_levels(codes, bits: int, signed: bool = True, scheme: str = "A") -> tf.Tensor:
    r"""The level (ring) :math:`r(k) \in 1..b` of each integer code, as int32.

    * ``"A"`` (range drop): level :math:`j` is the :math:`j`-bit grid minus the
      :math:`(j-1)`-bit one; signed 3 bits: ``{-1, 0}: 1, {-2, 1}: 2, {-4, -3, 2, 3}: 3``;
      unsigned: ``{0, 1}: 1, {2, 3}: 2, {4..7}: 3``.
    * ``"B"`` (resolution drop): :math:`r(k) = b - \nu(k)` with :math:`\nu` the number of
      trailing zero bits of :math:`k` (at most :math:`b - 1`); signed 3 bits:
      ``{-4, 0}: 1, {-2, 2}: 2, odd: 3``. Dropping level :math:`b` leaves step :math:`2\alpha`.

    >>> bit_levels([-4, -3, -2, -1, 0, 1, 2, 3], 3).numpy().tolist()
    [3, 3, 2, 1, 1, 2, 3, 3]
    >>> bit_levels([-4, -3, -2, -1, 0, 1, 2, 3], 3, scheme="B").numpy().tolist()
    [1, 3, 2, 3, 1, 3, 2, 3]
    """
    k = tf.cast(codes, tf.int32)
    level = tf.ones_like(k)
    if scheme == "A":
        m = tf.where(k < 0, -k - 1, k) if signed else k
        first = 0 if signed else 1  # signed: m >= 1, 2, 4, ...; unsigned: k >= 2, 4, ...
        for i in range(first, first + bits - 1):
            level += tf.cast(m >= 2**i, tf.int32)
        return level
    level = tf.fill(tf.shape(k), bits)
    for i in range(1, bits):
        level -= tf.cast(tf.math.floormod(k, 2**i) == 0, tf.int32)
    return level


def _nested_active(level_weights: tf.Tensor) -> tf.Tensor:
    """Number of active levels (1 + consecutive levels 2.. with weight > 0), float."""
    on = tf.cast(level_weights[..., 1:] > 0, level_weights.dtype)
    return 1.0 + tf.reduce_sum(tf.math.cumprod(on, axis=-1), axis=-1)


def _forward_codes(x, alpha, bits, signed, scheme, level_weights):
    """The chosen integer code k* (as x.dtype): nearest active code, ties to the lower one."""
    t = x / alpha
    if level_weights is None:
        lo, hi = code_range(bits, signed)
        # + 0.0 turns ceil's -0.0 into +0.0
        return tf.clip_by_value(tf.math.ceil(t - 0.5), float(lo), float(hi)) + 0.0
    j = _nested_active(tf.cast(level_weights, x.dtype))  # broadcasts against x
    half = tf.pow(tf.constant(2.0, x.dtype), j - 1.0)
    lo, hi = (-half, half - 1.0) if signed else (tf.zeros_like(half), 2.0 * half - 1.0)
    step = tf.pow(tf.constant(2.0, x.dtype), bits - j) if scheme == "B" else 1.0
    return step * tf.clip_by_value(tf.math.ceil(t / step - 0.5), lo, hi) + 0.0


# ----------------------------------------------------------------- the categorical
def _as(value, dtype) -> tf.Tensor:
    # convert_to_tensor first: tf.cast(0.1, float64) would round 0.1 through float32
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def _logistic_mass(z_lo, z_hi):
    """sigmoid(z_hi) - sigmoid(z_lo) for z_lo <= z_hi without cancellation: where the
    interval lies right of 0 (the input below the bin) as sigmoid(-z_lo) - sigmoid(-z_hi), so
    both terms are small. In float32, 1 - 1 would leave rounding noise of the size of the
    fuzz, and its gradient blows up in the normalisation."""
    # Clipped at +-40 (sigmoid(-40) = 4e-18): compiled graphs may evaluate the sigmoid's
    # gradient as e^-z / (1 + e^-z)^2, which is inf / inf = NaN in float32 beyond ~44.
    z_lo = tf.clip_by_value(z_lo, -40.0, 40.0)
    z_hi = tf.clip_by_value(z_hi, -40.0, 40.0)
    right = z_lo > 0
    return tf.where(
        right,
        tf.sigmoid(-z_lo) - tf.sigmoid(-z_hi),
        tf.sigmoid(z_hi) - tf.sigmoid(z_lo),
    )


def cpq_probabilities(
    x,
    alpha,
    sigma,
    bits: int = 2,
    signed: bool = True,
    fuzz: float = 0.0,
    codes=None,
    valid=None,
) -> tf.Tensor:
    r"""RQ's truncated categorical :math:`\pi_k(x)` over the grid, on a new last axis.

    Args:
        x: inputs.
        alpha, sigma: grid step and logistic noise scale (positive scalars).
        bits, signed: the grid.
        fuzz: :math:`\epsilon` added to every bin mass (RQ Algorithm 1).
        codes: the integer codes to evaluate, broadcastable against ``x[..., None]``; ``None``
            for the whole grid (last axis of length :math:`2^b`).
        valid: optional boolean mask of ``codes`` inside the grid (RQ's local grid); invalid
            codes get probability 0. The normaliser is always the full truncated range.

    Example:

    >>> p = cpq_probabilities([0.3], 1.0, 0.25, bits=2, fuzz=0.0)
    >>> [round(float(v), 6) for v in p[0]]
    [0.000738, 0.038736, 0.656174, 0.304351]
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype if x.dtype.is_floating else tf.float32
    x = tf.cast(x, dtype)
    alpha, sigma = _as(alpha, dtype), _as(sigma, dtype)
    lo, hi = code_range(bits, signed)
    if codes is None:
        codes = tf.constant(np.arange(lo, hi + 1), dtype)
    codes = tf.cast(codes, dtype)
    xe = x[..., None]

    def mass_between(lower, upper):
        return _logistic_mass((alpha * lower - xe) / sigma, (alpha * upper - xe) / sigma)

    mass = mass_between(codes - 0.5, codes + 0.5) + fuzz
    if valid is not None:
        mass = tf.where(valid, mass, tf.zeros_like(mass))
    total = mass_between(lo - 0.5, hi + 0.5)
    # the floor only matters where every mass underflows (|x| > ~85 sigma beyond the grid)
    floor = np.finfo(dtype.as_numpy_dtype).tiny
    return mass / tf.maximum(total + (2**bits) * fuzz, floor)


def _level_of(k: int, bits: int, signed: bool, scheme: str) -> int:
    """:func:`bit_levels` of one integer code, in Python (static codes at trace time)."""
    if scheme == "A":
        m = (-k - 1 if k < 0 else k) if signed else k
        first = 0 if signed else 1
        return 1 + sum(m >= 2**i for i in range(first, first + bits - 1))
    return bits - sum(k % 2**i == 0 for i in range(1, bits))


def _boundary(x, alpha, sigma, edge):
    r"""At the cell boundary :math:`\alpha e` (``e`` in code units, ``k - 1/2``): the logistic
    argument :math:`u = (\alpha e - x)/\sigma` clipped to +-40, :math:`\operatorname{sigmoid}
    (\pm u)` and the density :math:`\rho = \operatorname{sigmoid}(u)\operatorname{sigmoid}(-u)`,
    0 where the clip is active (the clip's gradient: beyond it every mass is constant)."""
    u = (alpha * edge - x) / sigma
    inside = tf.abs(u) <= 40.0
    u = tf.clip_by_value(u, -40.0, 40.0)
    sp, sn = tf.sigmoid(u), tf.sigmoid(-u)
    return u, sp, sn, tf.where(inside, sp * sn, tf.zeros_like(u))


def _mass(lower, upper):
    """The logistic mass between two boundaries without cancellation (:func:`_logistic_mass`
    from their sigmoids): right of the input as a difference of small ``sigmoid(-u)``."""
    return tf.where(lower[0] > 0, lower[2] - upper[2], upper[1] - lower[1])


def _ste_backward(g, x, alpha, sigma, k_star, bits, signed, scheme, fuzz, local_grid, lw):
    r"""The multi-class STE's gradients for ``(x, alpha, sigma, level_weights)``, given
    ``g = dy * alpha``, without a codes axis.

    The soft code :math:`S = \sum_k k c_k p_k / D` (:math:`p_k` a cell's logistic mass plus
    :math:`\epsilon`, :math:`c_k` the code's weight, :math:`D` the normaliser) telescopes: a
    cell's mass is a difference of :math:`C_m = \operatorname{sigmoid}(u_m)` at its two
    boundaries, so :math:`\partial S = \sum_m \rho_m \partial u_m\,[A_m - S B_m] / D` with
    :math:`A_m = (m-1) c_{m-1} - m c_m` and :math:`B_m = c_{m-1} - c_m` (the normaliser's
    weights). One pass over the boundaries accumulates per-element sums; nothing of size
    elements x codes is formed. The direct term :math:`k^*` of :math:`\alpha` is the caller's.
    """
    dtype = x.dtype
    lo, hi = code_range(bits, signed)
    windowed = local_grid is not None and 2**bits > 2 * local_grid + 1
    if windowed:  # RQ's local grid: the codes k* - L .. k* + L inside the grid
        offsets = list(range(-local_grid, local_grid + 1))
        codes = [k_star + o for o in offsets]
        valid = [tf.cast((c >= lo) & (c <= hi), dtype) for c in codes]
        edges = [k_star + (o - 0.5) for o in offsets] + [k_star + (offsets[-1] + 0.5)]
    else:
        codes = [float(k) for k in range(lo, hi + 1)]
        valid = [None] * len(codes)
        edges = [k - 0.5 for k in codes] + [hi + 0.5]
    n = len(codes)

    # the weight c_k of each code: its level's weight (or 1) where valid; None means 1
    weight, levels = list(valid), None
    if lw is not None:
        if windowed:
            levels = [bit_levels(c, bits, signed, scheme) for c in codes]
            per_level = [lw[..., j] for j in range(bits)]
            weight = []
            for level, v in zip(levels, valid):
                w = tf.zeros_like(v)
                for j in range(bits):
                    w = tf.where(level == j + 1, per_level[j], w)
                weight.append(w * v)
        else:
            levels = [_level_of(int(k), bits, signed, scheme) for k in codes]
            weight = [lw[..., level - 1] for level in levels]

    def times(c, t):  # c * t with None as 1
        return t if c is None else c * t

    sums = {key: 0.0 for key in ("ax", "aa", "as", "bx", "ba", "bs", "kp", "p")}
    level_p = [0.0] * bits
    level_kp = [0.0] * bits

    def accumulate(prefix, coef, b, edge):
        u, rho = b[0], b[3]
        term = times(coef, rho)
        sums[prefix + "x"] += term
        sums[prefix + "a"] += term * edge
        sums[prefix + "s"] += term * u

    first = previous = None
    for i in range(n + 1):
        b = _boundary(x, alpha, sigma, edges[i])
        first = b if first is None else first
        # A_m = (m - 1) c_{m-1} - m c_m over the two codes beside this boundary
        parts = []
        if i > 0:
            parts.append(times(weight[i - 1], codes[i - 1]))
        if i < n:
            parts.append(-times(weight[i], codes[i]))
        coef = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        accumulate("a", coef, b, edges[i])
        if lw is not None:  # B_m = c_{m-1} - c_m: the normaliser sum_k c_k p_k
            parts = []
            if i > 0:
                parts.append(1.0 if weight[i - 1] is None else weight[i - 1])
            if i < n:
                parts.append(-1.0 if weight[i] is None else -weight[i])
            accumulate("b", parts[0] if len(parts) == 1 else parts[0] + parts[1], b, edges[i])
        if previous is not None:  # the mass of code i - 1
            k, v, c = codes[i - 1], valid[i - 1], weight[i - 1]
            p = times(v, _mass(previous, b) + fuzz)
            sums["p"] += times(c, p) if lw is not None else p
            sums["kp"] += times(c, p) * k if lw is not None else p * k
            if levels is not None:
                if windowed:
                    for j in range(bits):
                        on = tf.cast(levels[i - 1] == j + 1, dtype)
                        level_p[j] += on * p
                        level_kp[j] += on * p * k
                else:
                    level_p[levels[i - 1] - 1] += p
                    level_kp[levels[i - 1] - 1] += p * k
        previous = b

    if lw is None:  # the normaliser is the whole truncated grid: B = -1 at its bottom, +1 at top
        if windowed:
            bottom = _boundary(x, alpha, sigma, lo - 0.5)
            top = _boundary(x, alpha, sigma, hi + 0.5)
        else:
            bottom, top = first, previous
        accumulate("b", -1.0, bottom, lo - 0.5)
        accumulate("b", 1.0, top, hi + 0.5)
        total = _mass(bottom, top) + (2**bits) * fuzz
    else:
        total = sums["p"]
    # total ~ 0: every mass the soft code weighs is beyond the +-40 clip (the input is over
    # 40 sigma from the active grid): the soft code is constant, and so zero gradients (with
    # level weights the ratio of two underflowed masses would otherwise blow up)
    # (a normal number: 1 / a denormal overflows, and XLA flushes denormals to 0)
    held = total > np.finfo(dtype.as_numpy_dtype).tiny
    inv = tf.where(held, 1.0 / tf.where(held, total, tf.ones_like(total)), 0.0)
    soft = sums["kp"] * inv
    scale = g * inv / sigma
    gx = -scale * (sums["ax"] - soft * sums["bx"])
    ga = tf.reduce_sum(scale * (sums["aa"] - soft * sums["ba"]))
    gs = -tf.reduce_sum(scale * (sums["as"] - soft * sums["bs"]))
    gw = None
    if lw is not None:
        terms = [g * inv * (level_kp[j] - soft * level_p[j]) for j in range(bits)]
        if lw.shape.is_fully_defined() and lw.shape.num_elements() == bits:
            gw = tf.reshape(tf.stack([tf.reduce_sum(t) for t in terms]), tf.shape(lw))
        else:
            gw = _unbroadcast(tf.stack(terms, axis=-1), lw)
    return gx, ga, gs, gw


def _unbroadcast(grad, like):
    """Sum ``grad`` over the axes that broadcasting ``like`` to it added or stretched."""
    if like.shape.is_fully_defined() and grad.shape == like.shape:
        return grad
    axes, _ = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(like), s1=tf.shape(grad))
    return tf.reshape(tf.reduce_sum(grad, axes), tf.shape(like))


def cpq_quantize(
    x,
    alpha,
    sigma,
    bits: int = 2,
    signed: bool = True,
    *,
    level_weights=None,
    scheme: str = "A",
    fuzz: float = 0.0,
    local_grid: int | None = 4,
) -> tf.Tensor:
    r"""CPQ: the mode of RQ's categorical forward, the multi-class STE backward.

    \\[ \hat x = \alpha k^*,\quad k^* = \operatorname{clip}(\lceil x/\alpha - \tfrac12\rceil,
        k_{min}, k_{max}),\qquad
        \frac{\partial \hat x}{\partial \theta} = k^* 1_{\theta = \alpha}
        + \sum_k \alpha k \frac{\partial \tilde\pi_k}{\partial \theta} \\]

    i.e. the gradients of ``stop_gradient(y_hard - pi) + pi`` contracted with
    :math:`g_k = \alpha k`, for :math:`\theta \in \{x, \alpha, \sigma, w\}`, in the
    closed form of :func:`_ste_backward` under ``tf.custom_gradient``.

    Args:
        x: the tensor to quantize.
        alpha: grid step, a positive scalar (tensor).
        sigma: logistic noise scale, a positive scalar (tensor).
        bits: 1 to 8.
        signed: signed (weights) or unsigned (post-ReLU activations) grid.
        level_weights: ``None`` or nested non-negative weights of the bit levels 1..``bits``
            (``[..., 0]`` = 1), broadcastable against ``x.shape + (bits,)``: DropBits masks
            times gates. Level ``j`` and all above it are dropped from the forward where
            ``w_j = 0``; the backward uses :math:`\tilde\pi` and gives ``level_weights`` a
            gradient.
        scheme: ``"A"`` or ``"B"``, how codes are grouped into levels (:func:`bit_levels`).
        fuzz: RQ's :math:`\epsilon`.
        local_grid: the backward sums over the ``2 local_grid + 1`` codes around
            :math:`k^*` when the grid has more codes than that (RQ's local grid, section
            2.2, with a fixed window in codes instead of :math:`\delta\sigma`: a static
            shape); ``None`` for the whole grid. Time is O(size(x) x codes summed), memory
            a few tensors of the size of ``x``.

    Example (the STE slope at a decision boundary):

    >>> x = tf.constant([0.3, 0.5, 0.7])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = cpq_quantize(x, 1.0, 0.1, bits=2)
    >>> y.numpy().tolist(), round(float(tape.gradient(y, x)[1]), 3)
    ([0.0, 0.0, 1.0], 2.5)
    """
    x = tf.convert_to_tensor(x)
    alpha, sigma = _as(alpha, x.dtype), _as(sigma, x.dtype)
    extra = [] if level_weights is None else [_as(level_weights, x.dtype)]

    @tf.custom_gradient
    def _call(x, alpha, sigma, *extra):
        lw = extra[0] if extra else None

        def grad(dy):
            # k* again rather than kept from the forward: one tensor less held for backward
            k_star = _forward_codes(x, alpha, bits, signed, scheme, lw)
            gx, ga, gs, gw = _ste_backward(
                dy * alpha, x, alpha, sigma, k_star, bits, signed, scheme, fuzz, local_grid, lw
            )
            # the direct term of g_k = alpha k: d(alpha k*)/d alpha = k*
            ga = ga + tf.reduce_sum(dy * k_star)
            grads = [_unbroadcast(gx, x), ga, gs]
            return grads if lw is None else [*grads, gw]

        return alpha * _forward_codes(x, alpha, bits, signed, scheme, lw), grad

    return _call(x, alpha, sigma, *extra)


# ----------------------------------------------------------------- hard-concrete gates
def hard_concrete_sample(log_a, u) -> tf.Tensor:
    r"""A hard-concrete gate sample for uniform noise ``u`` in (0, 1):
    :math:`s = \operatorname{sigmoid}((\log u - \log(1-u) + \log a)/\beta)`,
    :math:`z = \operatorname{clip}(s(\zeta - \gamma) + \gamma, 0, 1)`.

    >>> hard_concrete_sample(0.0, 0.5).numpy().round(6)
    0.5
    """
    beta, gamma, zeta = HARD_CONCRETE
    log_a = tf.convert_to_tensor(log_a, tf.float32)
    u = tf.cast(u, log_a.dtype)
    s = tf.sigmoid((tf.math.log(u) - tf.math.log1p(-u) + log_a) / beta)
    return tf.clip_by_value(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_gate(log_a) -> tf.Tensor:
    r"""The deterministic (test-time) gate :math:`\operatorname{clip}(\operatorname{sigmoid}
    (\log a)(\zeta - \gamma) + \gamma, 0, 1)`.

    >>> hard_concrete_gate([-10.0, 0.0, 10.0]).numpy().round(6).tolist()
    [0.0, 0.5, 1.0]
    """
    _, gamma, zeta = HARD_CONCRETE
    log_a = tf.convert_to_tensor(log_a, tf.float32)
    return tf.clip_by_value(tf.sigmoid(log_a) * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_nonzero(log_a) -> tf.Tensor:
    r""":math:`P(z \ne 0) = \operatorname{sigmoid}(\log a - \beta \log(-\gamma/\zeta))`
    differentiable in :math:`\log a`."""
    beta, gamma, zeta = HARD_CONCRETE
    log_a = tf.convert_to_tensor(log_a, tf.float32)
    return tf.sigmoid(log_a - beta * math.log(-gamma / zeta))
