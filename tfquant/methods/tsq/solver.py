r"""TSQ's step 2 solver, in NumPy: ternary weights by response reconstruction, one layer.

Per output channel :math:`c` it finds

\\[ \min_{\alpha_c > 0,\ \hat w_c \in \{-1, 0, 1\}^N}\;
    \sum_n \big(y_{nc} - f(\alpha_c x_n^\top \hat w_c + b_c)\big)^2, \\]

split with an auxiliary :math:`z` as
:math:`\|y - f(z)\|^2 + \lambda \|z - \alpha X \hat w - b\|^2` and solved by alternating
:func:`z_step`, :func:`alpha_step` and :func:`coordinate_update` while :math:`\lambda`
grows, from an :func:`optimal_ternary` initialisation (:func:`solve_layer`); Wang et al.,
CVPR 2018, section 3. Which of these forms the paper states and which tfquant reconstructs
is in ``docs/methods.md#tsq``; each reconstructed choice is an argument here.

Layout: ``X`` is ``(n, N)`` (im2col rows of the input codes), targets ``Y`` are ``(n, C)``
and ternary codes ``what`` are ``(N, C)``, one column per output channel (a Keras Dense
kernel, or a conv kernel reshaped to ``(-1, C)``); 1-D ``Y`` / ``what`` mean one channel.

May import: numpy only (no Keras, no TensorFlow).

Example:

>>> import numpy as np
>>> from tfquant.methods import tsq
>>> what, alpha = tsq.optimal_ternary(np.array([0.9, -0.5, 0.1, 0.05]))
>>> what.tolist(), alpha.round(6).tolist()
([1.0, -1.0, 0.0, 0.0], [0.7])

References:
    Wang, Hu, Zhang, Zhang, Liu, Cheng, "Two-Step Quantization for Low-bit Neural
    Networks", CVPR 2018.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "LayerSolution",
    "optimal_ternary",
    "sparse_bins",
    "z_step",
    "alpha_step",
    "coordinate_update",
    "response_objective",
    "lambda_schedule",
    "solve_layer",
]

_TIES = ("largest", "smallest")


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected {name} an integer >= 1. Received: {name}={value!r}")
    return int(value)


# ----------------------------------------------------------------- 3.6 OTWA
def optimal_ternary(
    w: np.ndarray, axis: int | None = -1, tie: str = "largest"
) -> tuple[np.ndarray, np.ndarray]:
    r"""Optimal Ternary Weights Approximation (section 3.6; as the authors' Caffe code).

    Exactly solves :math:`\min_{\alpha > 0, \hat w \in \{-1,0,1\}^N} \|w - \alpha \hat w\|^2`
    for each slice of ``w`` along ``axis``: sort :math:`|w|` descending as
    :math:`a_1 \ge \dots \ge a_N`, take :math:`r^* = \arg\max_r (a_1 + \dots + a_r)^2 / r`,
    :math:`\Delta = a_{r^*}`, :math:`\hat w = \operatorname{sign}(w) 1_{|w| \ge \Delta}` and
    :math:`\alpha = w^\top \hat w / \hat w^\top \hat w`.

    Args:
        w: weights.
        axis: the axis each approximation runs along (it is reduced; the others index
            channels): ``-1`` for rows ``(C, N)``, ``0`` for a ``(N, C)`` kernel, ``None`` for
            one approximation of the whole tensor.
        tie: which :math:`r` wins when :math:`J(r)` ties exactly. ``"largest"`` (default) is
            the Caffe scan's convention (``>=`` from the largest :math:`|w|` down);
            ``"smallest"`` takes the first maximum. Both give the same error.

    Returns:
        ``(what, alpha)``: ``what`` like ``w`` with values in {-1, 0, 1}; ``alpha`` with
        ``axis`` kept as size 1 (a 1-element array for ``axis=None``), so ``alpha * what``
        broadcasts. An all-zero slice gives ``what = 0``, ``alpha = 0`` (the Caffe scan's
        ``loss_max = 1e-5`` floor is not reproduced).

    Raises:
        ValueError: for an unknown ``tie`` or an empty ``w``.
    """
    if tie not in _TIES:
        raise ValueError(f"Expected tie in {_TIES}. Received: tie={tie!r}")
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        raise ValueError(f"Expected a non-empty w. Received: w with shape {w.shape}")
    if axis is None:
        what, alpha = optimal_ternary(w.reshape(-1), axis=-1, tie=tie)
        return what.reshape(w.shape), alpha
    moved = np.moveaxis(w, axis, -1)
    a = np.abs(moved)
    ordered = -np.sort(-a, axis=-1)
    csum = np.cumsum(ordered, axis=-1)
    score = csum**2 / np.arange(1, a.shape[-1] + 1)
    if tie == "largest":
        r = a.shape[-1] - 1 - np.argmax(score[..., ::-1], axis=-1)
    else:
        r = np.argmax(score, axis=-1)
    delta = np.take_along_axis(ordered, r[..., None], axis=-1)
    keep = (a >= delta) & (delta > 0)
    what = np.where(keep, np.where(moved > 0, 1.0, -1.0), 0.0)
    count = keep.sum(axis=-1, keepdims=True)
    alpha = np.where(count > 0, (a * keep).sum(axis=-1, keepdims=True) / np.maximum(count, 1), 0.0)
    return np.moveaxis(what, -1, axis), np.moveaxis(alpha, -1, axis)


# ----------------------------------------------------------------- 3.3 z step
def sparse_bins(threshold: float, step: float, bits: int = 2) -> tuple[np.ndarray, np.ndarray]:
    r"""The intervals and values of :class:`~tfquant.quantizers.SparseQuantizer`, for
    :func:`z_step` with :math:`f = Q` (section 3.3's alternative).

    Returns:
        ``(edges, values)``: interval :math:`k` is ``(edges[k], edges[k + 1]]`` with output
        ``values[k]``; ``edges`` runs from ``-inf`` to ``inf``.
    """
    n = 2**bits - 1
    inner = [threshold] + [(k + 0.5) * step for k in range(1, n)]
    edges = np.array([-np.inf, *inner, np.inf])
    values = np.arange(n + 1) * float(step)
    return edges, values


def z_step(
    y: np.ndarray,
    v: np.ndarray,
    lam: float,
    activation: str | tuple[np.ndarray, np.ndarray] = "relu",
) -> np.ndarray:
    r"""Element-wise minimiser of :math:`(y - f(z))^2 + \lambda (z - v)^2` (section 3.3).

    For :math:`f` = ReLU (a derived closed form; see ``docs/methods.md#tsq``):
    :math:`z_+ = \max(0, (y + \lambda v) / (1 + \lambda))`, :math:`z_- = \min(0, v)`, and
    :math:`z` is the cheaper of the two (:math:`z_+` on a tie). For :math:`f` = a step
    function (``activation=sparse_bins(...)``) each interval :math:`I_k` gives
    :math:`z_k = \operatorname{clip}(v, I_k)` (one ulp inside a bin's open left end) with cost
    :math:`(y - q_k)^2 + \lambda (z_k - v)^2`; the cheapest wins (the lowest :math:`k` on a
    tie). ``"linear"`` (:math:`f` = identity) gives :math:`(y + \lambda v)/(1 + \lambda)`.

    Args:
        y: targets.
        v: current pre-activations :math:`\alpha X \hat w + b`, broadcastable with ``y``.
        lam: the penalty weight :math:`\lambda > 0`.
        activation: ``"relu"`` (default), ``"linear"`` or ``(edges, values)`` from
            :func:`sparse_bins`.

    Returns:
        ``z`` with the broadcast shape of ``y`` and ``v``.
    """
    if not lam > 0:
        raise ValueError(f"Expected lam > 0. Received: lam={lam!r}")
    y, v = np.broadcast_arrays(np.asarray(y, np.float64), np.asarray(v, np.float64))
    if isinstance(activation, str):
        if activation == "linear":
            return (y + lam * v) / (1.0 + lam)
        if activation != "relu":
            raise ValueError(
                "Expected activation 'relu', 'linear' or (edges, values) from sparse_bins. "
                f"Received: activation={activation!r}"
            )
        z_plus = np.maximum(0.0, (y + lam * v) / (1.0 + lam))
        z_minus = np.minimum(0.0, v)
        cost_plus = (y - z_plus) ** 2 + lam * (z_plus - v) ** 2
        cost_minus = y**2 + lam * (z_minus - v) ** 2
        return np.where(cost_plus <= cost_minus, z_plus, z_minus)
    edges, values = (np.asarray(a, np.float64) for a in activation)
    lo, hi = edges[:-1], edges[1:]
    # bins are open on the left: clip to just inside, so that f(z) is the bin's value
    zk = np.clip(v[..., None], np.nextafter(lo, np.inf), hi)
    cost = (y[..., None] - values) ** 2 + lam * (zk - v[..., None]) ** 2
    best = np.argmin(cost, axis=-1)
    return np.take_along_axis(zk, best[..., None], axis=-1)[..., 0]


# ----------------------------------------------------------------- 3.4 alpha step
def alpha_step(z: np.ndarray, X: np.ndarray, what: np.ndarray) -> np.ndarray:
    r"""Closed-form scale :math:`\alpha_c = z_c^\top X \hat w_c / \|X \hat w_c\|^2` (section
    3.4; the closed form of the same authors' BitSplit solver).

    Args:
        z: ``(n,)`` or ``(n, C)`` targets of the linear part (subtract any bias first).
        X: ``(n, N)`` inputs.
        what: ``(N,)`` or ``(N, C)`` ternary codes.

    Returns:
        ``alpha``, ``()`` or ``(C,)``; 0 where :math:`X \hat w_c = 0`. It is the
        unconstrained least-squares scale and may be negative (see :func:`solve_layer`).
    """
    xw = np.asarray(X, np.float64) @ np.asarray(what, np.float64)
    num = np.sum(np.asarray(z, np.float64) * xw, axis=0)
    den = np.sum(xw * xw, axis=0)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


# ----------------------------------------------------------------- 3.5 what step
def coordinate_update(
    X: np.ndarray,
    z: np.ndarray,
    what: np.ndarray,
    alpha: np.ndarray | float,
    sweeps: int = 1,
    order: Sequence[int] | None = None,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    r"""Exact coordinate descent on :math:`\|z - \alpha X \hat w\|^2` over
    :math:`\hat w \in \{-1, 0, 1\}^N` with :math:`\alpha > 0` fixed (section 3.5; BitSplit's
    update with ``bit = 0``, see ``docs/methods.md#tsq``).

    With :math:`A = X^\top X` and :math:`t = X^\top z`, for each coordinate :math:`j`: set
    :math:`\hat w_j = 0`, :math:`g = 2(\alpha A_{j\cdot} \hat w - t_j)`, then
    :math:`\hat w_j = -\operatorname{sign}(g)` if :math:`|g| \ge \alpha A_{jj}`, else 0. Each
    step is the exact minimiser over :math:`\hat w_j`, so the objective never increases.
    All channels are updated together (one column of ``what`` each).

    Args:
        X: ``(n, N)`` inputs.
        z: ``(n,)`` or ``(n, C)`` targets (subtract any bias first).
        what: ``(N,)`` or ``(N, C)`` current codes (not modified).
        alpha: scale, scalar or ``(C,)``, positive.
        sweeps: passes over the coordinates.
        order: the coordinates to visit in one pass (default ``range(N)``).
        gram: :math:`X^\top X` if already computed.

    Returns:
        The updated codes, same shape as ``what``.
    """
    sweeps = _check_positive_int("sweeps", sweeps)
    X = np.asarray(X, np.float64)
    A = X.T @ X if gram is None else np.asarray(gram, np.float64)
    z = np.asarray(z, np.float64)
    w = np.array(what, dtype=np.float64)
    single = w.ndim == 1
    w2 = w[:, None] if single else w
    t = X.T @ (z[:, None] if z.ndim == 1 else z)  # (N, C)
    alpha = np.broadcast_to(np.asarray(alpha, np.float64).reshape(-1), (w2.shape[1],))
    coords = range(w2.shape[0]) if order is None else order
    for _ in range(sweeps):
        for j in coords:
            w2[j] = 0.0
            g = 2.0 * (alpha * (A[j] @ w2) - t[j])
            w2[j] = np.where(np.abs(g) >= alpha * A[j, j], -np.sign(g), 0.0)
    return w2[:, 0] if single else w2


# ----------------------------------------------------------------- 3.2 / 3.7 solver
def lambda_schedule(iterations: int, start: float = 0.01, end: float = 1.0) -> np.ndarray:
    """Geometric :math:`\\lambda` from ``start`` to ``end`` over ``iterations`` (section 3.7;
    a reconstruction, see ``docs/methods.md#tsq``)."""
    iterations = _check_positive_int("iterations", iterations)
    if not (0 < start <= end):
        raise ValueError(
            f"Expected 0 < lam_start <= lam_end. Received: lam_start={start!r}, lam_end={end!r}"
        )
    return np.geomspace(start, end, iterations)


def _apply(activation, u: np.ndarray) -> np.ndarray:
    if isinstance(activation, str):
        return u if activation == "linear" else np.maximum(u, 0.0)
    edges, values = (np.asarray(a, np.float64) for a in activation)
    # right-closed bins: u in (edges[k], edges[k + 1]] -> values[k]
    return values[np.searchsorted(edges[1:-1], u, side="left")]


def response_objective(
    X: np.ndarray,
    Y: np.ndarray,
    what: np.ndarray,
    alpha: np.ndarray | float,
    bias: np.ndarray | float = 0.0,
    activation: str | tuple[np.ndarray, np.ndarray] = "relu",
) -> np.ndarray:
    r""":math:`\sum_n (y_{nc} - f(\alpha_c x_n^\top \hat w_c + b_c))^2` per channel (section
    3.1)."""
    u = np.asarray(alpha, np.float64) * (np.asarray(X, np.float64) @ what) + bias
    return np.sum((np.asarray(Y, np.float64) - _apply(activation, u)) ** 2, axis=0)


class LayerSolution(NamedTuple):
    """The result of :func:`solve_layer`: the layer's weights are ``alpha * what``."""

    what: np.ndarray  # (N, C) or (N,), values in {-1, 0, 1}
    alpha: np.ndarray  # (C,) or (), >= 0
    objective: np.ndarray  # response_objective at the solution, (C,) or ()


def solve_layer(
    X: np.ndarray,
    Y: np.ndarray,
    weights: np.ndarray | None = None,
    bias: np.ndarray | float = 0.0,
    activation: str | tuple[np.ndarray, np.ndarray] = "relu",
    iterations: int = 100,
    lam_start: float = 0.01,
    lam_end: float = 1.0,
    sweeps: int = 1,
    tie: str = "largest",
) -> LayerSolution:
    r"""TSQ step 2 for one layer: ternary weights reproducing the responses ``Y`` from ``X``.

    Initialise per channel by :func:`optimal_ternary` of ``weights`` (the step-1 float
    weights) or, if ``None``, of the least-squares solution of :math:`X W = Y`; then for each
    :math:`\lambda` of :func:`lambda_schedule` (``iterations``, ``lam_start``, ``lam_end``):
    :func:`z_step`, :func:`alpha_step`, and ``sweeps`` passes of :func:`coordinate_update`
    (the BitSplit iteration), and a last :func:`alpha_step`. A negative :math:`\alpha` is
    made positive by negating :math:`\hat w` (the
    product is unchanged). With ``activation="linear"`` the z step is skipped (:math:`z = y`)
    and this is BitSplit's ``ofwa_rr``: the objective never increases, so the result is
    never worse than the initialisation.

    The splitting, ``activation`` (:math:`f`), ``iterations`` (100, the BitSplit value) and
    the geometric :math:`\lambda` from 0.01 to 1 are reconstructions (``docs/methods.md#tsq``).
    Fold BatchNorm first and pass its shift as ``bias`` (section 3.7).

    Args:
        X: ``(n, N)`` sampled input codes.
        Y: ``(n, C)`` or ``(n,)`` target responses.
        weights: ``(N, C)`` or ``(N,)`` float weights for the initialisation, or ``None``.
        bias: float bias kept out of the ternary constraint, scalar or ``(C,)``.
        activation: :math:`f`: ``"relu"`` (default), ``"linear"`` or :func:`sparse_bins`.
        iterations: outer rounds.
        lam_start, lam_end: the :math:`\lambda` range.
        sweeps: coordinate passes per round.
        tie: :func:`optimal_ternary`'s tie rule for the initialisation.

    Returns:
        A :class:`LayerSolution`.
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    if X.ndim != 2 or Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0]:
        raise ValueError(
            "Expected X of shape (n, N) and Y of shape (n, C) or (n,). "
            f"Received: X.shape={X.shape}, Y.shape={Y.shape}"
        )
    single = Y.ndim == 1
    Y2 = Y[:, None] if single else Y
    schedule = lambda_schedule(iterations, lam_start, lam_end)
    if weights is None:
        weights = np.linalg.lstsq(X, Y2 - bias, rcond=None)[0]
    W = np.asarray(weights, np.float64)
    W = W[:, None] if W.ndim == 1 else W
    if W.shape != (X.shape[1], Y2.shape[1]):
        raise ValueError(
            f"Expected weights of shape {(X.shape[1], Y2.shape[1])}. Received: {W.shape}"
        )
    bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (Y2.shape[1],))
    what, alpha = optimal_ternary(W, axis=0, tie=tie)
    alpha = alpha[0]
    gram = X.T @ X
    for lam in schedule:
        v = alpha * (X @ what) + bias
        z = Y2 if activation == "linear" else z_step(Y2, v, lam, activation)
        alpha = alpha_step(z - bias, X, what)
        flip = alpha < 0
        what = np.where(flip, -what, what)
        alpha = np.abs(alpha)
        what = coordinate_update(X, z - bias, what, alpha, sweeps=sweeps, gram=gram)
    alpha = alpha_step(z - bias, X, what)  # refit the scale to the last codes
    what = np.where(alpha < 0, -what, what)
    alpha = np.abs(alpha)
    objective = response_objective(X, Y2, what, alpha, bias, activation)
    if single:
        return LayerSolution(what[:, 0], alpha[0], objective[0])
    return LayerSolution(what, alpha, objective)
