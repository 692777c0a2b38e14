"""The two small networks for quick experiments: :func:`binary_cnn` (a plain CNN) and
:func:`bireal_cnn` (Bi-Real Net's float shortcuts around each binary convolution).

Imports :mod:`tfquant.zoo.blocks` and Keras only.
"""

from __future__ import annotations

from tfquant._keras import keras
from tfquant.zoo.blocks import _bn, _head, _qconv, _stem


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
