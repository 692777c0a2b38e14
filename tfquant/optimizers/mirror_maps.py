r"""The mirror-descent math of Ajanthan et al. (AISTATS 2021), as pure functions.

Nothing here holds state: :class:`tfquant.MirrorDescent` is a thin Keras class over these.
Notation: ``u`` is the dual (unconstrained) variable, ``beta > 0`` the annealing parameter,
``x`` / ``w`` the primal (the weight the forward pass uses), ``q`` the level set.

Projections :math:`P_\beta` (dual -> primal):

* binary tanh: :math:`w = \tanh(\beta u)`;
* ternary tanh: :math:`w = \tfrac12[\tanh(\beta(u + \tfrac12)) + \tanh(\beta(u - \tfrac12))]`;
* softmax over levels :math:`q_1 < \dots < q_d`, with ``d`` duals per weight:
  :math:`x = \operatorname{softmax}(\beta \tilde u)`, :math:`w = \sum_l q_l x_l`.

As :math:`\beta \to \infty` each tends to the hard quantization: sign, thresholds at
:math:`\pm\tfrac12`, argmax.

Non-stable (primal) updates with an ascent direction ``d`` and step :math:`\eta\beta`:

* tanh: :math:`x \leftarrow \tanh(\operatorname{atanh}(x) - \eta\beta d)`;
* softmax (exponentiated gradient): :math:`x_l \leftarrow x_l e^{-\eta\beta d_l} / Z`.

The numpy inverses (``*_inverse``) map an initial primal (a freshly initialised kernel) to
a dual whose projection is that primal, so a kernel's initial value is MD's initial primal.

References:
    Ajanthan, Gupta, Torr, Hartley, Dokania, "Mirror Descent View for Neural Network
    Quantization", AISTATS 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfquant._keras import tf

__all__ = [
    "MIRROR_MAPS",
    "MAP_LEVELS",
    "tanh_projection",
    "ternary_projection",
    "softmax_simplex",
    "softmax_projection",
    "project",
    "tanh_primal_update",
    "softmax_primal_update",
    "adam_direction",
    "paper_beta",
    "annealed_beta",
    "tanh_inverse",
    "ternary_inverse",
    "softmax_inverse",
    "argmax_levels",
]

MIRROR_MAPS = ("tanh", "ternary", "softmax")
# The level sets the tanh maps quantize to (softmax takes the quantizer's own levels).
MAP_LEVELS: dict[str, tuple[float, ...] | None] = {
    "tanh": (-1.0, 1.0),
    "ternary": (-1.0, 0.0, 1.0),
    "softmax": None,
}
# Keeps atanh finite on float32 primals that rounded to +-1.
_EDGE = 1.0 - 2.0**-23


def tanh_projection(u, beta):
    r"""Binary projection :math:`P_\beta(u) = \tanh(\beta u)`."""
    return tf.tanh(beta * u)


def ternary_projection(u, beta):
    r"""Ternary projection :math:`\tfrac12[\tanh(\beta(u + \tfrac12)) + \tanh(\beta(u - \tfrac12))]`."""
    return 0.5 * (tf.tanh(beta * (u + 0.5)) + tf.tanh(beta * (u - 0.5)))


def softmax_simplex(u, beta):
    r"""The simplex point :math:`\operatorname{softmax}(\beta \tilde u)` over the last axis.
    The max is subtracted before scaling, so a huge :math:`\beta` (the paper caps it at
    1e35) cannot overflow float32."""
    return tf.nn.softmax(beta * (u - tf.reduce_max(u, axis=-1, keepdims=True)), axis=-1)


def softmax_projection(u, beta, levels: Sequence[float]):
    r"""Softmax projection :math:`w = \sum_l q_l \operatorname{softmax}(\beta \tilde u)_l`;
    ``u`` has the weight's shape plus a last axis of ``len(levels)``."""
    q = tf.constant(levels, dtype=u.dtype)
    return tf.reduce_sum(softmax_simplex(u, beta) * q, axis=-1)


def project(mirror_map: str, u, beta, levels: Sequence[float] | None = None):
    """Dispatch to the projection of ``mirror_map`` ("tanh", "ternary" or "softmax")."""
    if mirror_map == "tanh":
        return tanh_projection(u, beta)
    if mirror_map == "ternary":
        return ternary_projection(u, beta)
    if mirror_map == "softmax":
        if levels is None:
            raise ValueError("Expected levels with mirror_map='softmax'. Received: levels=None")
        return softmax_projection(u, beta, levels)
    raise ValueError(f"Expected mirror_map in {MIRROR_MAPS}. Received: mirror_map={mirror_map!r}")


def tanh_primal_update(x, direction, step):
    r"""MD-tanh: :math:`x \leftarrow \tanh(\operatorname{atanh}(x) - s\, d)` with
    ``step`` :math:`s = \eta\beta`. Primals at :math:`\pm 1` in float32 are read as
    :math:`\pm(1 - 2^{-23})` so they can move back."""
    x = tf.clip_by_value(x, -_EDGE, _EDGE)
    return tf.tanh(tf.atanh(x) - step * direction)


def softmax_primal_update(x, direction, step):
    r"""MD-softmax (exponentiated gradient): :math:`x_l \leftarrow x_l e^{-s d_l} / Z` over the
    last axis, with ``step`` :math:`s = \eta\beta`, computed in log space with the max
    subtracted (``tf.nn.softmax``)."""
    tiny = np.finfo(x.dtype.as_numpy_dtype).tiny
    return tf.nn.softmax(tf.math.log(tf.maximum(x, tiny)) - step * direction, axis=-1)


def _log(b: float) -> float:
    return float(np.log(b)) if b > 0 else -np.inf


def adam_direction(m, v, step, beta_1: float, beta_2: float, epsilon: float):
    r"""Adam's bias-corrected direction :math:`\hat m / (\sqrt{\hat v} + \epsilon)` with
    :math:`\hat m = m / (1 - \beta_1^t)`, :math:`\hat v = v / (1 - \beta_2^t)`, ``step`` = t
    (1 for the first update), as in the paper's code and PyTorch."""
    step = tf.cast(step, m.dtype)
    # 1 - b**t as -expm1(t log b) with log b in double precision: float32(0.999) is off
    # by 1.3e-5 relative in 1 - b, which would bias every step.
    m_hat = m / -tf.math.expm1(step * _log(beta_1))
    v_hat = v / -tf.math.expm1(step * _log(beta_2))
    return m_hat / (tf.sqrt(v_hat) + epsilon)


def paper_beta(step, beta_0: float, growth: float, every: int, beta_max: float):
    r"""The paper's schedule :math:`\beta_t = \min(\beta_0 \rho^{\lfloor t / b \rfloor},
    \beta_{\max})` (``growth`` :math:`\rho`, ``every`` :math:`b` steps)."""
    step = tf.cast(step, tf.float32)
    k = tf.floor(step / float(every))
    # In log space so rho**k cannot overflow before the cap applies.
    log_beta = np.log(beta_0) + k * float(np.log(growth))
    return tf.exp(tf.minimum(log_beta, float(np.log(beta_max))))


def annealed_beta(step, beta_0: float, beta_max: float, horizon):
    r"""Geometric annealing over a horizon: :math:`\beta_t = \beta_0
    (\beta_{\max}/\beta_0)^{\min(t / T, 1)}`: :math:`\beta_0` at the first step,
    :math:`\beta_{\max}` at step :math:`T` and after."""
    frac = tf.minimum(tf.cast(step, tf.float32) / tf.cast(horizon, tf.float32), 1.0)
    return tf.exp(float(np.log(beta_0)) + frac * float(np.log(beta_max / beta_0)))


# ---- numpy inverses, used once to initialise the duals from the kernels -------------------


def tanh_inverse(w: np.ndarray, beta: float) -> np.ndarray:
    r""":math:`u = \operatorname{atanh}(w) / \beta` (``w`` clipped into (-1, 1))."""
    w = np.clip(np.asarray(w, np.float64), -1 + 1e-7, 1 - 1e-7)
    return np.arctanh(w) / beta


def _bisect(fn, target: np.ndarray, lo: float, hi: float, iters: int = 80) -> np.ndarray:
    """Solve ``fn(z) = target`` elementwise for increasing ``fn`` on ``[lo, hi]``."""
    a = np.full(target.shape, lo)
    b = np.full(target.shape, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        below = fn(mid) < target
        a = np.where(below, mid, a)
        b = np.where(below, b, mid)
    return 0.5 * (a + b)


def ternary_inverse(w: np.ndarray, beta: float) -> np.ndarray:
    r"""The ``u`` whose ternary projection is ``w`` (bisection; the map is increasing)."""
    w = np.clip(np.asarray(w, np.float64), -1 + 1e-7, 1 - 1e-7)

    def fn(u):
        return 0.5 * (np.tanh(beta * (u + 0.5)) + np.tanh(beta * (u - 0.5)))

    reach = 0.5 + 10.0 / beta  # |P(u)| > 1 - 1e-8 beyond this
    return _bisect(fn, w, -reach, reach)


def softmax_inverse(w: np.ndarray, beta: float, levels: Sequence[float]) -> np.ndarray:
    r"""Duals ``u`` (shape ``w.shape + (d,)``) whose softmax projection is ``w``: the
    maximum-entropy point of the simplex with mean ``w``, :math:`x \propto e^{\lambda q}`,
    i.e. :math:`\tilde u_l = \lambda q_l / \beta` (for two levels, the only one)."""
    q = np.asarray(levels, np.float64)
    span = q.max() - q.min()
    w = np.clip(np.asarray(w, np.float64), q.min() + 1e-7 * span, q.max() - 1e-7 * span)

    def mean(lam):
        z = lam[..., None] * q
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return (z * q).sum(-1) / z.sum(-1)

    lam = _bisect(mean, w, -40.0 / span, 40.0 / span)
    return lam[..., None] * q / beta


def argmax_levels(state, levels: Sequence[float]):
    """The level of the largest simplex coordinate (or dual) along the last axis: the
    paper's hard quantization of the softmax map."""
    q = tf.constant(levels, dtype=state.dtype)
    return tf.gather(q, tf.argmax(state, axis=-1))
