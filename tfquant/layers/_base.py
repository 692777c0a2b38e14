"""The mixin shared by tfquant's quantized layers, and the metadata quantized kernels carry."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from tfquant import quantizers
from tfquant._keras import check_keras3, tf

_ATTR = "_tfquant_quantization"
_PAD_VALUES = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class KernelQuantization:
    """What a quantized kernel variable may take, attached to the variable itself.

    Attributes:
        quantizer: the layer's kernel quantizer (``precision``, ``levels``, ``scaled``).
        gate: the layer's non-trainable scalar ``g`` in ``[0, 1]``; the forward pass uses
            ``g * Q(w) + (1 - g) * w``. ``g = 1`` (default) is the quantized forward pass;
            ``tfquant.MirrorDescent`` sets ``g = 0`` to forward the mirror-descent primal, and
            ``tfquant.finalize`` sets ``g = 0`` after storing ``Q(w)`` in the kernel.
        layer_name: the name of the layer owning the kernel.
    """

    quantizer: quantizers.Quantizer
    gate: tf.Variable
    layer_name: str


def _components(variable) -> list:
    """The Keras variable, the tf.Variable it wraps and, under tf.distribute, each replica's
    component of that variable."""
    out = [variable]
    inner = getattr(variable, "_value", None)  # keras.Variable -> tf.Variable
    if inner is not None and inner is not variable:
        out.append(inner)
        variable = inner
    values = getattr(variable, "values", None)  # tf.distribute DistributedVariable
    return [*out, *values] if isinstance(values, tuple) else out


def attach_quantization(variable, info: KernelQuantization) -> None:
    """Attach ``info`` to ``variable`` and, under a distribution strategy, to every replica's
    component, so an optimizer's ``update_step`` finds it on whichever it receives."""
    for v in _components(variable):
        setattr(v, _ATTR, info)


def quantization_of(variable) -> KernelQuantization | None:
    """The :class:`KernelQuantization` of a model variable, or ``None`` if it is not a
    quantized kernel. Works on the variables of ``model.trainable_variables`` and on the
    per-replica components an optimizer receives under ``tf.distribute``."""
    info = getattr(variable, _ATTR, None)
    if info is None and hasattr(variable, "_distributed_container"):
        container = variable._distributed_container()
        info = getattr(container, _ATTR, None)
    return info


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's "SAME" padding amounts (before, after) for one spatial axis."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class QuantizerMixin:
    """Adds ``input_quantizer``, ``kernel_quantizer`` and ``pad_values`` to a Keras layer.

    The layer quantizes its input with ``input_quantizer`` and its kernel with
    ``kernel_quantizer`` in the forward pass. With ``padding="same"`` and
    ``pad_values=1.0`` the quantized input is padded with ones and convolved "valid"
    (exactly SAME's amounts): LCE's fast bit-packed path.
    """

    _kernel_attr = "kernel"
    input_quantizer: quantizers.Quantizer | None
    kernel_quantizer: quantizers.Quantizer | None
    pad_values: float
    kernel_gate: Any  # a keras.Variable once built

    if TYPE_CHECKING:
        # What the Keras layer this is mixed into provides (Keras has no type stubs).
        name: str
        padding: str
        data_format: str
        activation: Any
        use_bias: bool
        bias: Any

        def add_weight(self, *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any):
        # A tf-keras (legacy tf.keras) symbolic input would otherwise be wrapped silently in a
        # tf-keras Lambda layer that does not track this layer's weights.
        if args:
            for item in tf.nest.flatten(args[0]):
                check_keras3(item, f"input to {type(self).__name__} {self.name!r}")
        return super().__call__(*args, **kwargs)  # type: ignore[misc]

    @property
    def kernel_variable(self):
        """The kernel variable the kernel quantizer applies to."""
        return getattr(self, self._kernel_attr)

    def _init_quantization(self, input_quantizer, kernel_quantizer, pad_values=0.0) -> None:
        self.input_quantizer = quantizers.get(input_quantizer)
        self.kernel_quantizer = quantizers.get(kernel_quantizer)
        try:
            pad = float(pad_values)
        except (TypeError, ValueError):
            pad = None
        if pad not in _PAD_VALUES:
            raise ValueError(
                f"Expected pad_values 0.0 (zeros) or 1.0 (ones, LCE's fast path). "
                f"Received: pad_values={pad_values!r}"
            )
        self.pad_values = pad
        self.kernel_gate = None

    def _build_quantization(self) -> None:
        kernel = self.kernel_variable
        if self.kernel_quantizer is None:
            return
        self.kernel_gate = self.add_weight(
            name="kernel_gate",
            shape=(),
            initializer="ones",
            trainable=False,
            aggregation="only_first_replica",
        )
        attach_quantization(
            kernel, KernelQuantization(self.kernel_quantizer, self.kernel_gate, self.name)
        )

    def quantize_kernel(self, kernel):
        """The kernel the forward pass uses: ``g * Q(w) + (1 - g) * w``."""
        if self.kernel_quantizer is None:
            return kernel
        kernel = tf.convert_to_tensor(kernel)
        q = self.kernel_quantizer(kernel)
        gate = tf.cast(self.kernel_gate, q.dtype)
        return gate * q + (1.0 - gate) * kernel

    def quantize_input(self, inputs):
        return inputs if self.input_quantizer is None else self.input_quantizer(inputs)

    def pad_inputs(self, inputs, kernel_size, strides, dilation_rate):
        """Pad NHWC ``inputs`` with ``pad_values`` by SAME's amounts (static shapes)."""
        paddings = [[0, 0]]
        for axis, (k, s, d) in enumerate(zip(kernel_size, strides, dilation_rate), start=1):
            size = inputs.shape[axis]
            if size is None:
                raise ValueError(
                    f"Layer {self.name!r}: pad_values=1.0 needs a static spatial shape. "
                    f"Received: input shape {inputs.shape}"
                )
            paddings.append(list(same_padding(int(size), k, s, d)))
        paddings.append([0, 0])
        return tf.pad(inputs, paddings, constant_values=self.pad_values)

    def _uses_one_padding(self) -> bool:
        return self.padding == "same" and self.pad_values != 0.0

    def _check_data_format(self) -> None:
        if (
            self.pad_values != 0.0
            and getattr(self, "data_format", "channels_last") != "channels_last"
        ):
            raise ValueError(
                "Expected data_format='channels_last' with pad_values=1.0. "
                f"Received: data_format={self.data_format!r}"
            )

    def _quantization_config(self) -> dict[str, Any]:
        return {
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            "kernel_quantizer": quantizers.serialize(self.kernel_quantizer),
            "pad_values": self.pad_values,
        }

    @property
    def input_precision(self) -> int:
        return 32 if self.input_quantizer is None else int(self.input_quantizer.precision)

    @property
    def kernel_precision(self) -> int:
        return 32 if self.kernel_quantizer is None else int(self.kernel_quantizer.precision)


class KernelGateSaving:
    """Saves and loads ``kernel_gate`` beside a Keras layer's own variables.

    Keras 3's Conv and Dense layers save only their kernel and bias; a finalized layer
    (gate 0) forwards its stored kernel, not ``Q(kernel)``, so its gate must survive a save.
    (DepthwiseConv2D saves every variable of the layer, the gate included, without this.)
    """

    def save_own_variables(self, store) -> None:
        super().save_own_variables(store)  # type: ignore[misc]
        if self.built and self.kernel_gate is not None:  # type: ignore[attr-defined]
            store["kernel_gate"] = self.kernel_gate  # type: ignore[attr-defined]

    def load_own_variables(self, store) -> None:
        super().load_own_variables(store)  # type: ignore[misc]
        gate = getattr(self, "kernel_gate", None)
        if self.built and gate is not None and "kernel_gate" in store.keys():  # type: ignore[attr-defined]
            gate.assign(store["kernel_gate"])
