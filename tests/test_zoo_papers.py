"""The zoo's papers' networks: ResNet-18, VGG-7, LeNet-5, AlexNet-BN, QuickNet-small.

Binary (ste) forms train one step and convert through LCE with one ``LceBconv2d`` per
hidden quantized conv or FC (binary FCs through the converter's Dense rewrite); the
ternary / k-bit forms the papers used train one step; full-size parameter counts match the
reference implementations; every network saves and reloads.
"""

import keras
import numpy as np
import pytest

import tfquant
from tfquant import models, zoo
from tfquant.converters.flatbuffer import op_counts

NEW = ("resnet18", "vgg7", "lenet5", "alexnet_bn", "quicknet_small")

# Small shapes that keep the conversions fast; every hidden binary conv still has a multiple
# of 32 input channels (the width multiplier rounds to 32).
SMALL = {
    "resnet18": {"input_shape": (32, 32, 3), "width": 0.5},
    "vgg7": {"input_shape": (32, 32, 3), "width": 0.25},
    "lenet5": {"input_shape": (28, 28, 1), "width": 1.0},
    "alexnet_bn": {"input_shape": (67, 67, 3), "width": 0.125, "classes": 10},
    "quicknet_small": {"input_shape": (32, 32, 3), "width": 0.25, "classes": 10},
}


def _fit_one_step(model, batch=2, optimizer="adam"):
    shape = model.input_shape[1:]
    classes = model.output_shape[-1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    y = rng.integers(0, classes, size=batch)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), loss
    return x


# Expected LceBconv2d per network, from the architecture:
#   ResNet-18: 16 binary 3x3 convs (8 BasicBlocks x 2), stem, 1x1 shortcuts, classifier float.
#   VGG-7: 5 hidden 3x3 convs + the 1024 FC (binary Dense -> 1x1 bconv rewrite) = 6.
#   LeNet-5: the second 5x5 conv + the 512 FC = 2.
#   AlexNet-BN: conv2-conv5 + fc6 + fc7 = 6 (conv1 and fc8 float).
#   QuickNet-small: 4 sections x 4 residual 3x3 convs = 16 (stem, transitions float).
BINARY_OPS = {"resnet18": 16, "vgg7": 6, "lenet5": 2, "alexnet_bn": 6, "quicknet_small": 16}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resnet18", SMALL["resnet18"]),
        ("resnet18", {"input_shape": (64, 64, 3), "width": 0.5}),  # ImageNet stem ("auto")
        *((n, SMALL[n]) for n in NEW[1:]),
    ],
    ids=["resnet18-cifar", "resnet18-imagenet", *NEW[1:]],
)
def test_binary_form_trains_and_every_hidden_conv_becomes_lce_bconv2d(name, kwargs):
    model = zoo.build(name, method="ste", **kwargs)
    _fit_one_step(model)
    ops = op_counts(tfquant.converters.convert(model))
    assert ops.get("LceBconv2d") == BINARY_OPS[name], ops


@pytest.mark.parametrize(
    ("name", "method", "options"),
    [
        ("alexnet_bn", "tsq", {}),  # TSQ's network and method
        ("vgg7", "cpq", {"bits": 3}),  # CPQ / RQ's CIFAR-10 network
        ("lenet5", "cpq", {"bits": 3}),  # CPQ / RQ's MNIST network
        ("lenet5", "dorefa", {"bits": 2}),  # CPQ's baseline
        ("resnet18", "md-tanh-s", {}),  # the MD paper's CIFAR-10 network
    ],
)
def test_papers_forms_train_one_step(name, method, options):
    model = zoo.build(name, method=method, method_options=options or None, **SMALL[name])
    hidden = models.quantized_layers(model)
    assert hidden and all(m.kernel_quantizer is not None for m in hidden)
    optimizer = tfquant.MirrorDescent() if method.startswith("md-") else "adam"
    _fit_one_step(model, optimizer=optimizer)


@pytest.mark.parametrize("name", NEW)
def test_every_method_builds_each_network(name):
    tiny = {**SMALL[name], "width": 0.125}
    for method in zoo.METHOD_QUANTIZERS:
        model = zoo.build(name, method=method, **tiny)
        layers = models.quantized_layers(model)
        assert len(layers) == BINARY_OPS[name], (method, len(layers))
        if method == "float":
            assert all(m.input_quantizer is None and m.kernel_quantizer is None for m in layers)
            # the ReLU takes the sign's place before every hidden layer
            assert sum(isinstance(m, keras.layers.ReLU) for m in model.layers) >= len(layers)
        else:
            assert all(m.kernel_quantizer is not None for m in layers), method
        # no two layers share a quantizer (CPQ's grids are per layer)
        kernels = [id(m.kernel_quantizer) for m in layers if m.kernel_quantizer is not None]
        assert len(set(kernels)) == len(kernels)


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _bn_statistics(model, affine_only=False) -> int:
    return sum(
        2 * int(layer.moving_mean.shape[0])
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and (layer.scale or not affine_only)
    )


def test_full_size_parameter_counts_match_the_references():
    # ResNet-18, ImageNet stem, 1000 classes. torchvision resnet18: 11,689,512 parameters
    # (trainable; torchvision's model card). larq-zoo BiRealNet (the same layout, binary):
    # 11,699,112 (larq_zoo/literature/birealnet.py docstring), which adds the BatchNorm
    # moving statistics.
    imagenet = zoo.build("resnet18", method="ste", input_shape=(224, 224, 3), classes=1000)
    assert _trainable(imagenet) == 11_689_512
    s = models.summary(imagenet, print_fn=None)
    assert s.total_params == 11_699_112
    # The 16 binary convs hold 10,985,472 1-bit weights (9 * sum of cin * cout).
    binary = 9 * (4 * 64 * 64 + (64 * 128 + 3 * 128 * 128) + (128 * 256 + 3 * 256**2))
    binary += 9 * (256 * 512 + 3 * 512**2)
    assert s.layers and sum(r.params.get(1, 0) for r in s.layers) == binary == 10_985_472
    assert imagenet.get_layer("stem_pool") is not None
    # CIFAR ResNet-18 (3x3 stem, 10 classes): 11,173,962 trainable, the count of the common
    # PyTorch CIFAR ResNet-18 (kuangliu/pytorch-cifar, same BasicBlocks and 1x1 shortcuts).
    cifar = zoo.build("resnet18", method="ste")
    assert _trainable(cifar) == 11_173_962
    assert "stem_pool" not in [m.name for m in cifar.layers]

    # VGG-7 (RQ and CPQ papers): weights 3*9*128 + 9*(128^2 + 128*256 + 256^2 + 256*512 + 512^2)
    # + 8192*1024 + 1024*10, no published parameter count; check the layout's arithmetic.
    vgg = zoo.build("vgg7", method="ste")
    convs = 3 * 9 * 128 + 9 * (128 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 512 * 512)
    kernels = convs + 4 * 4 * 512 * 1024 + 1024 * 10
    bn = 2 * (2 * 128 + 2 * 256 + 2 * 512 + 1024)  # gamma, beta
    assert _trainable(vgg) == kernels + 10 + bn

    # LeNet-5-Caffe: 25*32 + 25*32*64 + 1024*512 + 512*10 weights (+ 10 bias + BN).
    lenet = zoo.build("lenet5", method="ste")
    assert _trainable(lenet) == 25 * 32 + 25 * 32 * 64 + 1024 * 512 + 5120 + 10 + 2 * 608

    # AlexNet-BN as TSQ's prototxt (227x227, no groups, no biases, BN without affine):
    # 62,367,776 weights.
    alex = zoo.build("alexnet_bn", method="tsq")
    weights = 11 * 11 * 3 * 96 + 25 * 96 * 256 + 9 * (256 * 384 + 384 * 384 + 384 * 256)
    weights += 6 * 6 * 256 * 4096 + 4096 * 4096 + 4096 * 1000
    assert _trainable(alex) == weights == 62_367_776

    # QuickNet-small: larq-zoo publishes 12,655,688 parameters (larq_zoo/sota/quicknet.py,
    # QuickNetSmall docstring). tfquant counts 12,664,344 with every BatchNorm statistic;
    # larq-zoo's figure equals that without the affine BatchNorms' moving statistics.
    quick = zoo.build("quicknet_small", method="ste")
    total = models.summary(quick, print_fn=None).total_params
    assert total == 12_664_344
    assert total - _bn_statistics(quick, affine_only=True) == 12_655_688


def test_each_network_saves_and_reloads(tmp_path):
    for name in NEW:
        tiny = {**SMALL[name], "width": 0.125}
        model = zoo.build(name, method="ste", **tiny)
        x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-5)
    # QuickNet's frozen blur-pool kernels travel with the file
    blur = loaded.get_layer("s1_transition_blurpool")
    np.testing.assert_allclose(blur.kernel.numpy()[:, :, 0, 0].sum(), 1.0, atol=1e-6)
    assert not blur.trainable


def test_stem_choice_and_clear_errors():
    assert "stem_pool" in [m.name for m in zoo.resnet18((64, 64, 3), width=0.125).layers]
    forced = zoo.resnet18((32, 32, 3), width=0.125, stem="imagenet")
    assert forced.get_layer("stem_conv").kernel_size == (7, 7)
    with pytest.raises(ValueError, match="stem"):
        zoo.resnet18(stem="tiny")
    with pytest.raises(ValueError, match="width"):
        zoo.vgg7(width=0)
    with pytest.raises(ValueError, match=r"at least 67x67.*\(32, 32, 3\)"):
        zoo.build("alexnet_bn", method="tsq", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"at least 29x29.*\(16, 16, 3\)"):
        zoo.quicknet_small((16, 16, 3))
