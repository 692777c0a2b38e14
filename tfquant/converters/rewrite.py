"""Graph rewrites before Larq Compute Engine: go past two of its limits.

* LCE issue 53: a binary ``QuantDense`` stays a float ``FULLY_CONNECTED``. It is rebuilt as
  reshape ``(B, C) -> (B, 1, 1, C)`` of the float input, the layer's sign, a 1x1 VALID
  convolution with the kernel reshaped to ``(1, 1, C, units)`` and a reshape back, which LCE
  turns into ``LceQuantize`` + ``LceBconv2d`` (shared/LCE.md).
* LCE issue 806: ternary and k-bit (k <= 8) weights stay float32. Such layers are rebuilt
  with fake-quant ops on the kernel (per output channel), the input and the output, with
  ranges chosen so that every trained level is an exact int8 code; LCE then emits int8
  kernels. CPQ (``CPQQuantizer``: codes times a learned step ``alpha``) exports so too: int8
  weights ``m_o k`` with scale ``alpha |f_o| / m_o``, unsigned activations as their codes
  (scale ``alpha``) between int8 layers.

The rewrite builds a new Keras model (``keras.models.clone_model`` with replaced layers and
copied weights); the user's model is never modified. The replacement layers
(:class:`BinaryDenseAsConv`, :class:`Int8Layer`) hold their values as non-trainable weights
and serialize like any Keras 3 layer, so the rewritten model traces through
``model.export`` (the SavedModel LCE converts) and can be saved as ``.keras`` for a look.

The graph walk reads Keras 3's Functional graph (``model.operations`` and the nodes that
connect them, ``Node.parent_nodes``); Sequential models are walked through the Functional
graph Keras builds for them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tfquant import quantizers
from tfquant._keras import keras, tf
from tfquant.layers import (
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantizerMixin,
    same_padding,
)

__all__ = [
    "BinaryDenseAsConv",
    "FoldedBatchNorm",
    "Int8Layer",
    "LayerPlan",
    "plan_layers",
    "rewrite_model",
    "effective_kernel",
    "binary_kernel_problem",
    "int8_weight_scales",
]

# LCE accepts a filter as binary when every weight of channel o is +-alpha_o within 0.5%.
_BINARY_RTOL = 5e-3


@dataclasses.dataclass
class LayerPlan:
    """What the converter intends for one tfquant layer, before LCE runs.

    Attributes:
        name: the layer's name.
        kind: its class name.
        declared: ``"binary"`` (1-bit inputs and kernel), ``"k-bit"`` (kernel of 2 to 8
            bits), or ``"float"``.
        target: ``"binary"``, ``"int8"`` or ``"float"``: the kernel LCE should emit.
        rewrite: ``None`` or the rewrite applied (``"dense_as_bconv"``, ``"int8"``).
        reason: why the target is not the declared precision's kernel, if it is not.
        exact: for int8, whether every weight and input level is an exact int8 code.
        weight_bits, input_bits: the kernel's and the input's precision (32 for float; a
            learned precision such as ``CPQQuantizer.learned_bits()`` as it is now).
    """

    name: str
    kind: str
    declared: str
    target: str
    rewrite: str | None = None
    reason: str | None = None
    exact: bool | None = None
    weight_bits: int | None = None
    input_bits: int | None = None


def effective_kernel(layer: QuantizerMixin) -> np.ndarray:
    """The kernel the layer's forward pass uses, ``g * Q(w) + (1 - g) * w``, as numpy."""
    return np.asarray(layer.quantize_kernel(layer.kernel_variable), dtype=np.float32)


def _declared(layer: QuantizerMixin) -> str:
    if layer.kernel_quantizer is None:
        return "float"
    if layer.kernel_precision == 1 and layer.input_precision == 1:
        return "binary"
    if layer.kernel_precision <= 8:
        return "k-bit"
    return "float"


def binary_kernel_problem(kernel: np.ndarray) -> str | None:
    """Why LCE would not take ``kernel`` (last axis = output channel) as a binary filter:
    ``None`` when every weight of channel ``o`` is ``+-alpha_o`` within 0.5%."""
    mat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    alpha = mat.max(axis=0)
    zeros = int(np.sum(mat == 0))
    if zeros:
        return f"kernel has {zeros} zero weights, so it is not +-alpha per output channel"
    spread = (alpha - mat.min(axis=0)) / np.maximum(alpha, 1e-30)
    if np.any(spread > _BINARY_RTOL):
        bad = int(np.sum(spread > _BINARY_RTOL))
        return (
            f"kernel is not +-alpha per output channel in {bad} of {mat.shape[1]} channels "
            f"(|w| varies up to {100 * float(spread.max()):.1f}% within a channel; run "
            "tfquant.finalize or check the kernel gate)"
        )
    return None


def _input_is_sign(layer: QuantizerMixin) -> bool:
    q = layer.input_quantizer
    return q is not None and q.precision == 1 and tuple(q.levels or ()) == (-1.0, 1.0)


def _binary_problem(layer: QuantizerMixin, input_shape: tuple | None) -> str | None:
    if isinstance(layer, QuantDepthwiseConv2D):
        return "LCE has no binary depthwise convolution kernel"
    if not _input_is_sign(layer) or getattr(layer.input_quantizer, "scaled", False):
        return "its input quantizer is not a plain sign (levels -1, +1)"
    problem = binary_kernel_problem(effective_kernel(layer))
    if problem:
        return problem
    if isinstance(layer, QuantDense) and input_shape is not None and len(input_shape) != 2:
        return f"binary Dense on a rank-{len(input_shape)} input; only rank 2 is rewritten"
    if isinstance(layer, QuantConv2D) and layer.groups != 1:
        cin = effective_kernel(layer).shape[2]
        if cin % 32:
            return (
                f"grouped binary convolution needs input channels per group % 32 == 0 (has {cin})"
            )
    return None


# ---------------------------------------------------------------------------------------------
# The Keras 3 graph: nodes, shapes, consumers


def _functional(model: keras.Model) -> Any:
    """The Functional graph of a Functional or Sequential model (Keras 3 builds one for a
    Sequential model once its input shape is known); ``None`` for subclassed models."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    return graph if graph is not None and hasattr(graph, "_nodes_by_depth") else None


def _graph_nodes(model: keras.Model) -> list:
    """The nodes (layer calls) of the model's own graph, inputs first."""
    graph = _functional(model)
    if graph is None:
        return []
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _nodes_by_layer(model: keras.Model) -> dict[int, list]:
    """``id(layer)`` -> the layer's calls (nodes) in the model's graph."""
    out: dict[int, list] = {}
    for node in _graph_nodes(model):
        out.setdefault(id(node.operation), []).append(node)
    return out


def _only_node(layer: keras.layers.Layer, nodes: dict[int, list]) -> Any:
    calls = nodes.get(id(layer), [])
    return calls[0] if len(calls) == 1 else None


def _input_shape(layer: keras.layers.Layer, nodes: dict[int, list]) -> tuple | None:
    """The shape of the layer's single input tensor (from its call in the graph, else from
    the shape it was built with); ``None`` where unknown or not a single tensor."""
    node = _only_node(layer, nodes)
    if node is not None:
        tensors = node.input_tensors
        return tuple(tensors[0].shape) if len(tensors) == 1 else None
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
            return tuple(shape)
    return None


# ---------------------------------------------------------------------------------------------
# int8: ranges that make trained levels exact codes


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


def _cpq_grid(quantizer) -> tuple[float, int, int] | None:
    """``(u, k_min, k_max)`` of a :class:`~tfquant.quantizers.CPQQuantizer` at its current
    (learned) precision, None for other quantizers.

    CPQ's ``levels`` are integer codes, not values (``scaled = True``): its outputs are
    ``u k`` for the integers ``k_min <= k <= k_max``, ``k = clip(ceil(x / u - 1/2))`` (the
    nearest level, ties to the lower one). ``u`` is the learned step ``alpha``, times
    ``2^(bits - learned_bits)`` where DropBits scheme "B" dropped resolution (levels
    ``(-4, -2, 0, 2)``: step 2 codes); ``k_min..k_max`` is the learned-bits code range."""
    if not isinstance(quantizer, quantizers.CPQQuantizer):
        return None
    levels = sorted(float(v) for v in quantizer.levels)
    step = levels[1] - levels[0] if len(levels) > 1 else 1.0
    return quantizer.alpha_value * step, round(levels[0] / step), round(levels[-1] / step)


def _real_levels(quantizer) -> tuple[float, ...]:
    """The values a quantizer outputs: its ``levels``, or for CPQ (whose ``levels`` are
    codes) the codes times the learned step."""
    grid = _cpq_grid(quantizer)
    if grid is not None:
        u, lo, hi = grid
        return tuple(u * k for k in range(lo, hi + 1))
    return tuple(float(v) for v in (getattr(quantizer, "levels", ()) or ()))


def _cpq_weight_scales(
    mat: np.ndarray, unit: float, channel_factor: np.ndarray | None
) -> np.ndarray:
    """Per-channel int8 scales for a CPQ kernel ``mat`` (rows x channels) whose channel ``o``
    is ``unit |f_o| k`` with integer codes ``k`` (``f_o``: a folded BatchNorm's factor):
    ``s_o = unit |f_o| / m_o`` with ``m_o = floor(127 / max_o |k|)``, so the int8 weights are
    ``m_o k`` (``sign(f_o) m_o k`` after a BatchNorm fold). The multiple ``m_o`` costs nothing
    (the int32 accumulator is exact either way) and makes the int32 bias, quantized with
    scale ``s_in s_o``, ``m_o`` times finer: with ``m_o = 1`` its rounding (up to half a step
    of the accumulator) moves outputs across the next layer's rounding boundaries."""
    factor = np.ones(mat.shape[1]) if channel_factor is None else np.abs(channel_factor)
    per_channel = unit * factor.astype(np.float64)
    safe = np.where(per_channel > 0, per_channel, 1.0)
    top = np.abs(np.round(mat / safe)).max(axis=0)
    m = np.maximum(1.0, np.floor(127.0 / np.maximum(top, 1.0)))
    return np.where(per_channel > 0, safe / m, 1.0)


def int8_weight_scales(
    kernel: np.ndarray, quantizer, channel_factor: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """Per-output-channel int8 scales ``s_o`` (symmetric, narrow range) with which every
    weight of ``kernel`` (last axis = output channel) is an integer code in [-127, 127].

    With the quantizer's level grid of step ``d`` (relative to the largest level
    ``alpha_o``): ``s_o = alpha_o * d / m`` for the largest integer ``m`` with
    ``alpha_o / s_o <= 127``. Ternary: codes {-127, 0, 127}; 2-bit DoReFa: {+-42, +-126}.

    ``alpha_o`` is the largest level (times ``|channel_factor_o|``, the factor a folded
    BatchNorm multiplied channel ``o`` by) for unscaled quantizers, and the largest
    ``|w|`` of the channel for scaled ones (ternary ``alpha_o``). CPQ kernels (codes ``k``
    times a learned step) get the int8 weights ``m_o k`` (:func:`_cpq_weight_scales`).

    Returns:
        ``(scales, exact)``: ``exact`` tells whether ``kernel / scales`` are all integers.
    """
    mat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    levels = tuple(getattr(quantizer, "levels", ()) or ())
    grid = _cpq_grid(quantizer)
    if grid is not None:
        scales = _cpq_weight_scales(mat, grid[0], channel_factor)
        codes = mat / scales
        exact = bool(
            np.all(np.abs(codes - np.round(codes)) <= 1e-3) and np.abs(codes).max() <= 127.5
        )
        return scales.astype(np.float32), exact
    if levels and not getattr(quantizer, "scaled", True):
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
    codes = mat / scales
    exact = bool(np.all(np.abs(codes - np.round(codes)) <= 1e-3) and np.abs(codes).max() <= 127.5)
    return scales.astype(np.float32), exact


def _activation_range(quantizer) -> tuple[float, float, bool] | None:
    """An exact int8 range ``(min, max, narrow_range)`` for a quantizer's output levels, or
    None when the levels are data dependent (scaled) or unknown. CPQ is scaled by a learned
    step that is known once trained: its levels ``u k`` have a range."""
    if quantizer is None:
        return None
    cpq = _cpq_grid(quantizer)
    if cpq is None and getattr(quantizer, "scaled", False):
        return None
    if cpq is not None and cpq[1] < -127:
        return None  # signed 8 bits: code -128 has no symmetric (narrow range) int8 code
    levels = _real_levels(quantizer)
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


def _code_grid(quantizer) -> tuple[float, int, str | None] | None:
    """``(u, n, mismatch)`` for an activation quantizer whose output is one of the levels
    ``{j u : j = 0..n}``, chosen by rounding to the nearest level (clipped to ``[0, n u]``)
    except possibly on one band that ``mismatch`` describes; None for other quantizers.

    Such levels can travel between int8 layers as the codes themselves: the producer
    requantizes its output with scale ``u`` (which rounds at the midpoints ``(j + 1/2) u``)
    and clips it to ``n u``, and the reader takes the codes as they come, with no float
    quantizer ops in between. DoReFa activations round exactly so; TSQ's sparse quantizer
    does when its threshold is ``step / 2`` and otherwise differs on the band between the
    threshold and ``step / 2`` (TSQ.md 8). Unsigned CPQ does with ``u`` its learned step
    (ties, which it rounds down, aside: :func:`_cpq_tie_problem`).
    """
    if isinstance(quantizer, quantizers.UniformQuantizer) and quantizer.mode == "activation":
        n = 2**quantizer.bits - 1
        return (1.0 / n, n, None) if n <= 255 else None
    grid = _cpq_grid(quantizer)
    if grid is not None:  # unsigned CPQ: levels u k, k = 0..n
        u, lo, n = grid
        # ties (x = (k + 1/2) u) go to the lower code, int8 requantization rounds them up:
        # they matter only where pre-activations can hit them (see _cpq_tie_problem)
        return (u, n, None) if lo == 0 and 1 <= n <= 255 else None
    if isinstance(quantizer, quantizers.SparseQuantizer):
        u, eps, n = quantizer.step, quantizer.threshold, 2**quantizer.bits - 1
        if n > 255 or (n > 1 and eps >= 1.5 * u) or (n == 1 and eps >= u):
            return None
        if abs(eps - u / 2) <= 1e-7 * u:
            return u, n, None
        lo, hi, out = (
            (eps, u / 2, "0 instead of d") if eps < u / 2 else (u / 2, eps, "d instead of 0")
        )
        return (
            u,
            n,
            (
                f"the readers' sparse threshold {eps:g} is not step/2 = {u / 2:g}: int8 rounds "
                f"at step/2, so pre-activations in ({lo:g}, {hi:g}] give {out}"
            ),
        )
    return None


def _int8_problem(layer: QuantizerMixin, input_shape: tuple | None) -> str | None:
    if isinstance(layer, QuantDepthwiseConv2D):
        return "int8 export of depthwise convolutions is not implemented"
    if isinstance(layer, QuantConv2D) and layer.groups != 1:
        return "int8 export of grouped convolutions is not implemented"
    if isinstance(layer, QuantDense) and input_shape is not None and len(input_shape) != 2:
        return f"int8 export of Dense on a rank-{len(input_shape)} input is not implemented"
    return None


def plan_layers(model: keras.Model, int8: str | list[str] = "auto") -> list[LayerPlan]:
    """Decide per tfquant layer what kernel to aim for, and why not where not.

    Args:
        model: a built Keras model.
        int8: ``"auto"``: ternary and k-bit (2 to 8 bit) layers with a quantized input
            (unscaled levels, exact int8 codes) become int8; ``"none"``: they stay float
            as LCE leaves them; a list of layer names: those layers become int8 (a float
            input then gets a calibrated range).
    """
    from tfquant.models import quantized_layers

    nodes = _nodes_by_layer(model)
    plans = []
    for layer in quantized_layers(model):
        declared = _declared(layer)
        input_shape = _input_shape(layer, nodes)
        plan = LayerPlan(
            layer.name,
            type(layer).__name__,
            declared,
            "float",
            weight_bits=int(layer.kernel_precision),
            input_bits=int(layer.input_precision),
        )
        if declared == "binary":
            problem = _binary_problem(layer, input_shape)
            if problem is None:
                plan.target = "binary"
                if isinstance(layer, QuantDense):
                    plan.rewrite = "dense_as_bconv"
            else:
                plan.reason = problem
        named = isinstance(int8, (list, tuple)) and layer.name in int8
        # "auto" takes only layers whose inputs are exact int8 codes too (quantized by an
        # unscaled quantizer): a float input would be rounded to a calibrated range.
        exact_input = _activation_range(layer.input_quantizer) is not None
        auto = int8 == "auto" and declared == "k-bit"
        if plan.target == "float" and (named or (auto and exact_input)):
            problem = _int8_problem(layer, input_shape)
            if problem is None:
                plan.target, plan.rewrite = "int8", "int8"
            elif plan.reason is None:
                plan.reason = problem
        elif plan.target == "float" and declared == "k-bit" and plan.reason is None:
            plan.reason = (
                "float or scaled input: int8 would round it (name the layer in int8= to "
                "export it anyway); LCE keeps k-bit weights float32"
                if auto
                else "int8 export not requested; LCE keeps k-bit weights float32"
            )
        plans.append(plan)
    return plans


# ---------------------------------------------------------------------------------------------
# Deploy layers: constant (non-trainable) weights taken from a trained layer; serializable


def _constant_weight(layer: keras.layers.Layer, name: str, shape) -> Any:
    return layer.add_weight(
        name=name, shape=tuple(int(d) for d in shape), initializer="zeros", trainable=False
    )


def _source_values(source: QuantizerMixin) -> dict[str, Any]:
    return {
        "input_quantizer": quantizers.serialize(source.input_quantizer),
        "activation": keras.activations.serialize(keras.activations.get(source.activation)),
        "use_bias": bool(source.use_bias),
    }


def _copy_quantizer_state(source, target) -> None:
    """Copy a trained quantizer's variables (CPQ's learned step, noise scale and bit gates)
    into its re-created twin: ``from_config`` gives the initial values only."""
    if source is None or target is None:
        return
    values = source.get_weights()
    if len(values) != len(target.weights):  # e.g. variables made on a first call
        raise RuntimeError(
            f"cannot copy the state of quantizer {source.name!r} into the int8 layer: it has "
            f"{len(values)} variables, its re-created twin {len(target.weights)}"
        )
    if values:
        target.set_weights(values)


class _DeployLayer(keras.layers.Layer):
    """Base of deploy layers: input quantizer, activation and optional bias of a trained
    tfquant layer; the weights are non-trainable and set by ``from_layer``."""

    def __init__(
        self,
        input_quantizer: Any = None,
        activation: Any = None,
        use_bias: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.input_quantizer = quantizers.get(input_quantizer)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias = None

    def _finish(self, outputs):
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        return self.activation(outputs)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
        }


@keras.utils.register_keras_serializable(package="tfquant")
class FoldedBatchNorm(keras.layers.Layer):
    """The identity left where a BatchNormalization was folded into the layer before it
    (it takes the BatchNormalization's call arguments, ``training`` and ``mask``)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.utils.register_keras_serializable(package="tfquant")
class BinaryDenseAsConv(_DeployLayer):
    """A binary ``QuantDense`` as reshape -> sign -> 1x1 VALID conv -> reshape (LCE issue 53).

    Args:
        units: output size.
        input_quantizer: the sign applied after the reshape (as the Dense layer's).
        activation, use_bias: as the Dense layer's.

    Built by :meth:`from_layer` from a trained layer; its kernel ``(1, 1, C, units)`` is the
    Dense layer's effective (quantized) kernel.
    """

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)

    @classmethod
    def from_layer(cls, source: QuantDense) -> BinaryDenseAsConv:
        """The deploy layer of a trained binary ``QuantDense`` (same name and values)."""
        kernel = effective_kernel(source)
        layer = cls(kernel.shape[1], name=source.name, **_source_values(source))
        layer.build((None, kernel.shape[0]))
        layer.kernel.assign(kernel.reshape(1, 1, *kernel.shape))
        if layer.bias is not None:
            layer.bias.assign(np.asarray(source.bias.numpy(), np.float32))
        return layer

    def build(self, input_shape) -> None:
        self.kernel = _constant_weight(self, "kernel", (1, 1, input_shape[-1], self.units))
        if self.use_bias:
            self.bias = _constant_weight(self, "bias", (self.units,))

    def call(self, inputs, training=None):
        kernel = tf.convert_to_tensor(self.kernel)
        x = tf.reshape(inputs, (-1, 1, 1, kernel.shape[2]))  # float input, before the sign
        x = self.input_quantizer(x)
        x = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
        return self._finish(tf.reshape(x, (-1, self.units)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.utils.register_keras_serializable(package="tfquant")
class Int8Layer(_DeployLayer):
    """A ternary / k-bit conv or dense layer with fake-quant ops LCE turns into int8 kernels.

    Weights: per-channel fake quant (``weight_min`` / ``weight_max``, ranges from
    :func:`int8_weight_scales`); input: the layer's own quantizer followed by a fake quant of
    its exact level range (or a calibrated range for float inputs); output: a calibrated
    range (or, with ``sign_safe``, one that keeps the output's sign exactly).

    Args:
        kernel_shape: ``(kh, kw, cin, cout)`` for a convolution, ``(cin, units)`` for dense.
        input_range: ``(min, max, narrow_range)`` of the input fake quant.
        output_range: ``(min, max)`` of the output fake quant.
        sign_safe: the readers only take the output's sign (see ``call``).
        output_clip: with ``output_range = (0, 255 u)``: the output is the nearest level
            ``j u``, clipped to ``output_clip = n u`` (the codes the int8 readers take).
        input_codes: the input already is one of the input quantizer's levels (produced by
            an int8 layer with ``output_clip``): the quantizer is not applied again.
        conv: for a convolution, ``strides``, ``dilations``, ``padding`` (``"SAME"`` /
            ``"VALID"``), ``one_padding`` and ``pad_values``; ``None`` for dense.
        input_quantizer, activation, use_bias: as the source layer's.

    Built by :meth:`from_layer` from a trained layer (a following BatchNorm folded in).
    """

    def __init__(
        self,
        kernel_shape: Any,
        input_range: Any,
        output_range: Any,
        sign_safe: bool = False,
        conv: dict[str, Any] | None = None,
        output_clip: float | None = None,
        input_codes: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_clip = None if output_clip is None else float(output_clip)
        self.input_codes = bool(input_codes)
        self.kernel_shape = tuple(int(d) for d in kernel_shape)
        lo, hi, narrow = input_range
        self.input_range = (float(lo), float(hi), bool(narrow))
        self.output_range = (float(output_range[0]), float(output_range[1]))
        self.sign_safe = bool(sign_safe)
        self.conv = None if conv is None else dict(conv)
        self.exact: bool | None = None  # set by from_layer

    @classmethod
    def from_layer(
        cls,
        source: QuantizerMixin,
        input_range: tuple[float, float, bool],
        output_range: tuple[float, float],
        batchnorm: keras.layers.BatchNormalization | None = None,
        sign_safe: bool = False,
        output_clip: float | None = None,
        input_codes: bool = False,
    ) -> Int8Layer:
        """The deploy layer of a trained ternary / k-bit layer, with ``batchnorm`` (the
        BatchNormalization reading only its output) folded into kernel and bias."""
        kernel = effective_kernel(source)
        bias = None if not source.use_bias else np.asarray(source.bias.numpy(), np.float32)
        k = None
        if batchnorm is not None:  # fold y -> gamma (y - mean) / sqrt(var + eps) + beta
            gamma, beta, mean, var = _batchnorm_values(batchnorm)
            k = gamma / np.sqrt(var + batchnorm.epsilon)
            bias = ((np.zeros_like(mean) if bias is None else bias) - mean) * k + beta
            kernel = kernel * k
        kernel = kernel.astype(np.float32)
        scales, exact = int8_weight_scales(kernel, source.kernel_quantizer, k)
        conv = None
        if isinstance(source, QuantConv2D):
            conv = {
                "strides": [int(v) for v in source.strides],
                "dilations": [int(v) for v in source.dilation_rate],
                "padding": source.padding.upper(),
                "one_padding": bool(source._uses_one_padding()),
                "pad_values": float(source.pad_values),
            }
        values = _source_values(source)
        values["use_bias"] = bias is not None
        layer = cls(
            kernel.shape,
            input_range,
            output_range,
            sign_safe=sign_safe,
            conv=conv,
            output_clip=output_clip,
            input_codes=input_codes,
            name=source.name,
            **values,
        )
        layer.build(None)
        _copy_quantizer_state(source.input_quantizer, layer.input_quantizer)
        layer.kernel.assign(kernel)
        layer.weight_min.assign(-127.0 * scales)
        layer.weight_max.assign(127.0 * scales)
        if bias is not None:
            layer.bias.assign(bias.astype(np.float32))
        layer.exact = exact
        return layer

    def build(self, input_shape) -> None:
        cout = self.kernel_shape[-1]
        self.kernel = _constant_weight(self, "kernel", self.kernel_shape)
        self.weight_min = _constant_weight(self, "weight_min", (cout,))
        self.weight_max = _constant_weight(self, "weight_max", (cout,))
        if self.use_bias:
            self.bias = _constant_weight(self, "bias", (cout,))

    def call(self, inputs, training=None):
        x = inputs
        if self.input_quantizer is not None and not self.input_codes:
            x = self.input_quantizer(x)
        lo, hi, narrow = self.input_range
        x = tf.quantization.fake_quant_with_min_max_args(x, lo, hi, num_bits=8, narrow_range=narrow)
        kernel = tf.convert_to_tensor(self.kernel)
        if self.conv is None:
            kernel = tf.reshape(kernel, (1, 1, *self.kernel_shape))
        w = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel,
            tf.convert_to_tensor(self.weight_min),
            tf.convert_to_tensor(self.weight_max),
            num_bits=8,
            narrow_range=True,
        )
        if self.conv is None:
            # As a 1x1 convolution: per-channel int8 weights, which TFLite's converter
            # rejects for a FULLY_CONNECTED ("mismatched quantized axes" of the transpose).
            cin, units = self.kernel_shape
            y = tf.nn.conv2d(tf.reshape(x, (-1, 1, 1, cin)), w, strides=1, padding="VALID")
            y = tf.reshape(y, (-1, units))
        else:
            c = self.conv
            padding = c["padding"]
            if c["one_padding"]:
                paddings = [[0, 0]]
                for axis, (k, s, d) in enumerate(
                    zip(self.kernel_shape[:2], c["strides"], c["dilations"]), start=1
                ):
                    paddings.append(list(same_padding(int(x.shape[axis]), k, s, d)))
                paddings.append([0, 0])
                x = tf.pad(x, paddings, constant_values=c["pad_values"])
                padding = "VALID"
            y = tf.nn.convolution(
                x, w, strides=c["strides"], padding=padding, dilations=c["dilations"]
            )
        y = self._finish(y)
        lo, hi = self.output_range
        if self.output_clip is not None:
            y = tf.quantization.fake_quant_with_min_max_args(y, lo, hi, num_bits=8)
            return tf.minimum(y, self.output_clip)
        if not self.sign_safe:
            return tf.quantization.fake_quant_with_min_max_args(y, lo, hi, num_bits=8)
        # Only signs are read: shift by half a step so that code >= 1 <=> y >= 0, then shift
        # back; the result is never 0 and has y's sign (sign(0) = +1) exactly.
        half = 0.5 * (hi - lo) / 255.0
        y = tf.quantization.fake_quant_with_min_max_args(y + half, lo, hi, num_bits=8)
        return y - half

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_shape": list(self.kernel_shape),
            "input_range": list(self.input_range),
            "output_range": list(self.output_range),
            "sign_safe": self.sign_safe,
            "output_clip": self.output_clip,
            "input_codes": self.input_codes,
            "conv": None
            if self.conv is None
            else {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in self.conv.items()},
        }


# ---------------------------------------------------------------------------------------------
# Calibration and the model rewrite


def _calibration_inputs(model: keras.Model, data: Any, samples: int, seed: int) -> list:
    if data is not None:
        return list(data) if isinstance(data, (list, tuple)) else [data]
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(samples, *[int(d) for d in shape[1:]])).astype(np.float32)
        for shape in (tuple(t.shape) for t in model.inputs)
    ]


def _layer_io_ranges(model: keras.Model, layers: list, inputs: list) -> dict:
    """(input min, input max, output min, output max) of each layer on ``inputs``, read
    through a probe model over the layers' input and output tensors in ``model``'s graph."""
    nodes = _nodes_by_layer(model)
    tensors = []
    for layer in layers:
        node = _only_node(layer, nodes)
        if node is None or len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
            raise ValueError(
                f"Expected layer {layer.name!r} to be called once on one tensor in the model. "
                "Received a layer that is shared or has several inputs or outputs"
            )
        tensors += [node.input_tensors[0], node.output_tensors[0]]
    probe = keras.Model(model.inputs, tensors)
    values = probe(list(inputs), training=False)
    out = {}
    for i, layer in enumerate(layers):
        xin, xout = np.asarray(values[2 * i]), np.asarray(values[2 * i + 1])
        out[layer.name] = (float(xin.min()), float(xin.max()), float(xout.min()), float(xout.max()))
    return out


def _batchnorm_values(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, ...]:
    n = int(bn.moving_mean.shape[0])
    gamma = np.asarray(bn.gamma.numpy()) if bn.gamma is not None else np.ones(n, np.float32)
    beta = np.asarray(bn.beta.numpy()) if bn.beta is not None else np.zeros(n, np.float32)
    return gamma, beta, np.asarray(bn.moving_mean.numpy()), np.asarray(bn.moving_variance.numpy())


def _consumers(model: keras.Model) -> dict[str, list]:
    """Layer name -> the layers reading its output in the model's graph (``None`` stands for
    a model output)."""
    out: dict[str, list] = {layer.name: [] for layer in model.layers}
    for node in _graph_nodes(model):
        for parent in node.parent_nodes:
            out.setdefault(parent.operation.name, []).append(node.operation)
    graph = _functional(model)
    for x in graph.outputs if graph is not None else []:
        history = getattr(x, "_keras_history", None)
        if history is not None and history.operation is not None:
            out.setdefault(history.operation.name, []).append(None)
    return out


def _foldable_batchnorm(
    layer, consumers: dict, nodes: dict[int, list]
) -> keras.layers.BatchNormalization | None:
    """The BatchNormalization that alone reads ``layer``'s linear output, if any."""
    after = consumers.get(layer.name, [])
    if len(after) != 1 or not isinstance(after[0], keras.layers.BatchNormalization):
        return None
    bn = after[0]
    node, bn_node = _only_node(layer, nodes), _only_node(bn, nodes)
    if node is None or bn_node is None or len(bn_node.input_tensors) != 1:
        return None
    linear = keras.activations.get(layer.activation) is keras.activations.linear
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    rank = len(node.output_tensors[0].shape)
    if not linear or axis not in (-1, rank - 1):
        return None
    return bn


def _exact_output_range(layer, consumers: dict) -> tuple[float, float] | None:
    """An int8 output range with which requantizing the output and then applying the next
    layers' input quantizer gives exactly what Keras computes: every consumer is a tfquant
    layer (or a quantizer used as a layer) whose input quantizer has unscaled levels ``{j top / n}`` on ``[0, top]`` with
    ``n`` dividing 255. Then the range ``[0, top]`` clips as the quantizer does, and the
    quantizer's rounding boundaries ``(k + 1/2) top / n`` fall halfway between int8 codes,
    so rounding twice equals rounding once."""
    after = consumers.get(layer.name, [])
    ranges = set()
    for c in after:
        if isinstance(c, QuantizerMixin):
            q = c.input_quantizer
        elif isinstance(c, quantizers.Quantizer):  # a quantizer used as a layer
            q = c
        else:
            return None
        exact = _activation_range(q)
        levels = _real_levels(q)
        if exact is None or exact[2] or min(levels) != 0.0:
            return None
        if isinstance(q, quantizers.SparseQuantizer):
            grid = _code_grid(q)
            if grid is None or grid[2]:
                return None  # its first boundary is the threshold, not half a step
        n = len(levels) - 1
        if 255 % n:
            return None
        ranges.add((0.0, float(max(levels))))
    return ranges.pop() if len(ranges) == 1 else None  # no readers: None too


def _only_signs_read(readers: list) -> bool:
    """Whether every reader is a tfquant layer whose input quantizer is a plain sign."""
    return bool(readers) and all(
        isinstance(c, QuantizerMixin) and _input_is_sign(c) and not c.input_quantizer.scaled
        for c in readers
    )


def _code_links(int8_layers: list, readers: dict, consumers: dict) -> dict:
    """Producer name -> ``(u, n, mismatch, reader names)`` for each int8 layer whose output
    can travel as level codes (:func:`_code_grid`): a linear or ReLU output read, directly
    or through max pooling, only by int8 layers whose input quantizers share one grid."""
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
        grids = {_code_grid(c.input_quantizer) for c in found} if ok and found else set()
        if len(grids) == 1 and None not in grids:
            u, n, mismatch = grids.pop()
            links[layer.name] = (u, n, mismatch, [c.name for c in found])
    return links


def _cpq_reader_unit(readers: list, consumers: dict) -> float | None:
    """The step ``u`` of the unsigned CPQ grid on which ``readers`` (directly or through max
    pooling) quantize their input, if one of them does so."""
    todo, seen = list(readers), set()
    while todo:
        c = todo.pop()
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        if isinstance(c, keras.layers.MaxPooling2D):
            todo += consumers.get(c.name, [])
            continue
        q = c.input_quantizer if isinstance(c, QuantizerMixin) else c
        grid = _cpq_grid(q)
        if grid is not None and grid[1] == 0:
            return grid[0]
    return None


def _cpq_tie_problem(layer, batchnorm, u_out: float) -> str | None:
    """Whether CPQ's ties matter for ``layer``'s output read on a CPQ grid of step
    ``u_out``: a reason when they do, else None.

    CPQ rounds ``x = (k + 1/2) u`` down (``ceil(x / u - 1/2)``), int8 requantization rounds it
    up (TFLite: half away from zero; XNNPACK: to even). For float inputs a tie has
    probability 0, and a folded BatchNorm or a bias puts the pre-activations off any lattice.
    Without them, with CPQ input codes (step ``u_in``) and CPQ weights (step ``u_w``), the
    pre-activation is ``A u_in u_w`` for an integer ``A`` (``|A|`` at most fan-in x largest
    codes): a tie needs ``2 A u_in u_w / u_out`` odd, i.e. the reduced denominator ``b`` of
    ``u_in u_w / u_out`` (exact: the steps are float32 numbers) even and ``b / 2`` in reach.
    Power-of-two steps (e.g. the default ``alpha = 1``) do that."""
    from fractions import Fraction

    if batchnorm is not None:
        return None
    if layer.use_bias and np.any(np.asarray(layer.bias.numpy()) != 0):
        return None
    wg, xg = _cpq_grid(layer.kernel_quantizer), _cpq_grid(layer.input_quantizer)
    if wg is None or xg is None:
        return None
    ratio = Fraction(wg[0]) * Fraction(xg[0]) / Fraction(u_out)
    fan_in = int(np.prod(effective_kernel(layer).shape[:-1]))
    reach = fan_in * max(abs(xg[1]), abs(xg[2])) * max(abs(wg[1]), abs(wg[2]))
    if ratio.denominator % 2 or ratio.denominator // 2 > reach:
        return None
    return (
        f"pre-activations (no bias or BatchNorm) lie on multiples of {wg[0] * xg[0]:g} and "
        f"can fall exactly halfway between the readers' CPQ levels (step {u_out:g}): CPQ "
        "rounds such ties to the lower level, int8 requantization to the upper one"
    )


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """A range that contains 0 (TFLite needs zero exactly representable) with a margin."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.05 * (hi - lo) or 1.0
    return lo - (pad if lo < 0 else 0.0), hi + pad


def rewrite_model(
    model: keras.Model,
    plans: list[LayerPlan],
    *,
    calibration_data: Any = None,
    calibration_samples: int = 64,
    seed: int = 0,
) -> tuple[keras.Model, list[str]]:
    """Build a new model with the planned rewrites applied; the original is unchanged.

    Args:
        model: a functional or Sequential Keras model.
        plans: from :func:`plan_layers`.
        calibration_data: representative inputs (array or list of arrays) for the ranges of
            int8 activations; ``None``: ``calibration_samples`` standard-normal inputs.

    Returns:
        ``(new_model, notes)``: notes say what was assumed (e.g. random calibration data).
    """
    notes: list[str] = []
    todo = {p.name: p for p in plans if p.rewrite}
    if not todo:
        return model, notes
    if _functional(model) is None:
        raise ValueError(
            "Expected a Sequential or functional Keras model to rewrite. Received a subclassed "
            f"model {type(model).__name__!r}; convert with rewrite=False or build it functionally"
        )
    by_name = {layer.name: layer for layer in model.layers}
    missing = [n for n in todo if n not in by_name]
    if missing:
        raise ValueError(
            f"Layers {missing} are nested in sub-models; only top-level layers are rewritten"
        )
    int8_layers = [by_name[n] for n, p in todo.items() if p.rewrite == "int8"]
    ranges: dict = {}
    if int8_layers:
        inputs = _calibration_inputs(model, calibration_data, calibration_samples, seed)
        if calibration_data is None:
            notes.append(
                f"int8 activation ranges calibrated on {calibration_samples} random standard-"
                "normal inputs (pass calibration data for ranges that match real inputs)"
            )

    nodes = _nodes_by_layer(model)
    consumers = _consumers(model)
    folded = {layer.name: _foldable_batchnorm(layer, consumers, nodes) for layer in int8_layers}
    folded = {k: v for k, v in folded.items() if v is not None}
    if int8_layers:
        ranges = _layer_io_ranges(model, int8_layers + list(folded.values()), inputs)
    # what reads a layer's output once its BatchNorm is folded in: the BatchNorm's readers
    readers = {
        name: consumers[folded[name].name] if name in folded else consumers[name]
        for name in (layer.name for layer in int8_layers)
    }
    codes = _code_links(int8_layers, readers, consumers)
    code_readers = {r for link in codes.values() for r in link[3]}
    approximate = []
    replaced: dict[str, keras.layers.Layer] = {}
    folded_bn_names = {bn.name for bn in folded.values()}

    def clone(layer):
        plan = todo.get(layer.name)
        if layer.name in folded_bn_names:
            new = FoldedBatchNorm(name=layer.name)
        elif plan is None:
            new = layer.__class__.from_config(layer.get_config())
        elif plan.rewrite == "dense_as_bconv":
            new = BinaryDenseAsConv.from_layer(layer)
        else:
            in_lo, in_hi = ranges[layer.name][:2]
            exact_in = _activation_range(layer.input_quantizer)
            in_range = exact_in if exact_in else (*_widen(in_lo, in_hi), False)
            if layer.name in code_readers:
                u = _code_grid(layer.input_quantizer)[0]
                in_range = (0.0, 255.0 * u, False)
            bn = folded.get(layer.name)
            clip, signs_only, out_why = None, False, None
            if layer.name in codes:
                u, n, out_why, _ = codes[layer.name]
                out_range, clip = (0.0, 255.0 * u), n * u
            else:
                out_range = _exact_output_range(layer, {layer.name: readers[layer.name]})
                signs_only = out_range is None and _only_signs_read(readers[layer.name])
                if out_range is None:
                    out_range = _widen(*ranges[(bn or layer).name][2:])
                    if not signs_only:
                        out_why = "output requantized to a calibrated int8 range"
            if out_why is None and not signs_only:
                u_out = _cpq_reader_unit(readers[layer.name], consumers)
                if u_out is not None:
                    out_why = _cpq_tie_problem(layer, bn, u_out)
            new = Int8Layer.from_layer(
                layer,
                in_range,
                out_range,
                batchnorm=bn,
                sign_safe=signs_only,
                output_clip=clip,
                input_codes=layer.name in code_readers,
            )
            why = [
                reason
                for reason, applies in (
                    ("weights are not on an int8 grid (run tfquant.finalize?)", not new.exact),
                    ("float or scaled input (calibrated range)", exact_in is None),
                    (out_why, out_why is not None),
                )
                if applies
            ]
            plan.exact = not why
            if why:
                approximate.append(f"{layer.name}: " + ", ".join(why))
            if bn is not None:
                plan.rewrite = "int8+batchnorm"
        replaced[layer.name] = new
        return new

    new_model = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name not in todo and layer.name not in folded_bn_names and layer.weights:
            replaced[layer.name].set_weights(layer.get_weights())
    if approximate:
        notes.append("int8 layers that round (not bit-exact): " + "; ".join(approximate))
    return new_model, notes
