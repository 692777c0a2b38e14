"""Deploy layers: what the rewrite puts in place of a trained tfquant layer.

:class:`BinaryDenseAsConv` (a binary Dense as a 1x1 binary convolution, which LCE
accelerates), :class:`Int8Layer` (a ternary / k-bit layer with fake-quant ops that LCE turns
into int8 kernels) and :class:`FoldedBatchNorm` (the identity left where a BatchNorm was
folded). They hold constant (non-trainable) weights taken from the trained layer and
serialize like any Keras 3 layer (registered under ``"tfquant"``), so a rewritten model
traces through ``model.export`` and can be saved as ``.keras``.

May import: ``tfquant.converters.int8``, ``tfquant.graph``, ``tfquant.layers``,
``tfquant.quantizers``, ``tfquant._keras`` and numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfquant import quantizers
from tfquant._keras import keras, tf
from tfquant.converters.int8 import effective_kernel, int8_weight_scales
from tfquant.graph import fold_batchnorm
from tfquant.layers import QuantConv2D, QuantDense, QuantizerMixin, same_padding

__all__ = ["BinaryDenseAsConv", "FoldedBatchNorm", "Int8Layer"]


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

    input_quantizer: quantizers.Quantizer | None
    bias: Any  # a keras.Variable once built with use_bias, else None

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

    input_quantizer: quantizers.Quantizer  # the sign: this layer is for binary inputs only

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
            kernel, bias, k = fold_batchnorm(kernel, bias, batchnorm)
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
