"""The building blocks the zoo's networks share: quantized convolutions and Dense layers in
the form LCE's converter fuses, BatchNorm, the small networks' stem and head, and the checks
of ``width`` and ``input_shape``.

Package-private (the networks in :mod:`tfquant.zoo.small` and :mod:`tfquant.zoo.papers`
import it). Imports :mod:`tfquant.quantizers`, :mod:`tfquant.layers` and Keras only.
"""

from __future__ import annotations

from tfquant import quantizers
from tfquant._keras import keras
from tfquant.layers import QuantConv2D, QuantDense


def _is_sign(quantizer) -> bool:
    q = quantizers.get(quantizer)
    return q is not None and tuple(q.levels or ()) == (-1.0, 1.0)


def _fresh(quantizer):
    """A new quantizer per layer (a quantizer with weights, CPQ's grid, must not be shared)."""
    q = quantizers.get(quantizer)
    if q is None:
        return None
    config = quantizers.serialize(q)
    config["config"] = {k: v for k, v in config["config"].items() if k != "name"}  # unique names
    return quantizers.get(config)


def _qconv(
    filters: int,
    input_quantizer,
    kernel_quantizer,
    name: str,
    kernel_size: int = 3,
    strides: int = 1,
    padding: str = "same",
    activation: str | None = None,
):
    """A hidden quantized convolution (3x3, stride 1, "same" unless told). Sign inputs pad
    with ones (LCE's fast path); other inputs pad with zeros; without an input quantizer a
    ReLU is the nonlinearity before it."""
    input_quantizer = _fresh(input_quantizer)
    conv = QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        pad_values=1.0 if _is_sign(input_quantizer) else 0.0,
        input_quantizer=input_quantizer,
        kernel_quantizer=_fresh(kernel_quantizer),
        activation=activation,
        use_bias=False,
        name=name,
    )
    return _relu_unless_quantized(conv, input_quantizer, name)


def _relu_unless_quantized(layer, input_quantizer, name: str):
    """``layer``, or without an input quantizer ``layer`` after a ReLU (the nonlinearity)."""
    if input_quantizer is not None:
        return layer
    relu = keras.layers.ReLU(name=f"{name}_relu")
    return lambda x: layer(relu(x))


def _bn(name: str, affine: bool = True) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        synchronized=True, center=affine, scale=affine, name=name
    )


def _stem(inputs, width: int):
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    return keras.layers.MaxPooling2D(2, name="stem_pool")(x)


def _head(x, classes: int, input_quantizer="ste_sign"):
    if not _is_sign(input_quantizer):
        x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(classes, activation="softmax", name="classifier")(x)


def _hidden(n: int, width: float, multiple: int = 32) -> int:
    """A hidden width ``n`` scaled by ``width``, rounded to a multiple of ``multiple`` (LCE's
    fastest binary kernels read input channels in multiples of 32), at least ``multiple``."""
    return max(multiple, int(round(n * width / multiple)) * multiple)


def _check_width(width: float) -> float:
    try:
        width = float(width)
    except (TypeError, ValueError):
        width = float("nan")
    if not width > 0:
        raise ValueError(f"Expected width a positive number. Received: width={width!r}")
    return width


def _spatial(input_shape, name: str) -> int:
    if len(input_shape) != 3:
        raise ValueError(
            f"Expected input_shape (height, width, channels) for {name}. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    sides = [s for s in input_shape[:2] if s is not None]
    return min(sides) if sides else 0


def _qdense(units: int, input_quantizer, kernel_quantizer, name: str):
    """A hidden quantized Dense without bias (BatchNorm follows). Without an input quantizer a
    ReLU is the nonlinearity before it, as for :func:`_qconv`. A binary one becomes
    ``LceBconv2d`` through :mod:`tfquant.converters.rewrite` (LCE issue 53)."""
    input_quantizer = _fresh(input_quantizer)
    dense = QuantDense(
        units,
        input_quantizer=input_quantizer,
        kernel_quantizer=_fresh(kernel_quantizer),
        use_bias=False,
        name=name,
    )
    return _relu_unless_quantized(dense, input_quantizer, name)


def _check_plain_input(name: str, input_shape, minimum: int) -> None:
    side = _spatial(input_shape, name)
    if side and side < minimum:
        raise ValueError(
            f"Expected an input of at least {minimum}x{minimum} for {name}. "
            f"Received: input_shape={tuple(input_shape)}"
        )
