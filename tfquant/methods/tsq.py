r"""Two-Step Quantization (TSQ), step 2: ternary weights by response reconstruction.

Step 1 (code learning) trains with :class:`tfquant.quantizers.SparseQuantizer` activations
and float weights. Step 2 then finds, layer by layer and per output channel :math:`c`,

\\[ \min_{\alpha_c > 0,\ \hat w_c \in \{-1, 0, 1\}^N}\;
    \sum_n \big(y_{nc} - f(\alpha_c x_n^\top \hat w_c + b_c)\big)^2, \\]

split with an auxiliary :math:`z` as
:math:`\|y - f(z)\|^2 + \lambda \|z - \alpha X \hat w - b\|^2` and solved by alternating
:func:`z_step`, :func:`alpha_step` and :func:`coordinate_update` while :math:`\lambda`
grows, from an :func:`optimal_ternary` initialisation (:func:`solve_layer`).

Status (TSQ.md): OTWA (3.6) is VERIFIED from the authors' Caffe code, its role as the
initialiser INFERRED; the closed forms of the alpha step (3.4) and the coordinate update
(3.5) are VERIFIED as the same authors' BitSplit solver and INFERRED to be TSQ's; the
z-splitting (3.2-3.3), the non-linearity :math:`f`, the iteration count and the
:math:`\lambda` schedule are INFERRED reconstructions, so each is an argument here.

Layout: ``X`` is ``(n, N)`` (im2col rows of the input codes), targets ``Y`` are ``(n, C)``
and ternary codes ``what`` are ``(N, C)``, one column per output channel (a Keras Dense
kernel, or a conv kernel reshaped to ``(-1, C)``); 1-D ``Y`` / ``what`` mean one channel.
The solver is float64 NumPy. :func:`learn_transformations` runs it on a Keras model: for
each ternary ``QuantConv2D`` / ``QuantDense`` from the input on, it samples im2col rows of
the layer's quantized input in the partly ternarized model and the float network's
responses at the same positions, folds a following BatchNormalization, solves, and writes
:math:`\alpha_c \hat w_c` into the kernel (TSQ.md 3.7, INFERRED).

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

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tfquant._keras import keras, tf
from tfquant.layers import QuantConv2D, QuantDense, same_padding
from tfquant.quantizers import SteTernary

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
    "ternary_layers",
    "code_learning",
    "fine_tuning",
    "TSQResult",
    "fit",
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
    r"""Optimal Ternary Weights Approximation (TSQ.md 3.6, VERIFIED from the authors' Caffe).

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
    :func:`z_step` with :math:`f = Q` (TSQ.md 3.3's alternative; INFERRED).

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
    r"""Element-wise minimiser of :math:`(y - f(z))^2 + \lambda (z - v)^2` (TSQ.md 3.3).

    For :math:`f` = ReLU (derived closed form, INFERRED to be the paper's :math:`f`):
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
    r"""Closed-form scale :math:`\alpha_c = z_c^\top X \hat w_c / \|X \hat w_c\|^2` (TSQ.md
    3.4; VERIFIED as the authors' BitSplit ``ofwa_rr`` pattern).

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
    :math:`\hat w \in \{-1, 0, 1\}^N` with :math:`\alpha > 0` fixed (TSQ.md 3.5; VERIFIED as
    BitSplit's ``ofwa_rr`` with ``bit = 0``, INFERRED to be TSQ's update).

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
    """Geometric :math:`\\lambda` from ``start`` to ``end`` over ``iterations`` (TSQ.md 3.7's
    suggestion, INFERRED)."""
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
    r""":math:`\sum_n (y_{nc} - f(\alpha_c x_n^\top \hat w_c + b_c))^2` per channel (TSQ.md
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
    (TSQ.md 7), and a last :func:`alpha_step`. A negative :math:`\alpha` is made positive by negating :math:`\hat w` (the
    product is unchanged). With ``activation="linear"`` the z step is skipped (:math:`z = y`)
    and this is BitSplit's ``ofwa_rr``: the objective never increases, so the result is
    never worse than the initialisation.

    The splitting, ``activation`` (:math:`f`), ``iterations`` (100, the BitSplit value) and
    the geometric :math:`\lambda` from 0.01 to 1 are INFERRED reconstructions (TSQ.md 3.2,
    3.7, 6). Fold BatchNorm first and pass its shift as ``bias`` (TSQ.md 3.7).

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


# ----------------------------------------------------------------- 3.7 Keras-level step 2
# The Keras side of step 2 (TSQ.md 3.7 and 7): sample (input codes, step-1 response) rows
# for each ternary layer of a model, in order from the input, fold a following
# BatchNormalization, run solve_layer and write the ternary kernel back.


__all__ += ["LayerRecord", "im2col_rows", "learn_transformations"]


@dataclass
class LayerRecord:
    """What :func:`learn_transformations` did to one layer.

    Attributes:
        name: the layer's name.
        rows: the number of sampled rows (im2col rows for a convolution).
        error_before: relative reconstruction error
            :math:`\\|Y - f(X W_0 + b)\\|_F / \\|Y\\|_F` of the OTWA of the (folded) float
            kernel, :math:`W_0`, on the sampled rows.
        error_after: the same for the written ternary kernel.
        alpha: ``(C,)`` per-channel magnitudes of the written kernel, whose channel
            ``c`` takes values in :math:`\\{-\\alpha_c, 0, \\alpha_c\\}`.
        folded: whether a following BatchNormalization was folded.
    """

    name: str
    rows: int
    error_before: float
    error_after: float
    alpha: np.ndarray
    folded: bool

    def to_json(self) -> dict:
        """The record as JSON types (``from_json`` reads it back)."""
        return {
            "name": self.name,
            "rows": int(self.rows),
            "error_before": float(self.error_before),
            "error_after": float(self.error_after),
            "alpha": np.asarray(self.alpha, dtype=np.float64).tolist(),
            "folded": bool(self.folded),
        }

    @classmethod
    def from_json(cls, d: dict) -> LayerRecord:
        return cls(**{**d, "alpha": np.asarray(d["alpha"], dtype=np.float64)})


def _padded_codes(layer, codes):
    """``codes`` (NHWC) padded as ``layer``'s convolution pads them: with ``pad_values`` by
    SAME's amounts for ``padding="same"``, not at all for ``"valid"``."""
    if layer.padding != "same":
        return codes
    paddings = [[0, 0]]
    for axis in (1, 2):
        k = layer.kernel_size[axis - 1]
        s, d = layer.strides[axis - 1], layer.dilation_rate[axis - 1]
        paddings.append(list(same_padding(int(codes.shape[axis]), k, s, d)))
    paddings.append([0, 0])
    return tf.pad(codes, paddings, constant_values=layer.pad_values)


def im2col_rows(layer, codes) -> tf.Tensor:
    """The im2col rows of a :class:`~tfquant.layers.QuantConv2D` for input ``codes``.

    ``codes`` are the layer's inputs *after* its input quantizer, NHWC. The result has shape
    ``(batch, out_h, out_w, kh * kw * cin)`` in the order of ``kernel.reshape(-1, filters)``,
    so that ``rows @ kernel.reshape(-1, filters)`` is the layer's convolution (without bias)
    at every output position. Padding (``"same"`` with the layer's ``pad_values``, or
    ``"valid"``), strides and dilation are honoured.

    Raises:
        ValueError: for ``groups != 1`` or ``data_format="channels_first"``.
    """
    _check_conv(layer)
    kh, kw = layer.kernel_size
    padded = _padded_codes(layer, tf.convert_to_tensor(codes))
    return tf.image.extract_patches(
        padded,
        sizes=[1, kh, kw, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding="VALID",
    )


def _check_conv(layer) -> None:
    if getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last":
        raise ValueError(
            "Expected a QuantConv2D with groups=1 and data_format='channels_last'. Received: "
            f"layer {layer.name!r} with groups={layer.groups}, data_format={layer.data_format!r}"
        )


def _linear_response(layer, inputs) -> tf.Tensor:
    """``layer``'s output before its activation, for raw (not yet quantized) ``inputs``."""
    inputs = tf.cast(inputs, layer.compute_dtype)
    if isinstance(layer, QuantConv2D):
        out = layer.convolution_op(inputs, layer.kernel)
    else:
        codes = layer.quantize_input(inputs)
        kernel = layer.quantize_kernel(layer.kernel)
        out = tf.tensordot(codes, kernel, [[codes.shape.rank - 1], [0]])
    if layer.use_bias:
        out = out + layer.bias
    return out


def _consumers(model, tensor) -> list:
    found = []
    for other in model.layers:
        try:
            inputs = other.input
        except (AttributeError, ValueError, RuntimeError):
            continue
        if any(t is tensor for t in tf.nest.flatten(inputs)):
            found.append(other)
    return found


def _following_bn(model, layer):
    """The BatchNormalization that is the only consumer of ``layer``'s output, or ``None``.

    Only folded when the layer has no activation of its own and the BN normalises the last
    (channel) axis.
    """
    if layer.activation not in (None, keras.activations.linear):
        return None
    out = layer.output
    consumers = _consumers(model, out)
    if any(t is out for t in tf.nest.flatten(model.outputs)) or len(consumers) != 1:
        return None
    bn = consumers[0]
    if not isinstance(bn, keras.layers.BatchNormalization):
        return None
    axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
    if axis not in (-1, len(out.shape) - 1):
        return None
    return bn


def _bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """``(g, h)`` with ``bn(u) = g * u + h`` in inference mode, float64."""
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.ones_like(mean) if bn.gamma is None else np.asarray(bn.gamma.numpy(), np.float64)
    beta = np.zeros_like(mean) if bn.beta is None else np.asarray(bn.beta.numpy(), np.float64)
    g = gamma / np.sqrt(var + bn.epsilon)
    return g, beta - g * mean


def _relative_error(Y, X, what, alpha, bias, activation) -> np.ndarray:
    """Per-channel squared residuals and the relative Frobenius error."""
    obj = response_objective(X, Y, what, alpha, bias, activation)
    norm = float(np.sqrt(np.sum(Y * Y)))
    return obj, float(np.sqrt(obj.sum())) / (norm if norm > 0 else 1.0)


def _select_layers(model, layers) -> list:
    kinds = (QuantConv2D, QuantDense)
    top = list(model.layers)
    if layers is None:
        chosen = [
            m for m in top if isinstance(m, kinds) and isinstance(m.kernel_quantizer, SteTernary)
        ]
        if not chosen:
            raise ValueError(
                "Expected a model with at least one QuantConv2D or QuantDense whose "
                "kernel_quantizer is a SteTernary (or pass layers=). Received: "
                f"{model.name!r} with layers {[m.name for m in top]}"
            )
        return chosen
    by_name = {m.name: m for m in top}
    wanted = []
    for item in [layers] if isinstance(layers, (str, keras.layers.Layer)) else list(layers):
        m = by_name.get(item) if isinstance(item, str) else item
        if m is None or not any(m is t for t in top) or not isinstance(m, kinds):
            raise ValueError(
                "Expected layers= to name QuantConv2D or QuantDense layers of the model "
                f"(top level). Received: {item!r}"
            )
        wanted.append(m)
    if not wanted:
        raise ValueError(f"Expected at least one layer in layers=. Received: layers={layers!r}")
    ids = {id(m) for m in wanted}
    return [m for m in top if id(m) in ids]  # topological order


def _float_reference(model, chosen) -> keras.Model:
    """A copy of ``model`` that forwards the float kernels of the ``chosen`` layers."""
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    for m in chosen:
        copy = reference.get_layer(m.name)
        if copy.kernel_gate is not None:
            copy.kernel_gate.assign(0.0)
    return reference


def _batches_of(x, batch_size: int):
    size = len(tf.nest.flatten(x)[0])
    for start in range(0, size, batch_size):
        yield tf.nest.map_structure(lambda a, s=start: a[s : s + batch_size], x)


def _sample_layer(model, reference, layer, x, bn, samples, batch_size, rng, progbar):
    """(X, Y_pre) rows for ``layer``: X its input codes in ``model`` (im2col for a conv),
    Y_pre the pre-activation response of the same positions in ``reference`` (after the
    following BN ``bn`` if any)."""
    ref_layer = reference.get_layer(layer.name)
    feed = keras.Model(model.input, layer.input)
    ref_feed = keras.Model(reference.input, ref_layer.input)
    ref_bn = None if bn is None else reference.get_layer(bn.name)
    size = len(tf.nest.flatten(x)[0])
    n_batches = -(-size // batch_size)
    per_batch = -(-samples // n_batches)
    xs, ys = [], []
    taken = 0
    for i, xb in enumerate(_batches_of(x, batch_size)):
        codes = layer.quantize_input(tf.cast(feed(xb, training=False), layer.compute_dtype))
        target = _linear_response(ref_layer, ref_feed(xb, training=False))
        if ref_bn is not None:
            target = ref_bn(target, training=False)
        if isinstance(layer, QuantConv2D):
            codes = im2col_rows(layer, codes)
        rows = np.asarray(codes, np.float64).reshape(-1, int(codes.shape[-1]))
        target = np.asarray(target, np.float64).reshape(rows.shape[0], -1)
        k = min(per_batch, samples - taken, rows.shape[0])
        pick = rng.choice(rows.shape[0], size=k, replace=False)
        xs.append(rows[pick])
        ys.append(target[pick])
        taken += k
        if progbar is not None:
            progbar.update(i + 1)
        if taken >= samples:
            break
    return np.concatenate(xs), np.concatenate(ys)


def learn_transformations(
    model: keras.Model,
    x,
    *,
    layers=None,
    reference: keras.Model | None = None,
    samples: int = 12000,
    batch_size: int = 64,
    activation: str | dict = "relu",
    iterations: int = 100,
    lam_start: float = 0.01,
    lam_end: float = 1.0,
    sweeps: int = 1,
    allow_float_inputs: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[LayerRecord]:
    r"""TSQ step 2 on a Keras model: make each ternary layer's kernel
    :math:`\alpha_c \hat w_c` by response reconstruction (TSQ.md 3.7 and 7), in place.

    For each chosen layer, in the model's (topological) layer order:

    1. Sample up to ``samples`` rows, spread evenly over the batches of ``x``: ``X`` is the
       layer's input *after its input quantizer* (the codes) in ``model``, where the earlier
       chosen layers are already ternary (so their error is compensated); for a
       :class:`~tfquant.layers.QuantConv2D` the rows are im2col rows (:func:`im2col_rows`) at
       random output positions. ``Y`` is the pre-activation response at the same positions
       of the float step-1 network ``reference`` on the same batch.
    2. If the layer has no activation and its only consumer is a BatchNormalization (last
       axis), the BN is folded (TSQ.md 3.7, INFERRED): with ``bn(u) = g u + h``, the folded
       kernel is :math:`g_c W_c` and the folded bias :math:`b'_c = g_c b_c + h_c` stays out of
       the ternary constraint; ``Y`` is the reference's BN output. Otherwise ``Y`` is the
       layer's output before its activation and the bias is the layer's own.
    3. :func:`solve_layer` from the OTWA of the (folded) float kernel, with the target
       :math:`f(Y)` and :math:`f` = ``activation``. A channel whose solution reconstructs
       worse than its OTWA initialisation keeps the initialisation, so ``error_after <=
       error_before`` always. The kernel written is :math:`\alpha'_c \hat w_c / g_c` when
       folded (the BN is unchanged, so the layer and its BN compute the solved folded
       response; a channel with :math:`g_c = 0` gets a zero kernel), else
       :math:`\alpha_c \hat w_c`; the layer's bias is unchanged. The layer's
       ``kernel_gate`` is set to 0 (as :func:`tfquant.finalize` does), so the forward pass
       uses the stored ternary kernel as it is.

    Which layers: by default every top-level QuantConv2D / QuantDense whose
    ``kernel_quantizer`` is a :class:`~tfquant.quantizers.SteTernary`; ``layers=`` (names or
    layer objects) chooses any top-level QuantConv2D / QuantDense instead. Layers inside
    nested models are not visited.

    The reference: by default a clone of ``model`` taken before any change, with the chosen
    layers' kernel gates at 0, so it forwards the float step-1 kernels and the same input
    quantizers. Pass ``reference`` (same layer names) to use another step-1 network.

    INFERRED (TSQ.md 3.7, 6): the sample count (12,000 rows, BitSplit's), batch size 64,
    iterations 100, the :math:`\lambda` schedule, :math:`f` = ReLU, and the BN folding.

    Args:
        model: a built functional or Sequential Keras 3 model (modified in place).
        x: network inputs, an array (or a structure of arrays matching ``model.inputs``).
        layers: ``None`` (SteTernary layers) or the layers to ternarize.
        reference: the float step-1 network, or ``None`` for the clone described above.
        samples: rows per layer (at most).
        batch_size: the batch size the model is run with.
        activation: :math:`f` of :func:`solve_layer` (``"relu"`` or ``"linear"``), or a
            dict from layer name to it (missing names: ``"relu"``).
        iterations, lam_start, lam_end, sweeps: as :func:`solve_layer`.
        allow_float_inputs: allow a chosen layer without an ``input_quantizer`` (step 2 is
            meant to work on codes, TSQ.md 3.1).
        seed: seed of the row sampling.
        progress: show a :class:`keras.utils.Progbar` per layer.

    Returns:
        One :class:`LayerRecord` per processed layer, in order.

    Raises:
        ValueError: no eligible layer, a bad ``layers=`` entry, a layer whose input is not
            quantized (unless ``allow_float_inputs``), a grouped or channels-first
            convolution, an unbuilt model, empty ``x`` or a bad argument.
    """
    samples = _check_positive_int("samples", samples)
    batch_size = _check_positive_int("batch_size", batch_size)
    _check_positive_int("iterations", iterations)
    if not isinstance(model, keras.Model) or not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "Expected a built functional or Sequential Keras model with inputs. "
            f"Received: {model!r}"
        )
    chosen = _select_layers(model, layers)
    for m in chosen:
        if m.input_quantizer is None and not allow_float_inputs:
            raise ValueError(
                "Expected the layers of TSQ step 2 to have an input_quantizer (step 2 "
                "regresses on input codes), or allow_float_inputs=True. Received: layer "
                f"{m.name!r} with input_quantizer=None"
            )
        if isinstance(m, QuantConv2D):
            _check_conv(m)
    size = len(tf.nest.flatten(x)[0]) if tf.nest.flatten(x) else 0
    if size == 0:
        raise ValueError(f"Expected non-empty inputs x. Received: {size} examples")
    values = activation.values() if isinstance(activation, dict) else [activation]
    if any(v not in ("relu", "linear") for v in values):
        raise ValueError(
            f"Expected activation 'relu' or 'linear' (or a dict of them). "
            f"Received: activation={activation!r}"
        )
    if reference is None:
        reference = _float_reference(model, chosen)
    rng = np.random.default_rng(seed)
    n_batches = -(-size // batch_size)
    records = []
    for layer in chosen:
        f = activation.get(layer.name, "relu") if isinstance(activation, dict) else activation
        bn = _following_bn(model, layer)
        progbar = keras.utils.Progbar(n_batches + 1, verbose=1) if progress else None
        if progress:
            print(f"TSQ step 2: {layer.name}")
        X, Y_pre = _sample_layer(model, reference, layer, x, bn, samples, batch_size, rng, progbar)
        ref_layer = reference.get_layer(layer.name)
        W = np.asarray(ref_layer.kernel.numpy(), np.float64)
        W = W.reshape(-1, W.shape[-1])
        b = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else np.zeros(W.shape[1])
        if bn is not None:
            g, h = _bn_affine(bn)
            W, bias = W * g, g * b + h
        else:
            g, bias = np.ones(W.shape[1]), b
        Y = _apply(f, Y_pre)
        what0, alpha0 = optimal_ternary(W, axis=0)
        alpha0 = alpha0[0]
        obj0, before = _relative_error(Y, X, what0, alpha0, bias, f)
        sol = solve_layer(
            X,
            Y,
            W,
            bias,
            f,
            iterations=iterations,
            lam_start=lam_start,
            lam_end=lam_end,
            sweeps=sweeps,
        )
        keep = sol.objective <= obj0
        what = np.where(keep, sol.what, what0)
        alpha = np.where(keep, sol.alpha, alpha0)
        _, after = _relative_error(Y, X, what, alpha, bias, f)
        scale = np.divide(alpha, g, out=np.zeros_like(alpha), where=g != 0)
        kernel = (what * scale).reshape(tuple(layer.kernel.shape))
        layer.kernel.assign(tf.cast(kernel, layer.kernel.dtype))
        if layer.kernel_gate is not None:
            layer.kernel_gate.assign(0.0)
        record = LayerRecord(
            layer.name, int(X.shape[0]), before, after, np.abs(scale), bn is not None
        )
        if progbar is not None:
            progbar.update(
                n_batches + 1,
                values=[("error_before", before), ("error_after", after)],
                finalize=True,
            )
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# The recipe: step 1 (codes), step 2 (transformations), step 3 (fine-tuning)


def ternary_layers(model: keras.Model) -> list:
    """The top-level QuantConv2D / QuantDense layers whose kernel quantizer is a
    :class:`~tfquant.quantizers.SteTernary`: the layers TSQ ternarizes.

    Raises:
        ValueError: when there is none.
    """
    return _select_layers(model, None)


def _set_gates(layers, value: float) -> list:
    for m in layers:
        if m.kernel_gate is not None:
            m.kernel_gate.assign(value)
    return layers


def code_learning(model: keras.Model) -> list:
    """Step 1 set-up, in place: every ternary layer forwards its float kernel (kernel gate
    0) while its input quantizer (TSQ's :class:`~tfquant.quantizers.SparseQuantizer`) stays,
    so training learns the sparse codes with float weights (TSQ.md 2.6). Returns the layers.

    Raises:
        ValueError: no ternary layer, or one without an input quantizer (TSQ learns codes).
    """
    layers = ternary_layers(model)
    bare = [m.name for m in layers if m.input_quantizer is None]
    if bare:
        raise ValueError(
            "Expected every ternary layer to quantize its input (TSQ learns activation codes "
            f"in step 1). Received: layers {bare} with input_quantizer=None"
        )
    return _set_gates(layers, 0.0)


def fine_tuning(model: keras.Model) -> list:
    """Step 3 set-up, in place: every ternary layer forwards its kernel quantizer again
    (kernel gate 1): the optimal ternary approximation of the latent kernel, recomputed at
    each step, with a straight-through gradient, as the authors' ``TernaryConvolution``
    layer does (TSQ.md 4, INFERRED as TSQ's third stage). After step 2 the latent kernel is
    ``alpha * ternary`` per channel, which that approximation returns unchanged, so fine-
    tuning starts from step 2's solution. Returns the layers."""
    return _set_gates(ternary_layers(model), 1.0)


@dataclass
class TSQResult:
    """What :func:`fit` did.

    Attributes:
        history: per-epoch logs of step 1's epochs followed by step 3's (``keras``
            ``History.history`` of the two ``fit`` calls, concatenated).
        records: step 2's :class:`LayerRecord` per layer (empty with ``step2=False``).
        epochs: ``(code_epochs, finetune_epochs)``.
        step2_seconds: wall time of step 2 (0 when resumed after it).
    """

    history: dict
    records: list
    epochs: tuple
    step2_seconds: float


def fit(
    model: keras.Model,
    x,
    y,
    *,
    code_epochs: int,
    finetune_epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    finetune_learning_rate: float | None = None,
    optimizer=None,
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
    step2: bool = True,
    step2_inputs: int = 2048,
    validation_data=None,
    callbacks=(),
    verbose="auto",
    seed: int = 0,
    batches=None,
    initial_epoch: int = 0,
    step2_records: list | None = None,
    restore=None,
    on_step2=None,
    strategy=None,
    **step2_options,
) -> TSQResult:
    """Two-Step Quantization's recipe on a Keras model built with ternary layers on sparse
    codes (``tfquant.zoo.build(..., method="tsq")``), in place.

    1. Code learning (:func:`code_learning`): ``code_epochs`` epochs with float kernels and
       sparse quantized activations, ``learning_rate``.
    2. Transformation learning (:func:`learn_transformations`) on the first
       ``step2_inputs`` examples of ``x``, after BatchNorm's moving statistics are
       recomputed on them (step 2 folds BatchNorm with those statistics, which lag behind
       the weights after short training); ``step2_options`` go to it (``samples``,
       ``iterations``, ``lam_start``, ``lam_end``, ...). ``step2=False`` skips it, which is
       the ablation "fine-tuning from the optimal ternary approximation only".
    3. Fine-tuning (:func:`fine_tuning`): ``finetune_epochs`` epochs with ternary kernels at
       ``finetune_learning_rate`` (default ``learning_rate / 10``; INFERRED, TSQ.md 4) with
       a fresh optimizer.

    Args:
        model: the model (modified in place; compiled by this function).
        x, y: training data (arrays).
        code_epochs: epochs of step 1 (>= 1).
        finetune_epochs: epochs of step 3 (>= 0).
        optimizer: ``None`` for Adam, or a callable ``learning_rate -> optimizer`` (called
            once per stage).
        loss, metrics: as ``model.compile``'s.
        validation_data, callbacks, verbose, batch_size: as ``model.fit``'s (the callbacks
            serve both stages; epochs are numbered on from step 1 to step 3).
        seed: seed of step 2's row sampling.
        batches: ``None`` to fit on ``(x, y)`` with Keras' shuffling, or a callable
            ``(epochs, initial_epoch) -> (dataset, steps_per_epoch)`` giving the training
            batches of epochs ``initial_epoch..epochs-1`` (e.g.
            :func:`tfquant.distribute.epoch_batches`): with batches that depend only on the
            epoch, a resumed run trains on what an uninterrupted one would.
        initial_epoch: epochs already trained (``0..code_epochs + finetune_epochs``), to
            resume a run: step 1 continues at that epoch, or step 3 does when step 2 is
            done (``step2_records`` given).
        step2_records: ``None`` while step 2 has not run; else its records, when resuming
            after it (``initial_epoch >= code_epochs``).
        restore: ``None``, or a callable ``model -> None`` called once when resuming
            (``initial_epoch > 0``), after the resumed stage's optimizer is compiled and
            built, to load the checkpointed variables.
        on_step2: ``None``, or a callable ``(model, records, seconds) -> None`` called after
            step 2, with step 3's fresh optimizer compiled and built (to checkpoint the
            boundary between the steps).
        strategy: ``None``, or the ``tf.distribute`` strategy whose scope ``model`` was
            built in: each stage's optimizer is made, restored and checkpointed, and step 2
            runs, in its scope; ``fit`` runs outside it (the model keeps its strategy), so
            callbacks can evaluate other, undistributed models.

    Returns:
        A :class:`TSQResult` (``history`` holds this call's epochs only).

    Raises:
        ValueError: epochs out of range, no ternary layer, a ternary layer without an input
            quantizer, bad step-2 options, or a resume point out of range.
    """
    code_epochs = _check_positive_int("code_epochs", code_epochs)
    if (
        isinstance(finetune_epochs, bool)
        or not isinstance(finetune_epochs, int)
        or finetune_epochs < 0
    ):
        raise ValueError(
            f"Expected finetune_epochs an integer >= 0. Received: finetune_epochs={finetune_epochs!r}"
        )
    step2_inputs = _check_positive_int("step2_inputs", step2_inputs)
    total = code_epochs + finetune_epochs
    if (
        isinstance(initial_epoch, bool)
        or not isinstance(initial_epoch, int)
        or not 0 <= initial_epoch <= total
        or (initial_epoch > code_epochs and step2_records is None)
        or (initial_epoch < code_epochs and step2_records is not None)
    ):
        raise ValueError(
            f"Expected initial_epoch an integer in 0..{code_epochs} before step 2 (no "
            f"step2_records) or in {code_epochs}..{total} after it. Received: "
            f"initial_epoch={initial_epoch!r}, step2_records "
            f"{'given' if step2_records is not None else 'None'}"
        )
    make = optimizer or (lambda lr: keras.optimizers.Adam(lr))
    ft_lr = learning_rate / 10.0 if finetune_learning_rate is None else finetune_learning_rate
    history: dict = {}
    pending = restore if initial_epoch > 0 else None

    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    def compile_stage(lr):
        nonlocal pending
        with scope():
            model.compile(optimizer=make(lr), loss=loss, metrics=list(metrics))
            model.optimizer.build(model.trainable_variables)
            if pending is not None:
                pending(model)
                pending = None

    def train(first, last):
        if first >= last:
            return
        if batches is None:
            data, more = (x, y), {"batch_size": batch_size}
        else:
            dataset, steps = batches(last, first)
            data, more = (dataset,), {"steps_per_epoch": steps}
        h = model.fit(
            *data,
            epochs=last,
            initial_epoch=first,
            validation_data=validation_data,
            callbacks=list(callbacks),
            verbose=verbose,
            **more,
        )
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(e) for e in v)

    step2_seconds = 0.0
    if step2_records is None:
        code_learning(model)
        compile_stage(learning_rate)
        train(initial_epoch, code_epochs)
        records: list = []
        start = time.perf_counter()
        if step2:
            # step 2 folds BatchNorm with its moving statistics, which lag behind the weights
            # after short training (momentum 0.99): recompute them exactly on step 2's inputs
            from tfquant.models import reestimate_batchnorm

            with scope():
                reestimate_batchnorm(model, x[:step2_inputs], batch_size=batch_size)
                records = learn_transformations(
                    model,
                    x[:step2_inputs],
                    batch_size=min(batch_size, 256),
                    seed=seed,
                    progress=verbose not in (0, False),
                    **step2_options,
                )
        step2_seconds = time.perf_counter() - start
        fine_tuning(model)
        compile_stage(ft_lr)
        if on_step2 is not None:
            with scope():
                on_step2(model, records, step2_seconds)
    else:
        records = list(step2_records)
        fine_tuning(model)
        compile_stage(ft_lr)
    train(max(initial_epoch, code_epochs), total)
    return TSQResult(history, records, (code_epochs, finetune_epochs), step2_seconds)
