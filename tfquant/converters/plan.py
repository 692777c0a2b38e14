"""The plan: which kernel each tfquant layer should become, read from its quantizers' grids.

A layer whose input and kernel quantizers are 1-bit signs becomes a binary kernel
(``LceBconv2d``; a binary Dense through the 1x1-convolution rewrite, LCE issue 53) when its
effective kernel is ``+-alpha`` per output channel; a ternary or k-bit (2 to 8 bits) layer
becomes an int8 kernel (LCE issue 806) when its input is quantized on an exact int8 grid,
or when named; every other layer stays float, with the reason. The plan reads only what
the quantizers declare (precision and :class:`tfquant.quantizers.Grid`), never their class.

May import: ``tfquant.converters.int8``, ``tfquant.graph``, ``tfquant.layers``,
``tfquant.models``, ``tfquant._keras`` and numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfquant._keras import keras
from tfquant.converters.int8 import activation_range, effective_kernel, input_is_sign
from tfquant.graph import input_shape, nodes_by_layer
from tfquant.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D, QuantizerMixin
from tfquant.models import quantized_layers

__all__ = ["LayerPlan", "binary_kernel_problem", "plan_layers"]

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
            learned precision, such as CPQ's learned bit-width, as it is now).
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


def _binary_problem(layer: QuantizerMixin, shape: tuple | None) -> str | None:
    if isinstance(layer, QuantDepthwiseConv2D):
        return "LCE has no binary depthwise convolution kernel"
    if not input_is_sign(layer):
        return "its input quantizer is not a plain sign (levels -1, +1)"
    problem = binary_kernel_problem(effective_kernel(layer))
    if problem:
        return problem
    if isinstance(layer, QuantDense) and shape is not None and len(shape) != 2:
        return f"binary Dense on a rank-{len(shape)} input; only rank 2 is rewritten"
    if isinstance(layer, QuantConv2D) and layer.groups != 1:
        cin = effective_kernel(layer).shape[2]
        if cin % 32:
            return (
                f"grouped binary convolution needs input channels per group % 32 == 0 (has {cin})"
            )
    return None


def _int8_problem(layer: QuantizerMixin, shape: tuple | None) -> str | None:
    if isinstance(layer, QuantDepthwiseConv2D):
        return "int8 export of depthwise convolutions is not implemented"
    if isinstance(layer, QuantConv2D) and layer.groups != 1:
        return "int8 export of grouped convolutions is not implemented"
    if isinstance(layer, QuantDense) and shape is not None and len(shape) != 2:
        return f"int8 export of Dense on a rank-{len(shape)} input is not implemented"
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
    nodes = nodes_by_layer(model)
    plans = []
    for layer in quantized_layers(model):
        declared = _declared(layer)
        shape = input_shape(layer, nodes)
        plan = LayerPlan(
            layer.name,
            type(layer).__name__,
            declared,
            "float",
            weight_bits=int(layer.kernel_precision),
            input_bits=int(layer.input_precision),
        )
        if declared == "binary":
            problem = _binary_problem(layer, shape)
            if problem is None:
                plan.target = "binary"
                if isinstance(layer, QuantDense):
                    plan.rewrite = "dense_as_bconv"
            else:
                plan.reason = problem
        named = isinstance(int8, (list, tuple)) and layer.name in int8
        # "auto" takes only layers whose inputs are exact int8 codes too (quantized by an
        # unscaled quantizer): a float input would be rounded to a calibrated range.
        exact_input = activation_range(layer.input_quantizer) is not None
        auto = int8 == "auto" and declared == "k-bit"
        if plan.target == "float" and (named or (auto and exact_input)):
            problem = _int8_problem(layer, shape)
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
