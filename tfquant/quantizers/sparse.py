r"""Two-Step Quantization's sparse activation quantizer and the step rule it uses.

:func:`optimal_step` is TSQ's step for a Gaussian input (closed-form integrals and a
golden-section search); :class:`SparseQuantizer` replaces ReLU with the levels
:math:`\{0, \delta, \dots\}` above a threshold :math:`\epsilon`. The reasoning behind
the reconstructed choices is in ``docs/methods.md`` (section "TSQ").

May import: ``tfquant.quantizers.base``, ``tfquant.quantizers._ste`` and ``tfquant._keras``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from tfquant._keras import keras
from tfquant.errors import ConfigError
from tfquant.quantizers._ste import sparse_quantize
from tfquant.quantizers.base import Grid, Quantizer

__all__ = ["SparseQuantizer", "optimal_step", "sparse_fixed_point"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MAX_STEP_THRESHOLD = 8.0  # above, the N(0, 1) tail mass underflows the search


def _phi(x: float) -> float:
    return 0.0 if math.isinf(x) else _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def _gauss_sq_error(a: float, b: float, c: float) -> float:
    """Integral of (x - c)^2 phi(x) over (a, b] for the standard normal density phi."""
    mass = 0.5 * (math.erfc(a / _SQRT2) - math.erfc(b / _SQRT2))  # Phi(b) - Phi(a)
    pa, pb = _phi(a), _phi(b)
    bpb = 0.0 if math.isinf(b) else b * pb
    second = mass - (bpb - a * pa)  # integral of x^2 phi
    first = pa - pb  # integral of x phi
    return second - 2.0 * c * first + c * c * mass


def _sparse_error(step: float, threshold: float, bits: int) -> float:
    """E[(x - Q(x))^2; x > threshold] for x ~ N(0, 1) (TSQ's sparse quantization)."""
    n = 2**bits - 1
    total = 0.0
    for k in range(1, n + 1):
        lo = threshold if k == 1 else max(threshold, (k - 0.5) * step)
        hi = (k + 0.5) * step if k < n else math.inf
        if hi > lo:
            total += _gauss_sq_error(lo, hi, k * step)
    return total


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ConfigError(f"Expected bits an integer in [1, 8]. Received: bits={bits!r}")
    return bits


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(
            f"Expected threshold a finite number >= 0. Received: threshold={threshold!r}"
        )
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ConfigError(
            f"Expected threshold a finite number >= 0. Received: threshold={threshold!r}"
        )
    return float(threshold)


@functools.lru_cache(maxsize=256)
def _optimal_step(threshold: float, bits: int) -> float:
    f = functools.partial(_sparse_error, threshold=threshold, bits=bits)
    # A coarse scan locates the basin (the error need not be unimodal for large
    # thresholds), then a golden-section search refines it to ~1e-12.
    hi = 2.0 * (threshold + 6.0)
    grid = [hi * (i + 1) / 400 for i in range(400)]
    values = [f(d) for d in grid]
    i = min(range(len(grid)), key=values.__getitem__)
    a, b = (grid[i - 1] if i > 0 else grid[0] * 1e-3), grid[min(i + 1, len(grid) - 1)]
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > 1e-12:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def optimal_step(threshold: float = 0.32, bits: int = 2) -> float:
    r"""TSQ's step :math:`\delta^*(\epsilon)` for a sparse quantizer of ``bits`` bits.

    \\[ \delta^*(\epsilon) = \arg\min_\delta\;
        \mathbb E\big[(x - Q_{\epsilon,\delta}(x))^2;\ x > \epsilon\big], \quad x \sim N(0, 1) \\]

    (TSQ's sparse quantization; it reproduces the authors' constants 0.5388 at
    :math:`\epsilon = 0` and 0.6487 at 0.32 for 2 bits.) The Gaussian integrals are closed
    forms in ``math.erfc``; the minimiser comes from a grid scan plus golden-section search,
    cached per ``(threshold, bits)``. For ``bits > 2`` it is the same rule applied to the
    reconstructed general-``b`` quantizer. For 2 bits :math:`\delta^*` grows with
    :math:`\epsilon` up to :math:`\epsilon \approx 0.85`; beyond, the minimiser moves to steps
    with :math:`1.5\delta` near :math:`\epsilon` (level :math:`\delta` nearly unused) and falls.

    Args:
        threshold: :math:`\epsilon \in [0, 8]` (beyond 8 the tail mass underflows).
        bits: 1 to 8.

    Returns:
        The step as a Python float.

    Raises:
        ValueError: for a threshold or bits out of range.

    Example:

    >>> round(optimal_step(0.0), 4), round(optimal_step(0.32), 4)
    (0.5388, 0.6488)
    """
    threshold = _check_threshold(threshold)
    bits = _check_bits(bits)
    if threshold > _MAX_STEP_THRESHOLD:
        raise ConfigError(
            f"Expected threshold <= {_MAX_STEP_THRESHOLD} to derive the step (or pass step "
            f"explicitly). Received: threshold={threshold!r}"
        )
    return _optimal_step(threshold, bits)


def sparse_fixed_point(bits: int = 2) -> tuple[float, float]:
    r"""The threshold and step ``(eps, d)`` with :math:`\epsilon = \delta^*(\epsilon) / 2`
    (see ``docs/methods.md``, TSQ): ``(0.3254, 0.6508)`` for 2 bits.

    There the sparse quantizer is round-to-nearest on :math:`\{0, \delta, 2\delta, ...\}`,
    so an int8 export computes it exactly; the released AlexNet's
    :math:`\epsilon = 0.32` lies 0.005 below it. Found by iterating
    :math:`\epsilon \leftarrow \delta^*(\epsilon)/2` from 0.32 to a change below 1e-12.

    >>> [round(v, 4) for v in sparse_fixed_point()]
    [0.3254, 0.6508]
    """
    bits = _check_bits(bits)
    eps = 0.32
    for _ in range(200):
        step = _optimal_step(eps, bits)
        if abs(step / 2 - eps) < 1e-12:
            break
        eps = step / 2
    return step / 2, step


@keras.utils.register_keras_serializable(package="tfquant")
class SparseQuantizer(Quantizer):
    r"""Two-Step Quantization's sparse activation quantizer (replaces ReLU).

    Levels :math:`\{0, \delta, \dots, (2^b - 1)\delta\}`; :math:`q(x) = 0` for
    :math:`x \le \epsilon`, then right-closed bins :math:`(\epsilon, 1.5\delta],
    (1.5\delta, 2.5\delta], \dots`; straight-through gradient :math:`1_{0 < x < (2^b-1)\delta}`
    (the gate opens at 0, not at :math:`\epsilon`). See
    :func:`tfquant.quantizers.sparse_quantize`. With ``threshold=0`` it is HWGQ's half-wave
    quantizer; at :math:`\epsilon = \delta/2` it is round-to-nearest on
    :math:`[0, (2^b-1)\delta]`.

    ``levels`` are the output values themselves, :math:`(0, \delta, \dots)`, and ``scaled``
    is False, as for :class:`UniformQuantizer`: :math:`\delta` is a fixed hyperparameter,
    not a data-dependent scale. (Only for ``threshold == step / 2`` does the quantizer round
    to the nearest of these levels; the bin :math:`(\delta/2, \epsilon]` or
    :math:`(\epsilon, \delta/2]` differs otherwise.)

    Args:
        bits: bits per activation, 1 to 8 (2 in the paper; other values are a
            reconstruction).
        threshold: :math:`\epsilon \ge 0`; 0.32 is the released AlexNet's value;
            how the paper chooses it is unknown.
        step: :math:`\delta > 0`, or ``None`` for :func:`optimal_step` ``(threshold, bits)``
            (0.6488 at the defaults; the authors' prototxt rounds it to 0.6487). The resolved
            value is stored and serialized.

    Raises:
        ValueError: for bits, threshold or step out of range.

    Example:

    >>> import numpy as np
    >>> q = SparseQuantizer(threshold=0.32, step=0.6487)
    >>> y = q(np.array([-1.0, 0.32, 0.33, 0.97305, 0.9731, 2.5], "float32")).numpy()
    >>> (y / np.float32(0.6487)).round(3).tolist()
    [0.0, 0.0, 1.0, 1.0, 2.0, 3.0]
    >>> tfquant.quantizers.get("sparse_quantizer").precision
    2

    References: Wang, Hu, Zhang, Zhang, Liu, Cheng, "Two-Step Quantization for Low-bit
    Neural Networks", CVPR 2018.
    """

    def __init__(
        self,
        bits: int = 2,
        threshold: float = 0.32,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.bits = _check_bits(bits)
        self.threshold = _check_threshold(threshold)
        if step is None:
            step = optimal_step(self.threshold, self.bits)
        elif (
            isinstance(step, bool)
            or not isinstance(step, (int, float))
            or not (math.isfinite(step) and step > 0)
        ):
            raise ConfigError(f"Expected step a finite number > 0 or None. Received: step={step!r}")
        self.step = float(step)
        super().__init__(**kwargs)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return self.bits

    @property
    def grid(self) -> Grid:
        r"""Codes 0..2^bits - 1 of step :math:`\delta`; bins are right-closed (ties round
        down) and the first boundary is the threshold :math:`\epsilon`."""
        return Grid(
            step=self.step, k_min=0, k_max=2**self.bits - 1, ties="down", threshold=self.threshold
        )

    def call(self, inputs):
        return sparse_quantize(inputs, self.threshold, self.step, self.bits)

    def get_config(self):
        return {
            **super().get_config(),
            "bits": self.bits,
            "threshold": self.threshold,
            "step": self.step,
        }
