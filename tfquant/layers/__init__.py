"""Quantized Keras layers: ``QuantConv2D``, ``QuantDense``, ``QuantDepthwiseConv2D``.

Each takes every argument of the Keras layer it extends plus ``input_quantizer``,
``kernel_quantizer`` (see :mod:`tfquant.quantizers`) and ``pad_values``. Only the kernel and
input math is overridden; no private Keras hooks are used.

Example:

>>> import numpy as np
>>> import tfquant
>>> layer = tfquant.layers.QuantConv2D(
...     32, 3, padding="same", pad_values=1.0,
...     input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)
>>> layer(np.ones((1, 8, 8, 32), "float32")).shape
TensorShape([1, 8, 8, 32])
"""

from __future__ import annotations

from typing import Any

from tfquant._keras import keras, tf
from tfquant.layers._base import (
    KernelGateSaving,
    KernelQuantization,
    QuantizerMixin,
    attach_quantization,
    quantization_of,
    same_padding,
)

__all__ = [
    "QuantConv2D",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantizerMixin",
    "KernelQuantization",
    "quantization_of",
    "attach_quantization",
    "same_padding",
]


@keras.utils.register_keras_serializable(package="tfquant")
class QuantConv2D(QuantizerMixin, KernelGateSaving, keras.layers.Conv2D):
    """2D convolution with quantized inputs and kernel.

    Args:
        filters, kernel_size, ...: as :class:`keras.layers.Conv2D`.
        input_quantizer: quantizer of the inputs (alias, config, instance or ``None``).
        kernel_quantizer: quantizer of the kernel.
        pad_values: 0.0 or 1.0; with ``padding="same"``, the value the quantized input is
            padded with. 1.0 lets LCE pass bit-packed tensors between binary convolutions.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        *args: Any,
        input_quantizer=None,
        kernel_quantizer=None,
        pad_values: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantization(input_quantizer, kernel_quantizer, pad_values)
        self._check_data_format()

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantization()

    def convolution_op(self, inputs, kernel):
        inputs = self.quantize_input(inputs)
        kernel = self.quantize_kernel(kernel)
        if not self._uses_one_padding():
            return super().convolution_op(inputs, kernel)
        inputs = self.pad_inputs(inputs, self.kernel_size, self.strides, self.dilation_rate)
        return tf.nn.convolution(
            inputs,
            kernel,
            strides=list(self.strides),
            padding="VALID",
            dilations=list(self.dilation_rate),
            data_format="NHWC",
        )

    def get_config(self):
        return {**super().get_config(), **self._quantization_config()}


@keras.utils.register_keras_serializable(package="tfquant")
class QuantDepthwiseConv2D(QuantizerMixin, keras.layers.DepthwiseConv2D):
    """Depthwise 2D convolution with quantized inputs and depthwise kernel.

    Args: as :class:`keras.layers.DepthwiseConv2D` plus ``input_quantizer``,
    ``kernel_quantizer`` (applied to the depthwise ``kernel``) and ``pad_values``.
    """

    def __init__(
        self,
        kernel_size,
        *args: Any,
        input_quantizer=None,
        kernel_quantizer=None,
        pad_values: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(kernel_size, *args, **kwargs)
        self._init_quantization(input_quantizer, kernel_quantizer, pad_values)
        self._check_data_format()

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantization()

    def call(self, inputs):
        inputs = self.quantize_input(inputs)
        kernel = self.quantize_kernel(self.kernel)
        padding = self.padding
        if self._uses_one_padding():
            inputs = self.pad_inputs(inputs, self.kernel_size, self.strides, self.dilation_rate)
            padding = "valid"
        outputs = keras.ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            fmt = "NHWC" if self.data_format == "channels_last" else "NCHW"
            outputs = tf.nn.bias_add(outputs, self.bias, data_format=fmt)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), **self._quantization_config()}


@keras.utils.register_keras_serializable(package="tfquant")
class QuantDense(QuantizerMixin, KernelGateSaving, keras.layers.Dense):
    """Densely connected layer with quantized inputs and kernel.

    Args: as :class:`keras.layers.Dense` plus ``input_quantizer`` and
    ``kernel_quantizer``. (``pad_values`` does not apply to a dense layer.)
    """

    def __init__(
        self, units: int, *args: Any, input_quantizer=None, kernel_quantizer=None, **kwargs: Any
    ) -> None:
        super().__init__(units, *args, **kwargs)
        self._init_quantization(input_quantizer, kernel_quantizer, 0.0)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantization()

    def call(self, inputs, training=None):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            raise ValueError(
                f"QuantDense expects a dense tensor. Received: {type(inputs).__name__}"
            )
        inputs = tf.cast(inputs, self.compute_dtype)
        inputs = self.quantize_input(inputs)
        kernel = self.quantize_kernel(self.kernel)
        if inputs.shape.rank == 2:
            outputs = tf.matmul(inputs, kernel)
        else:
            outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = {**super().get_config(), **self._quantization_config()}
        config.pop("pad_values")
        return config
