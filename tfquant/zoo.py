"""A small zoo of LCE-friendly quantized networks for small images, built for a method.

Every binary convolution follows shared/LCE.md: sign inputs and kernels, ``padding="same"``
with ``pad_values=1.0``, input channels a multiple of 32, BatchNorm after the convolution.
The first layer stays float (8-bit on device is a converter option) and the classifier is
a float Dense on globally pooled features. BatchNorm is synchronized: under a
``tf.distribute`` strategy each replica then normalises with the global batch's moments, so
training matches one device; on one device it is ordinary BatchNorm.

The method chooses the hidden convolutions' input and kernel quantizers
(:func:`quantizers_for`): sign inputs and sign (or scaled-sign) kernels for the binary
methods; TSQ's sparse 2-bit codes and per-channel ternary kernels for ``"tsq"``; none for
``"float"``, the reference every method is compared with, where a ReLU takes the place of
the input quantizer as the nonlinearity. Networks whose hidden inputs are not signs
(``tsq``, ``float``) also pass the last block through a ReLU before pooling, so the
classifier reads a float ReLU output (TSQ's AlexNet: fc7 -> BN -> ReLU, float, -> fc8);
the stem's input and the classifier's input stay float in every method, as the TSQ
authors did.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from tfquant import quantizers
from tfquant._keras import keras
from tfquant.layers import QuantConv2D

__all__ = ["MODELS", "METHOD_QUANTIZERS", "quantizers_for", "build", "binary_cnn", "bireal_cnn"]


def _tsq_quantizers():
    return (
        quantizers.SparseQuantizer(2, *quantizers.sparse_fixed_point(2)),
        quantizers.SteTernary(method="optimal"),
    )


def _cpq_quantizers(bits: int = 3, dropbits: str | None = "A", learn_bits: bool = False):
    # CPQ (CPQ.md): unsigned codes for the (BN output) inputs, signed codes for the kernels,
    # each grid's step set from its first training batch (alpha=None). DropBits and the
    # learned bit-widths act on the weights only (CPQ.md 4, 5: SECONDARY).
    return (
        quantizers.CPQQuantizer(bits, signed=False, alpha=None, dropbits=None),
        quantizers.CPQQuantizer(
            bits, signed=True, alpha=None, dropbits=dropbits, learn_bits=learn_bits
        ),
    )


def _dorefa_quantizers(bits: int = 2):
    return (
        quantizers.UniformQuantizer(bits, mode="activation"),
        quantizers.UniformQuantizer(bits, mode="weight"),
    )


# method -> (**options) -> (input quantizer, kernel quantizer) of the hidden convolutions
METHOD_QUANTIZERS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "ste": lambda: ("ste_sign", "ste_sign"),
    "md-tanh-s": lambda: ("ste_sign", "ste_sign"),
    "md-softmax-s": lambda: ("ste_sign", "ste_sign"),
    # BinaryRelax relaxes a scaled binary quantizer (the paper's)
    "binary-relax": lambda: ("ste_sign", "scaled_sign"),
    # TSQ: sparse 2-bit codes and per-channel ternary kernels by the exact least-squares
    # approximation (TSQ.md 3.6). The threshold is the fixed point eps = d*(eps)/2 = 0.3254
    # (step 0.6508), where int8 export is bit-exact; the released AlexNet's 0.32 lies 0.005
    # below it and exports with a band (0.32, 0.3244] rounded the other way (TSQ.md 2.4, 8).
    "tsq": _tsq_quantizers,
    # CPQ with DropBits (options bits=3, dropbits="A" | "B" | None, learn_bits=False)
    "cpq": _cpq_quantizers,
    # DoReFa-Net's k-bit activations and weights with STE (option bits=2): CPQ's baseline
    "dorefa": _dorefa_quantizers,
    "float": lambda: (None, None),
}


def quantizers_for(
    method: str, **options: Any
) -> tuple[quantizers.Quantizer | None, quantizers.Quantizer | None]:
    """Fresh ``(input_quantizer, kernel_quantizer)`` of the hidden convolutions for a training
    method (see :data:`METHOD_QUANTIZERS`); ``(None, None)`` for ``"float"``. ``options`` go
    to the method's factory: ``bits`` for ``"cpq"`` and ``"dorefa"``, ``dropbits`` and
    ``learn_bits`` for ``"cpq"``."""
    if method not in METHOD_QUANTIZERS:
        raise ValueError(f"Unknown method {method!r}. Expected one of {sorted(METHOD_QUANTIZERS)}.")
    factory = METHOD_QUANTIZERS[method]
    accepted = inspect.signature(factory).parameters
    if set(options) - set(accepted):
        raise ValueError(
            f"Expected options of method {method!r} among {sorted(accepted) or 'none'}. "
            f"Received: {sorted(options)}"
        )
    inp, kernel = factory(**options)
    return quantizers.get(inp), quantizers.get(kernel)


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


def _qconv(filters: int, input_quantizer, kernel_quantizer, name: str):
    """A hidden 3x3 convolution. Sign inputs pad with ones (LCE's fast path); other inputs
    pad with zeros; without an input quantizer a ReLU is the nonlinearity before it."""
    input_quantizer = _fresh(input_quantizer)
    conv = QuantConv2D(
        filters,
        3,
        padding="same",
        pad_values=1.0 if _is_sign(input_quantizer) else 0.0,
        input_quantizer=input_quantizer,
        kernel_quantizer=_fresh(kernel_quantizer),
        use_bias=False,
        name=name,
    )
    if input_quantizer is not None:
        return conv
    relu = keras.layers.ReLU(name=f"{name}_relu")
    return lambda x: conv(relu(x))


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(synchronized=True, name=name)


def _stem(inputs, width: int):
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    return keras.layers.MaxPooling2D(2, name="stem_pool")(x)


def _head(x, classes: int, input_quantizer="ste_sign"):
    if not _is_sign(input_quantizer):
        x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(classes, activation="softmax", name="classifier")(x)


def binary_cnn(
    input_shape=(28, 28, 1),
    classes: int = 10,
    kernel_quantizer="ste_sign",
    widths=(64, 128),
    input_quantizer="ste_sign",
) -> keras.Model:
    """A plain CNN (the shape of larq's tutorial network, LCE-friendly): float stem, then
    per stage two quantized 3x3 convolutions with BatchNorm, max pooling between stages.
    Binary by default; the quantizers (:func:`quantizers_for`) make its other forms."""
    inputs = keras.Input(input_shape)
    x = _stem(inputs, 32)
    for s, width in enumerate(widths):
        for b in range(2):
            x = _qconv(width, input_quantizer, kernel_quantizer, f"s{s}_conv{b}")(x)
            x = _bn(f"s{s}_bn{b}")(x)
        if s < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    return keras.Model(inputs, _head(x, classes, input_quantizer), name="binary_cnn")


def bireal_cnn(
    input_shape=(28, 28, 1),
    classes: int = 10,
    kernel_quantizer="ste_sign",
    widths=(64, 128),
    blocks: int = 2,
    input_quantizer="ste_sign",
) -> keras.Model:
    """A binary CNN with Bi-Real Net's real-valued shortcuts around each binary conv.

    Per stage: one binary conv that changes the width (no shortcut), then ``blocks`` binary
    convs each wrapped as ``x + BN(bconv(x))``: the float shortcut carries the information
    the sign throws away, which speeds training markedly (Liu et al., ECCV 2018).
    """
    inputs = keras.Input(input_shape)
    x = _stem(inputs, 32)
    for s, width in enumerate(widths):
        x = _qconv(width, input_quantizer, kernel_quantizer, f"s{s}_expand")(x)
        x = _bn(f"s{s}_expand_bn")(x)
        for b in range(blocks):
            y = _qconv(width, input_quantizer, kernel_quantizer, f"s{s}_conv{b}")(x)
            y = _bn(f"s{s}_bn{b}")(y)
            x = keras.layers.Add(name=f"s{s}_add{b}")([x, y])
        if s < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    return keras.Model(inputs, _head(x, classes, input_quantizer), name="bireal_cnn")


MODELS: dict[str, Callable[..., keras.Model]] = {"binary_cnn": binary_cnn, "bireal_cnn": bireal_cnn}


def build(
    name: str, method: str | None = None, method_options: dict | None = None, **kwargs
) -> keras.Model:
    """Build a zoo model by name; ``method`` (a key of :data:`METHOD_QUANTIZERS`) chooses
    its ``input_quantizer`` and ``kernel_quantizer`` (not to be passed with it), with
    ``method_options`` (e.g. ``{"bits": 3}`` for ``"cpq"``).

    >>> model = build("binary_cnn", method="tsq", input_shape=(8, 8, 1))
    >>> [type(q).__name__ for q in (model.get_layer("s0_conv0").input_quantizer,
    ...                             model.get_layer("s0_conv0").kernel_quantizer)]
    ['SparseQuantizer', 'SteTernary']
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Expected one of {sorted(MODELS)}.")
    if method is not None:
        clash = sorted({"input_quantizer", "kernel_quantizer"} & set(kwargs))
        if clash:
            raise ValueError(
                f"Expected either method= or {' and '.join(clash)}=, not both. Received "
                f"method={method!r} and {clash}"
            )
        kwargs["input_quantizer"], kwargs["kernel_quantizer"] = quantizers_for(
            method, **(method_options or {})
        )
    elif method_options:
        raise ValueError(f"Expected method_options only with a method. Received: {method_options}")
    return MODELS[name](**kwargs)
