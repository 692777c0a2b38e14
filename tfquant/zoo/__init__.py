"""A zoo of LCE-friendly quantized networks, built for a method.

Two small networks for quick experiments (:func:`binary_cnn`, :func:`bireal_cnn`) and the
papers' networks: :func:`resnet18` (Bi-Real layout; MD, CPQ), :func:`vgg7` and
:func:`lenet5` (RQ / CPQ), :func:`alexnet_bn` (TSQ) and :func:`quicknet_small` (LCE's
QuickNet-small). Each takes ``input_shape``, ``classes``, ``input_quantizer``,
``kernel_quantizer`` (set by :func:`build`'s ``method``) and, for the papers' networks, a
``width`` multiplier of every hidden width (rounded to a multiple of 32) for quick runs.

Every binary convolution takes the form LCE's converter fuses into its binary convolution:
sign inputs and kernels, ``padding="same"`` with ``pad_values=1.0``, input channels a
multiple of 32, BatchNorm after the convolution.
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

The package: :mod:`~tfquant.zoo.builder` (:func:`build`, :data:`MODELS`, the method's
quantizers), :mod:`~tfquant.zoo.small` and :mod:`~tfquant.zoo.papers` (the networks) over
:mod:`~tfquant.zoo.blocks` (the layers they share). It imports :mod:`tfquant.methods`,
:mod:`tfquant.quantizers`, :mod:`tfquant.layers` and Keras, never the data, the converter,
training or the CLI.
"""

from __future__ import annotations

from tfquant.zoo.builder import METHOD_QUANTIZERS, MODELS, build, quantizers_for
from tfquant.zoo.papers import (
    ALEXNET_MIN_INPUT,
    alexnet_bn,
    lenet5,
    quicknet_small,
    resnet18,
    vgg7,
)
from tfquant.zoo.small import binary_cnn, bireal_cnn

__all__ = [
    "MODELS",
    "METHOD_QUANTIZERS",
    "quantizers_for",
    "build",
    "binary_cnn",
    "bireal_cnn",
    "resnet18",
    "vgg7",
    "lenet5",
    "alexnet_bn",
    "quicknet_small",
    "ALEXNET_MIN_INPUT",
]
