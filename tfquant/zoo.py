"""A small zoo of LCE-friendly binary networks for small images.

Every binary convolution follows shared/LCE.md: sign inputs and kernels, ``padding="same"``
with ``pad_values=1.0``, input channels a multiple of 32, BatchNorm after the convolution.
The first layer stays float (8-bit on device is a converter option) and the classifier is
a float Dense on globally pooled features. BatchNorm is synchronized: under a
``tf.distribute`` strategy each replica then normalises with the global batch's moments, so
training matches one device; on one device it is ordinary BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable

from tfquant._keras import keras
from tfquant.layers import QuantConv2D

__all__ = ["MODELS", "build", "binary_cnn", "bireal_cnn"]


def _binary_conv(filters: int, kernel_quantizer, name: str) -> QuantConv2D:
    return QuantConv2D(
        filters,
        3,
        padding="same",
        pad_values=1.0,
        input_quantizer="ste_sign",
        kernel_quantizer=kernel_quantizer,
        use_bias=False,
        name=name,
    )


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(synchronized=True, name=name)


def _stem(inputs, width: int):
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    return keras.layers.MaxPooling2D(2, name="stem_pool")(x)


def _head(x, classes: int):
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(classes, activation="softmax", name="classifier")(x)


def binary_cnn(
    input_shape=(28, 28, 1), classes: int = 10, kernel_quantizer="ste_sign", widths=(64, 128)
) -> keras.Model:
    """A plain binary CNN (the shape of larq's tutorial network, LCE-friendly): float stem,
    then per stage two binary 3x3 convolutions with BatchNorm, max pooling between stages."""
    inputs = keras.Input(input_shape)
    x = _stem(inputs, 32)
    for s, width in enumerate(widths):
        for b in range(2):
            x = _binary_conv(width, kernel_quantizer, f"s{s}_conv{b}")(x)
            x = _bn(f"s{s}_bn{b}")(x)
        if s < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    return keras.Model(inputs, _head(x, classes), name="binary_cnn")


def bireal_cnn(
    input_shape=(28, 28, 1),
    classes: int = 10,
    kernel_quantizer="ste_sign",
    widths=(64, 128),
    blocks: int = 2,
) -> keras.Model:
    """A binary CNN with Bi-Real Net's real-valued shortcuts around each binary conv.

    Per stage: one binary conv that changes the width (no shortcut), then ``blocks`` binary
    convs each wrapped as ``x + BN(bconv(x))``: the float shortcut carries the information
    the sign throws away, which speeds training markedly (Liu et al., ECCV 2018).
    """
    inputs = keras.Input(input_shape)
    x = _stem(inputs, 32)
    for s, width in enumerate(widths):
        x = _binary_conv(width, kernel_quantizer, f"s{s}_expand")(x)
        x = _bn(f"s{s}_expand_bn")(x)
        for b in range(blocks):
            y = _binary_conv(width, kernel_quantizer, f"s{s}_conv{b}")(x)
            y = _bn(f"s{s}_bn{b}")(y)
            x = keras.layers.Add(name=f"s{s}_add{b}")([x, y])
        if s < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    return keras.Model(inputs, _head(x, classes), name="bireal_cnn")


MODELS: dict[str, Callable[..., keras.Model]] = {"binary_cnn": binary_cnn, "bireal_cnn": bireal_cnn}


def build(name: str, **kwargs) -> keras.Model:
    """Build a zoo model by name."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Expected one of {sorted(MODELS)}.")
    return MODELS[name](**kwargs)
