"""The papers' networks: :func:`resnet18` (Bi-Real layout; MD, CPQ), :func:`vgg7` and
:func:`lenet5` (RQ / CPQ), :func:`alexnet_bn` (TSQ) and :func:`quicknet_small` (LCE's
QuickNet-small), each with a ``width`` multiplier of every hidden width for quick runs.

Imports :mod:`tfquant.zoo.blocks` and Keras only.
"""

from __future__ import annotations

import numpy as np

from tfquant._keras import keras
from tfquant.zoo.blocks import (
    _bn,
    _check_plain_input,
    _check_width,
    _head,
    _hidden,
    _is_sign,
    _qconv,
    _qdense,
    _spatial,
)


def resnet18(
    input_shape=(32, 32, 3),
    classes: int = 10,
    kernel_quantizer="ste_sign",
    input_quantizer="ste_sign",
    width: float = 1.0,
    stem: str = "auto",
) -> keras.Model:
    """ResNet-18 (He et al., 2016), binary in the Bi-Real Net way (Liu et al., ECCV 2018).

    Layout: ResNet-18's BasicBlocks (2-2-2-2, widths 64-128-256-512), with each of the 16
    hidden 3x3 convolutions wrapped by its own float shortcut, ``x + BN(qconv(x))``, as
    larq-zoo's ``BiRealNet`` (larq_zoo/literature/birealnet.py, read at source) does. Where a
    stage starts, the quantized conv has stride 2 and the shortcut is
    ``AveragePooling2D(2, "same") -> 1x1 float Conv2D -> BN`` (Bi-Real, larq-zoo's
    BinaryResNetE18). The stem, the shortcuts' 1x1 convs and the classifier stay float, as
    in larq-zoo and LCE's deployed networks (at ImageNet size: 6% of the parameters and 8%
    of the MACs, but two thirds of the bit-packed size). The MD authors' code differs there:
    it quantizes the weights of every layer, first and last included, and keeps float ReLU
    activations (their released code); quantize those two layers yourself to match it. The
    Bi-Real layout has no ReLU in the stem or before pooling for sign inputs; under non-sign
    methods each hidden conv reads a ReLU (:func:`_qconv`) and so does the head.

    Stems: ``"cifar"``, a 3x3 stride-1 float conv + BN without max pooling (the usual
    CIFAR ResNet-18 of kuangliu/pytorch-cifar; the MD paper does not state its
    stem); ``"imagenet"``, a 7x7 stride-2 float
    conv + BN + 3x3 stride-2 max pooling; ``"auto"`` takes ``"cifar"`` for inputs under
    64 px and ``"imagenet"`` otherwise. With the ImageNet stem and 1000 classes the network
    has exactly torchvision's ResNet-18 trainable parameters (11,689,512) and larq-zoo's
    BiRealNet total (11,699,112, BatchNorm statistics included).

    Args:
        input_shape, classes, kernel_quantizer, input_quantizer: as :func:`binary_cnn`.
        width: multiplier of every hidden width (rounded to a multiple of 32).
        stem: ``"auto"``, ``"cifar"`` or ``"imagenet"``.

    Raises:
        ValueError: an unknown ``stem`` or a non-positive ``width``.
    """
    width = _check_width(width)
    if stem not in ("auto", "cifar", "imagenet"):
        raise ValueError(f"Expected stem 'auto', 'cifar' or 'imagenet'. Received: stem={stem!r}")
    if stem == "auto":
        side = _spatial(input_shape, "resnet18")
        stem = "cifar" if side and side < 64 else "imagenet"
    widths = [_hidden(w, width) for w in (64, 128, 256, 512)]
    inputs = keras.Input(input_shape)
    if stem == "cifar":
        x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem_conv")(
            inputs
        )
        x = _bn("stem_bn")(x)
    else:
        x = keras.layers.Conv2D(
            widths[0], 7, strides=2, padding="same", use_bias=False, name="stem_conv"
        )(inputs)
        x = _bn("stem_bn")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, filters in enumerate(widths):
        for b in range(4):  # two BasicBlocks of two convs, each conv with its shortcut
            name = f"s{s}_conv{b}"
            shortcut = x
            strides = 1
            if x.shape[-1] != filters:
                strides = 2
                shortcut = keras.layers.AveragePooling2D(
                    2, strides=2, padding="same", name=f"{name}_down_pool"
                )(x)
                shortcut = keras.layers.Conv2D(
                    filters, 1, use_bias=False, name=f"{name}_down_conv"
                )(shortcut)
                shortcut = _bn(f"{name}_down_bn")(shortcut)
            y = _qconv(filters, input_quantizer, kernel_quantizer, name, strides=strides)(x)
            y = _bn(f"{name}_bn")(y)
            x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.Model(inputs, _head(x, classes, input_quantizer), name="resnet18")


def _plain_net(
    name: str,
    input_shape,
    classes: int,
    input_quantizer,
    kernel_quantizer,
    stages,
    kernel_size: int,
    padding: str,
    fc: int,
) -> keras.Model:
    """conv -> BN (-> max pool) stages, the first conv float, then Flatten -> quantized FC ->
    BN -> float softmax classifier (RQ's "conv -> BN -> quantize")."""
    inputs = keras.Input(input_shape)
    x = inputs
    n = 0
    for s, (convs, filters) in enumerate(stages):
        for _ in range(convs):
            if n == 0:
                x = keras.layers.Conv2D(
                    filters, kernel_size, padding=padding, use_bias=False, name="conv0"
                )(x)
            else:
                x = _qconv(
                    filters,
                    input_quantizer,
                    kernel_quantizer,
                    f"conv{n}",
                    kernel_size=kernel_size,
                    padding=padding,
                )(x)
            x = _bn(f"conv{n}_bn")(x)
            n += 1
        x = keras.layers.MaxPooling2D(2, name=f"pool{s}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _qdense(fc, input_quantizer, kernel_quantizer, "fc")(x)
    x = _bn("fc_bn")(x)
    if not _is_sign(input_quantizer):
        x = keras.layers.ReLU(name="head_relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def vgg7(
    input_shape=(32, 32, 3),
    classes: int = 10,
    kernel_quantizer="ste_sign",
    input_quantizer="ste_sign",
    width: float = 1.0,
) -> keras.Model:
    """VGG-7 of RQ and CPQ (CIFAR-10): 2x(128C3)-MP2-2x(256C3)-MP2-2x(512C3)-MP2-1024FC-Softmax.

    Layout of Relaxed Quantization (Louizos et al. 2019), which CPQ's experiments reuse
    (``docs/methods.md#cpq-and-dropbits``), "conv -> BN -> quantize", no biases before BN.
    The hidden FC (1024) is a
    ``QuantDense`` with the method's quantizers (binary: ``LceBconv2d`` through the
    converter's rewrite). tfquant keeps the first conv and the classifier float, as
    everywhere in the zoo; RQ/CPQ quantize those too (their "all layers" setting),
    which a user can reproduce with their own quantized first layer. Convs are 3x3 "same"
    (binary: padded with ones, LCE's fast path). ``width`` scales the conv and FC widths.

    Raises:
        ValueError: an input under 8x8 (three 2x2 pools) or a non-positive ``width``.
    """
    width = _check_width(width)
    _check_plain_input("vgg7", input_shape, 8)
    stages = [(2, _hidden(w, width)) for w in (128, 256, 512)]
    return _plain_net(
        "vgg7",
        input_shape,
        classes,
        input_quantizer,
        kernel_quantizer,
        stages,
        3,
        "same",
        _hidden(1024, width),
    )


def lenet5(
    input_shape=(28, 28, 1),
    classes: int = 10,
    kernel_quantizer="ste_sign",
    input_quantizer="ste_sign",
    width: float = 1.0,
) -> keras.Model:
    """LeNet-5-Caffe of RQ and CPQ for MNIST: 32C5-MP2-64C5-MP2-512FC-Softmax.

    Layout of Relaxed Quantization, which CPQ's experiments reuse, BN after each conv and the
    FC (RQ's "conv -> BN -> quantize"; the BN is tfquant's choice for the binary and k-bit
    forms, RQ's LeNet table does not state it). 5x5 convs with VALID padding as in Caffe's
    LeNet (28 -> 24 -> 12 -> 8 -> 4); VALID needs no pad value, so the binary conv is on
    LCE's path as it is. The first conv and the classifier stay float (the zoo's rule; RQ
    quantizes them too); the second conv and the 512 FC take the method's quantizers.

    Raises:
        ValueError: an input under 16x16 (two valid 5x5 convs, two 2x2 pools) or a
            non-positive ``width``.
    """
    width = _check_width(width)
    _check_plain_input("lenet5", input_shape, 16)
    stages = [(1, _hidden(32, width)), (1, _hidden(64, width))]
    return _plain_net(
        "lenet5",
        input_shape,
        classes,
        input_quantizer,
        kernel_quantizer,
        stages,
        5,
        "valid",
        _hidden(512, width),
    )


# The smallest side for which every AlexNet pool has its 3x3 window: 67 -> conv1 15 -> pool1 7
# -> pool2 3 -> pool5 1 (66 -> 14 -> 6 -> 2 leaves pool5 nothing).
ALEXNET_MIN_INPUT = 67


def alexnet_bn(
    input_shape=(227, 227, 3),
    classes: int = 1000,
    kernel_quantizer="ste_sign",
    input_quantizer="ste_sign",
    width: float = 1.0,
) -> keras.Model:
    """AlexNet-BN as TSQ released it (Wang et al., CVPR 2018; read from the
    first author's ``test_2_ternary.prototxt``).

    ``conv1(96, 11x11/4) -> BN -> maxpool -> Q``, ``conv2(256, 5x5, pad 2) -> BN -> maxpool
    -> Q``, ``conv3(384) -> BN -> Q``, ``conv4(384) -> BN -> Q``, ``conv5(256) -> BN ->
    maxpool -> Q``, ``fc6(4096) -> BN -> Q``, ``fc7(4096) -> BN -> ReLU`` (float),
    ``fc8 -> BN -> softmax``; max pools 3x3 stride 2 valid, no biases, no conv groups, Caffe
    ``BatchNorm`` without a ``Scale`` layer (so BN here is not affine: ``center=False,
    scale=False``), input 227x227. Q is the method's input quantizer of the next layer
    (pooling before Q, as TSQ). conv1 and fc8 stay float (TSQ's image input and fc8's input
    are float; whether their weights were ternary is not
    stated, ``docs/methods.md#tsq``); conv2-5, fc6 and
    fc7 take the method's quantizers. ``width`` scales conv and fc widths.

    Raises:
        ValueError: an input under 67x67 (the smallest on which every pool has its 3x3
            window); the layout is kept rather than rescaled for small images.
    """
    width = _check_width(width)
    side = _spatial(input_shape, "alexnet_bn")
    if side and (side < ALEXNET_MIN_INPUT):
        raise ValueError(
            f"Expected an input of at least {ALEXNET_MIN_INPUT}x{ALEXNET_MIN_INPUT} for "
            f"alexnet_bn (227x227 in TSQ). Received: input_shape={tuple(input_shape)}"
        )
    iq, kq = input_quantizer, kernel_quantizer
    c = [_hidden(w, width) for w in (96, 256, 384, 384, 256)]
    fc = _hidden(4096, width)
    pool = keras.layers.MaxPooling2D
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(c[0], 11, strides=4, use_bias=False, name="conv1")(inputs)
    x = pool(3, strides=2, name="pool1")(_bn("bn1", affine=False)(x))
    x = _qconv(c[1], iq, kq, "conv2", kernel_size=5)(x)
    x = pool(3, strides=2, name="pool2")(_bn("bn2", affine=False)(x))
    x = _bn("bn3", affine=False)(_qconv(c[2], iq, kq, "conv3")(x))
    x = _bn("bn4", affine=False)(_qconv(c[3], iq, kq, "conv4")(x))
    x = _bn("bn5", affine=False)(_qconv(c[4], iq, kq, "conv5")(x))
    x = pool(3, strides=2, name="pool5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _bn("bn6", affine=False)(_qdense(fc, iq, kq, "fc6")(x))
    x = _bn("bn7", affine=False)(_qdense(fc, iq, kq, "fc7")(x))
    x = keras.layers.ReLU(name="relu7")(x)  # float, as TSQ's nl7
    x = keras.layers.Dense(classes, use_bias=False, name="fc8")(x)
    x = _bn("bn8", affine=False)(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="alexnet_bn")


def _blurpool_kernel(channels: int) -> np.ndarray:
    """larq-zoo's ``blurpool_initializer`` for 3x3 (Zhang, ICML 2019): outer([1,2,1])/16."""
    k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
    k = k / k.sum()
    return np.repeat(k[:, :, None, None], channels, axis=2).astype("float32")


def _quicknet_fits(side: int) -> bool:
    """Whether every transition's 2x2 stride-1 valid max pool sees at least 2x2."""
    size = -(-side // 4)  # two stride-2 "same" layers in the stem
    for _ in range(3):
        if size < 2:
            return False
        size = -(-(size - 1) // 2)
    return True


def quicknet_small(
    input_shape=(224, 224, 3),
    classes: int = 1000,
    kernel_quantizer="ste_sign",
    input_quantizer="ste_sign",
    width: float = 1.0,
) -> keras.Model:
    """QuickNet-small, Larq's LCE-first binary network (larq-zoo ``QuickNetSmall``).

    Layout read from larq-zoo's ``larq_zoo/sota/quicknet.py``: sections of 4, 4, 4, 4
    residual blocks with 32, 64, 256, 512 filters. Stem (float): 3x3/2 conv to filters/4,
    BN, ReLU, 3x3/2 depthwise conv, BN without scale and centre, 1x1 conv, BN. Residual
    block: ``x + BN(relu(qconv3x3(x)))``, the conv with ``activation="relu"`` before BN (the
    order in which LCE fuses the ReLU). Transition where the width changes (float):
    ReLU, 2x2 stride-1 max pool, a frozen 3x3/2 blur-pool depthwise conv
    (``[1,2,1]x[1,2,1]/16``), 1x1 conv, BN. Head: ReLU, global pooling, float Dense,
    softmax. A transition opens each section after the first (larq-zoo: where the width
    changes, the same places at full width; kept so when ``width`` rounds two sections'
    widths to the same multiple of 32). With 224x224 inputs and 1000 classes it has
    larq-zoo's 12,655,688 parameters.

    Reconstructed by tfquant: the quantizers are the method's (larq-zoo: ``SteSign(
    clip_value=1.25)`` for inputs and kernels plus a ``WeightClip(1.25)`` constraint; use
    e.g. ``quantizers.SteSign(clip_value=1.25)`` to match); BatchNorm is the zoo's
    synchronized BN with Keras' defaults (larq-zoo: momentum 0.9, epsilon 1e-5 in the
    blocks); initializers are Keras' defaults; the blur-pool kernel is set after building
    (a frozen weight, so saved models keep it).

    Raises:
        ValueError: an input too small for the transitions' 2x2 max pools (under 29x29).
    """
    width = _check_width(width)
    side = _spatial(input_shape, "quicknet_small")
    if side and not _quicknet_fits(side):
        minimum = next(n for n in range(side, 1024) if _quicknet_fits(n))
        raise ValueError(
            f"Expected an input of at least {minimum}x{minimum} for quicknet_small (224x224 "
            f"in larq-zoo). Received: input_shape={tuple(input_shape)}"
        )
    filters = [_hidden(f, width) for f in (32, 64, 256, 512)]
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(
        filters[0] // 4, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=2, padding="same", use_bias=False, name="stem_depthwise"
    )(x)
    x = _bn("stem_depthwise_bn", affine=False)(x)
    x = keras.layers.Conv2D(filters[0], 1, use_bias=False, name="stem_pointwise")(x)
    x = _bn("stem_pointwise_bn")(x)
    blurs = []
    for s, f in enumerate(filters):
        for b in range(4):
            if s > 0 and b == 0:  # larq-zoo: where the width changes
                x = keras.layers.ReLU(name=f"s{s}_transition_relu")(x)
                x = keras.layers.MaxPooling2D(2, strides=1, name=f"s{s}_transition_pool")(x)
                blur = keras.layers.DepthwiseConv2D(
                    3,
                    strides=2,
                    padding="same",
                    use_bias=False,
                    trainable=False,
                    name=f"s{s}_transition_blurpool",
                )
                blurs.append(blur)
                x = blur(x)
                x = keras.layers.Conv2D(f, 1, use_bias=False, name=f"s{s}_transition_conv")(x)
                x = _bn(f"s{s}_transition_bn")(x)
            name = f"s{s}_conv{b}"
            y = _qconv(f, input_quantizer, kernel_quantizer, name, activation="relu")(x)
            y = _bn(f"{name}_bn")(y)
            x = keras.layers.Add(name=f"{name}_add")([y, x])
    x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="quicknet_small")
    for blur in blurs:
        blur.kernel.assign(_blurpool_kernel(blur.kernel.shape[2]))
    return model
