"""int8 arithmetic of the rewrite: scales that make trained values exact int8 codes.

Everything here reads a quantizer's declared :class:`tfquant.quantizers.Grid` (its values,
step, code range, ties, whether it is scaled or learned), never its class: a quantizer
exports to int8 exactly when it declares a grid.

* weights: per-output-channel symmetric scales with which every weight is an integer code
  (:func:`int8_weight_scales`);
* activations: an exact int8 range for a quantizer's values (:func:`activation_range`),
  codes that travel between int8 layers (:func:`code_grid`, :func:`code_links`), and when
  requantizing an output then rounding it again equals rounding once
  (:func:`exact_output_range`, :func:`tie_problem`).

May import: ``tfquant.layers``, ``tfquant.quantizers`` (the base class and ``Grid`` only),
``tfquant._keras`` and numpy.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from tfquant._keras import keras
from tfquant.layers import QuantizerMixin
from tfquant.quantizers.base import Grid, Quantizer

__all__ = [
    "activation_range",
    "code_grid",
    "code_links",
    "effective_kernel",
    "exact_output_range",
    "grid_of",
    "input_is_sign",
    "int8_weight_scales",
    "only_signs_read",
    "tie_down_reader_unit",
    "tie_problem",
    "values_of",
    "widen",
]


def grid_of(quantizer: Any) -> Grid | None:
    """The grid a quantizer declares (``None`` for none, or no quantizer)."""
    return None if quantizer is None else getattr(quantizer, "grid", None)


def values_of(quantizer: Any) -> tuple[float, ...]:
    """The values a quantizer outputs (relative to its scale if scaled); ``()`` for none."""
    grid = grid_of(quantizer)
    return () if grid is None else grid.values


def effective_kernel(layer: QuantizerMixin) -> np.ndarray:
    """The kernel the layer's forward pass uses, ``g * Q(w) + (1 - g) * w``, as numpy."""
    return np.asarray(layer.quantize_kernel(layer.kernel_variable), dtype=np.float32)


def input_is_sign(layer: QuantizerMixin) -> bool:
    """Whether the layer's input quantizer outputs the unscaled values -1 and +1 only."""
    grid = grid_of(layer.input_quantizer)
    return grid is not None and not grid.scaled and grid.values == (-1.0, 1.0)


def _level_step(levels: tuple[float, ...]) -> float | None:
    """The unit of normalised levels (max |level| = 1): the largest ``u`` such that every
    level is an integer multiple of ``u``; None for levels without such a grid."""
    if not levels:
        return None
    values = sorted(set(float(v) for v in levels))
    top = max(abs(v) for v in values)
    if top == 0:
        return None
    gaps = [b - a for a, b in zip(values, values[1:]) if b - a > 1e-9]
    # the unit u: every level an integer multiple of it; the grid step, or half of it for
    # grids offset from zero (DoReFa weights (2j - n) / n: step 2/n, unit 1/n)
    for unit in (min(gaps) / top, min(gaps) / top / 2):
        if all(abs(v / top / unit - round(v / top / unit)) < 1e-6 for v in values):
            return unit
    return None


def _learned_weight_scales(
    mat: np.ndarray, unit: float, channel_factor: np.ndarray | None
) -> np.ndarray:
    """Per-channel int8 scales for a kernel ``mat`` (rows x channels) on a learned grid:
    channel ``o`` is ``unit |f_o| k`` with integer codes ``k`` (``f_o``: a folded
    BatchNorm's factor). ``s_o = unit |f_o| / m_o`` with ``m_o = floor(127 / max_o |k|)``,
    so the int8 weights are ``m_o k`` (``sign(f_o) m_o k`` after a BatchNorm fold). The
    multiple ``m_o`` costs nothing (the int32 accumulator is exact either way) and makes the
    int32 bias, quantized with scale ``s_in s_o``, ``m_o`` times finer: with ``m_o = 1`` its
    rounding (up to half a step of the accumulator) moves outputs across the next layer's
    rounding boundaries."""
    factor = np.ones(mat.shape[1]) if channel_factor is None else np.abs(channel_factor)
    per_channel = unit * factor.astype(np.float64)
    safe = np.where(per_channel > 0, per_channel, 1.0)
    top = np.abs(np.round(mat / safe)).max(axis=0)
    m = np.maximum(1.0, np.floor(127.0 / np.maximum(top, 1.0)))
    return np.where(per_channel > 0, safe / m, 1.0)


def _exact_codes(mat: np.ndarray, scales: np.ndarray) -> bool:
    codes = mat / scales
    return bool(np.all(np.abs(codes - np.round(codes)) <= 1e-3) and np.abs(codes).max() <= 127.5)


def int8_weight_scales(
    kernel: np.ndarray, quantizer: Any, channel_factor: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """Per-output-channel int8 scales ``s_o`` (symmetric, narrow range) with which every
    weight of ``kernel`` (last axis = output channel) is an integer code in [-127, 127].

    With the grid's values of step ``d`` (relative to the largest value ``alpha_o``):
    ``s_o = alpha_o * d / m`` for the largest integer ``m`` with ``alpha_o / s_o <= 127``.
    Ternary: codes {-127, 0, 127}; 2-bit DoReFa: {+-42, +-126}.

    ``alpha_o`` is the largest value (times ``|channel_factor_o|``, the factor a folded
    BatchNorm multiplied channel ``o`` by) for unscaled grids, and the largest ``|w|`` of
    the channel for scaled ones (ternary ``alpha_o``). A learned grid (codes ``k`` times a
    trained step, e.g. CPQ) gives the int8 weights ``m_o k``
    (:func:`_learned_weight_scales`). Without a grid: plain symmetric int8.

    Args:
        kernel: the effective kernel.
        quantizer: the kernel quantizer (or its :class:`~tfquant.quantizers.Grid`).
        channel_factor: a folded BatchNorm's per-channel factor, if any.

    Returns:
        ``(scales, exact)``: ``exact`` tells whether ``kernel / scales`` are all integers.
    """
    mat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    grid = quantizer if isinstance(quantizer, Grid) else grid_of(quantizer)
    if grid is not None and grid.learned:
        scales = _learned_weight_scales(mat, grid.step, channel_factor)
        return scales.astype(np.float32), _exact_codes(mat, scales)
    levels = () if grid is None else grid.values
    if grid is not None and levels and not grid.scaled:
        factor = np.ones(mat.shape[1]) if channel_factor is None else channel_factor
        alpha = max(abs(v) for v in levels) * np.abs(factor).astype(np.float64)
    else:
        alpha = np.abs(mat).max(axis=0)
    step = _level_step(levels)
    if step is None:  # no known grid: plain symmetric int8
        scales = alpha / 127.0
    else:
        m = max(1, math.floor(127.0 / (1.0 / step) + 1e-9))
        scales = alpha * step / m
    scales = np.where(alpha > 0, scales, 1.0)
    return scales.astype(np.float32), _exact_codes(mat, scales)


def activation_range(quantizer: Any) -> tuple[float, float, bool] | None:
    """An exact int8 range ``(min, max, narrow_range)`` for a quantizer's values, or None
    when they are data dependent (scaled), unknown, or more than int8 holds. A learned
    step is known once trained, so a learned grid has a range."""
    grid = grid_of(quantizer)
    if grid is None or grid.scaled:
        return None
    if grid.signed and grid.size > 255:
        return None  # e.g. signed 8 bits: code -128 has no symmetric (narrow range) code
    levels = grid.values
    step = _level_step(levels)
    if step is None:
        return None
    lo, hi = min(levels), max(levels)
    top = max(abs(lo), abs(hi))
    if lo < 0:  # symmetric levels: narrow range, codes -127..127, zero at code 0
        m = max(1, math.floor(127.0 / (1.0 / step) + 1e-9))
        s = top * step / m
        return -127.0 * s, 127.0 * s, True
    # levels in [0, top]: full range, 255 steps from 0
    m = max(1, math.floor(255.0 / (1.0 / step) + 1e-9))
    s = top * step / m
    return 0.0, 255.0 * s, False


def code_grid(quantizer: Any) -> tuple[float, int, str | None] | None:
    """``(u, n, mismatch)`` for an activation quantizer whose output is one of the values
    ``{j u : j = 0..n}``, chosen by rounding to the nearest value (clipped to ``[0, n u]``)
    except possibly on one band that ``mismatch`` describes; None for other quantizers.

    Such values can travel between int8 layers as the codes themselves: the producer
    requantizes its output with scale ``u`` (which rounds at the midpoints ``(j + 1/2) u``)
    and clips it to ``n u``, and the reader takes the codes as they come, with no float
    quantizer ops in between. DoReFa activations round exactly so; a grid whose boundary
    next to zero is a threshold (TSQ's sparse quantizer) does when the threshold is
    ``u / 2`` and otherwise differs on the band between the threshold and ``u / 2``. Ties
    (which a grid may round down, int8 requantization rounds up) are
    :func:`tie_problem`'s business.
    """
    grid = grid_of(quantizer)
    if grid is None or grid.scaled or grid.k_min != 0 or grid.stride != 1:
        return None
    u, n, eps = grid.step, grid.k_max, grid.threshold
    if not 1 <= n <= 255:
        return None
    if eps is None or abs(eps - u / 2) <= 1e-7 * u:
        return u, n, None
    if (n > 1 and eps >= 1.5 * u) or (n == 1 and eps >= u):
        return None
    lo, hi, out = (eps, u / 2, "0 instead of d") if eps < u / 2 else (u / 2, eps, "d instead of 0")
    return (
        u,
        n,
        (
            f"the readers' sparse threshold {eps:g} is not step/2 = {u / 2:g}: int8 rounds "
            f"at step/2, so pre-activations in ({lo:g}, {hi:g}] give {out}"
        ),
    )


def _reader_quantizer(reader: Any) -> Any:
    """The quantizer a reader applies to its input: a tfquant layer's input quantizer, or
    a quantizer used as a layer; ``False`` for any other layer."""
    if isinstance(reader, QuantizerMixin):
        return reader.input_quantizer
    if isinstance(reader, Quantizer):
        return reader
    return False


def exact_output_range(layer: Any, readers: dict) -> tuple[float, float] | None:
    """An int8 output range with which requantizing the output and then applying the next
    layers' input quantizer gives exactly what Keras computes: every reader is a tfquant
    layer (or a quantizer used as a layer) whose input quantizer has unscaled values
    ``{j top / n}`` on ``[0, top]`` with ``n`` dividing 255. Then the range ``[0, top]``
    clips as the quantizer does, and the quantizer's rounding boundaries
    ``(k + 1/2) top / n`` fall halfway between int8 codes, so rounding twice equals
    rounding once."""
    ranges = set()
    for c in readers.get(layer.name, []):
        q = _reader_quantizer(c)
        if q is False:
            return None
        exact = activation_range(q)
        levels = values_of(q)
        if exact is None or exact[2] or min(levels) != 0.0:
            return None
        grid = grid_of(q)
        if grid is not None and grid.threshold is not None:
            found = code_grid(q)
            if found is None or found[2]:
                return None  # its first boundary is the threshold, not half a step
        n = len(levels) - 1
        if 255 % n:
            return None
        ranges.add((0.0, float(max(levels))))
    return ranges.pop() if len(ranges) == 1 else None  # no readers: None too


def only_signs_read(readers: list) -> bool:
    """Whether every reader is a tfquant layer whose input quantizer is a plain sign."""
    return bool(readers) and all(
        isinstance(c, QuantizerMixin) and input_is_sign(c) for c in readers
    )


def code_links(int8_layers: list, readers: dict, consumers: dict) -> dict:
    """Producer name -> ``(u, n, mismatch, reader names)`` for each int8 layer whose output
    can travel as codes (:func:`code_grid`): a linear or ReLU output read, directly or
    through max pooling, only by int8 layers whose input quantizers share one grid."""
    int8_names = {layer.name for layer in int8_layers}
    links = {}
    for layer in int8_layers:
        act = keras.activations.get(layer.activation)
        if act not in (keras.activations.linear, keras.activations.relu):
            continue
        found, todo, ok = [], list(readers[layer.name]), True
        while todo and ok:
            c = todo.pop()
            if isinstance(c, keras.layers.MaxPooling2D):
                todo += consumers.get(c.name, [])
            elif c is not None and c.name in int8_names:
                found.append(c)
            else:
                ok = False
        grids = {code_grid(c.input_quantizer) for c in found} if ok and found else set()
        shared = grids.pop() if len(grids) == 1 else None
        if shared is not None:
            u, n, mismatch = shared
            links[layer.name] = (u, n, mismatch, [c.name for c in found])
    return links


def tie_down_reader_unit(readers: list, consumers: dict) -> float | None:
    """The step ``u`` of the unsigned learned grid, rounding ties down, on which
    ``readers`` (directly or through max pooling) quantize their input, if one does."""
    todo, seen = list(readers), set()
    while todo:
        c = todo.pop()
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        if isinstance(c, keras.layers.MaxPooling2D):
            todo += consumers.get(c.name, [])
            continue
        grid = grid_of(c.input_quantizer if isinstance(c, QuantizerMixin) else c)
        if grid is not None and grid.learned and grid.ties == "down" and grid.k_min == 0:
            return grid.step
    return None


def tie_problem(layer: Any, batchnorm: Any, u_out: float) -> str | None:
    """Whether ties matter for ``layer``'s output read on a grid of step ``u_out`` that
    rounds ties down: a reason when they do, else None.

    The grid rounds ``x = (k + 1/2) u`` down (``ceil(x / u - 1/2)``), int8 requantization
    rounds it up (TFLite: half away from zero; XNNPACK: to even). For float inputs a tie
    has probability 0, and a folded BatchNorm or a bias puts the pre-activations off any
    lattice. Without them, with learned input and weight grids (steps ``u_in``, ``u_w``),
    the pre-activation is ``A u_in u_w`` for an integer ``A`` (``|A|`` at most fan-in x
    largest codes): a tie needs ``2 A u_in u_w / u_out`` odd, i.e. the reduced denominator
    ``b`` of ``u_in u_w / u_out`` (exact: the steps are float32 numbers) even and ``b / 2``
    in reach. Power-of-two steps (e.g. CPQ's default ``alpha = 1``) do that."""
    if batchnorm is not None:
        return None
    if layer.use_bias and np.any(np.asarray(layer.bias.numpy()) != 0):
        return None
    wg, xg = grid_of(layer.kernel_quantizer), grid_of(layer.input_quantizer)
    if wg is None or xg is None or not (wg.learned and xg.learned):
        return None
    ratio = Fraction(wg.step) * Fraction(xg.step) / Fraction(u_out)
    fan_in = int(np.prod(tuple(layer.kernel_variable.shape)[:-1]))
    reach = fan_in * max(abs(xg.k_min), abs(xg.k_max)) * max(abs(wg.k_min), abs(wg.k_max))
    if ratio.denominator % 2 or ratio.denominator // 2 > reach:
        return None
    return (
        f"pre-activations (no bias or BatchNorm) lie on multiples of {wg.step * xg.step:g} and "
        f"can fall exactly halfway between the readers' levels (step {u_out:g}): their "
        "quantizer rounds such ties to the lower level, int8 requantization to the upper one"
    )


def widen(lo: float, hi: float) -> tuple[float, float]:
    """A range that contains 0 (TFLite needs zero exactly representable) with a margin."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.05 * (hi - lo) or 1.0
    return lo - (pad if lo < 0 else 0.0), hi + pad
