"""Build a zoo network by name for a method: :data:`MODELS`, :func:`build`, and the
method's quantizers of the hidden layers (:func:`quantizers_for`, :data:`METHOD_QUANTIZERS`).

Reads every method from :mod:`tfquant.methods` (never by its name); imports the networks'
modules, :mod:`tfquant.quantizers` and Keras.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tfquant import methods, quantizers
from tfquant._keras import keras
from tfquant.zoo.papers import alexnet_bn, lenet5, quicknet_small, resnet18, vgg7
from tfquant.zoo.small import binary_cnn, bireal_cnn


class _MethodQuantizers(Mapping):
    """Method name -> ``(**options) -> (input quantizer, kernel quantizer)`` of the hidden
    layers: a read-only view of the method registry (:mod:`tfquant.methods`)."""

    def __getitem__(self, name: str) -> Callable[..., tuple[Any, Any]]:
        method = methods.get(name)
        return lambda **options: method.quantizers("hidden", **options)

    def __iter__(self):
        return iter(methods.names())

    def __len__(self) -> int:
        return len(methods.names())


# method -> (**options) -> (input quantizer, kernel quantizer) of the hidden convolutions
METHOD_QUANTIZERS: Mapping[str, Callable[..., tuple[Any, Any]]] = _MethodQuantizers()


def quantizers_for(
    method: str | methods.Method, **options: Any
) -> tuple[quantizers.Quantizer | None, quantizers.Quantizer | None]:
    """Fresh ``(input_quantizer, kernel_quantizer)`` of the hidden convolutions for a training
    method (a registered name or a :class:`tfquant.methods.Method`); ``(None, None)`` for a
    float method. ``options`` are the method's declared options (``bits``, ...).

    Raises:
        ValueError: an unknown method, or an option it does not declare.
    """
    m = methods.get(method)
    inp, kernel = m.quantizers("hidden", **m.resolve(options))
    return quantizers.get(inp), quantizers.get(kernel)


MODELS: dict[str, Callable[..., keras.Model]] = {
    "binary_cnn": binary_cnn,
    "bireal_cnn": bireal_cnn,
    "resnet18": resnet18,
    "vgg7": vgg7,
    "lenet5": lenet5,
    "alexnet_bn": alexnet_bn,
    "quicknet_small": quicknet_small,
}


def build(
    name: str,
    method: str | methods.Method | None = None,
    method_options: dict | None = None,
    **kwargs,
) -> keras.Model:
    """Build a zoo model by name; ``method`` (a registered method's name, see
    :func:`tfquant.methods.names`, or a :class:`tfquant.methods.Method`) chooses its
    ``input_quantizer`` and ``kernel_quantizer`` (not to be passed with it), with
    ``method_options``, the method's declared options (e.g. ``{"bits": 3}`` for CPQ).

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
