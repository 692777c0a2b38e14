"""Model-level tools: a precision/memory/MAC summary, and ``finalize`` before deployment."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tfquant._keras import check_keras3, iter_layers, keras, tf
from tfquant.layers import QuantizerMixin

__all__ = [
    "LayerSummary",
    "ModelSummary",
    "summary",
    "finalize",
    "deployable",
    "save_deployable",
    "quantized_layers",
    "float_twin",
]


@dataclasses.dataclass
class LayerSummary:
    """One row of :func:`summary`."""

    name: str
    kind: str
    input_bits: int | None
    weight_bits: int | None
    params: dict[int, int]  # bits -> number of parameters stored at that precision
    memory_bytes: float  # bit-packed
    macs: dict[str, int]  # "binary" / "low-bit" / "float" -> multiply-accumulates


@dataclasses.dataclass
class ModelSummary:
    """What :func:`summary` returns (and prints)."""

    layers: list[LayerSummary]
    total_params: int
    memory_bytes: float
    float32_bytes: float
    compression: float
    macs: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        head = (
            "Layer",
            "Type",
            "In bits",
            "W bits",
            "Params (bits:n)",
            "Memory KiB",
            "MACs bin/low/float",
        )
        rows = [head]
        for s in self.layers:
            rows.append(
                (
                    s.name,
                    s.kind,
                    "-" if s.input_bits is None else str(s.input_bits),
                    "-" if s.weight_bits is None else str(s.weight_bits),
                    " ".join(f"{b}:{n}" for b, n in sorted(s.params.items())) or "0",
                    f"{s.memory_bytes / 1024:.2f}",
                    "/".join(_fmt_count(s.macs.get(k, 0)) for k in _MAC_KINDS),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines += [
            "-" * len(lines[0]),
            f"Total params: {self.total_params:,}",
            f"Model size (bit-packed): {self.memory_bytes / 1024:.2f} KiB; "
            f"float-32 equivalent: {self.float32_bytes / 1024:.2f} KiB; "
            f"compression: {self.compression:.2f}x",
            "MACs: " + ", ".join(f"{k} {_fmt_count(self.macs.get(k, 0))}" for k in _MAC_KINDS),
        ]
        return "\n".join(lines)


_MAC_KINDS = ("binary", "low-bit", "float")


def _fmt_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def quantized_layers(model: keras.Model) -> list[QuantizerMixin]:
    """Every tfquant quantized layer in ``model``, nested models included."""
    check_keras3(model)
    return [m for m in iter_layers(model) if isinstance(m, QuantizerMixin)]


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def _mac_count(layer: keras.layers.Layer) -> int:
    try:
        out_shape = tuple(layer.output.shape)
    except (AttributeError, RuntimeError, ValueError):
        return 0
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, _, _ = layer.kernel.shape
        return int(np.prod(out_shape[1:])) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin_per_group, _ = layer.kernel.shape
        return int(np.prod(out_shape[1:])) * kh * kw * cin_per_group
    if isinstance(layer, keras.layers.Dense):
        rows = int(np.prod([d for d in out_shape[1:-1]])) if len(out_shape) > 2 else 1
        return rows * int(np.prod(layer.kernel.shape))
    return 0


def _layer_summary(layer: keras.layers.Layer) -> LayerSummary:
    quant = isinstance(layer, QuantizerMixin)
    kernel = layer.kernel_variable if quant else None
    gate = getattr(layer, "kernel_gate", None)
    params: dict[int, int] = {}
    for w in layer.weights:
        if gate is not None and w is gate:
            continue
        bits = layer.kernel_precision if kernel is not None and w is kernel else 32
        params[bits] = params.get(bits, 0) + int(np.prod(w.shape))
    has_math = isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    in_bits = layer.input_precision if quant else (32 if has_math else None)
    w_bits = layer.kernel_precision if quant else (32 if has_math else None)
    macs: dict[str, int] = {}
    n = _mac_count(layer)
    if n:
        if in_bits == 1 and w_bits == 1:
            macs["binary"] = n
        elif (in_bits or 32) <= 8 and (w_bits or 32) <= 8:
            macs["low-bit"] = n
        else:
            macs["float"] = n
    return LayerSummary(
        name=layer.name,
        kind=type(layer).__name__,
        input_bits=in_bits,
        weight_bits=w_bits,
        params=params,
        memory_bytes=sum(b * c for b, c in params.items()) / 8,
        macs=macs,
    )


def summary(model: keras.Model, print_fn: Callable[[str], Any] | None = print) -> ModelSummary:
    """Per-layer precision, parameters by bit width, bit-packed memory and MACs, and totals.

    Args:
        model: a built Keras model (tfquant layers or any Keras layers).
        print_fn: called with the table; ``None`` to print nothing.

    Returns:
        A :class:`ModelSummary` (``as_dict()`` gives plain JSON-able data).
    """
    check_keras3(model)
    if not model.built:
        raise ValueError(f"Expected a built model. Received: {model.name!r}, which is not built")
    rows = [_layer_summary(layer) for layer in _leaf_layers(model)]
    total = sum(sum(r.params.values()) for r in rows)
    memory = sum(r.memory_bytes for r in rows)
    macs = {k: sum(r.macs.get(k, 0) for r in rows) for k in _MAC_KINDS}
    result = ModelSummary(
        layers=rows,
        total_params=total,
        memory_bytes=memory,
        float32_bytes=4.0 * total,
        compression=(4.0 * total / memory) if memory else 1.0,
        macs=macs,
    )
    if print_fn is not None:
        print_fn(result.table())
    return result


def _batches(data: Any, batch_size: int, steps: int | None) -> Iterable:
    if isinstance(data, np.ndarray) or tf.is_tensor(data):
        data = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    for i, batch in enumerate(data):
        if steps is not None and i >= steps:
            return
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        elif isinstance(batch, dict) and "x" in batch:
            batch = batch["x"]
        yield batch


def finalize(
    model: keras.Model,
    data: Any = None,
    *,
    batch_size: int = 128,
    steps: int | None = None,
) -> keras.Model:
    """Make every quantized kernel exactly its quantized value, then re-estimate BatchNorm.

    If the model's optimizer has a ``hard_quantize()`` method (``tfquant.MirrorDescent``), it
    is called first, then each quantizer's own ``finalize()`` where it has one
    (``CPQQuantizer``: the learned bit-width is fixed). Each tfquant layer's kernel ``w``
    then becomes ``Q(w)`` and its forward gate is set to 0 (the
    forward pass uses the stored kernel as it is), so a saved model holds the deployed
    weights and ``model(x)`` is the hard-quantized network.
    Given ``data``, BatchNorm moving statistics are recomputed as the exact average over the
    batches under the quantized weights: statistics gathered while training latent or soft
    weights do not match the hard model.

    Args:
        model: a model built with tfquant layers (modified in place and returned).
        data: ``None``, an array of inputs, or a dataset / iterable of input batches or of
            ``(x, y)`` batches.
        batch_size: batch size when ``data`` is an array.
        steps: at most this many batches (default: all).

    Returns:
        ``model``.

    To save the deployable file, without the optimizer's state (its moments or mirror-descent
    duals, several times the weights' size) and without compile settings, save an uncompiled
    copy: ``tfquant.models.save_deployable(model, "model.keras")``. ``model.save`` would
    keep the training state, which is what checkpoints are for.
    """
    optimizer = getattr(model, "optimizer", None)
    if (
        optimizer is not None
        and getattr(optimizer, "built", False)
        and callable(getattr(optimizer, "hard_quantize", None))
    ):
        # An optimizer that keeps its own state of the quantized weights (MirrorDescent's
        # simplex for the softmax map) knows their hard values better than Q(kernel).
        optimizer.hard_quantize()
    for layer in quantized_layers(model):
        # Quantizers with a learned precision (CPQ's bit-width gates) fix it first, so the
        # kernel below is quantized on the final grid.
        for q in (layer.input_quantizer, layer.kernel_quantizer):
            finalize = getattr(q, "finalize", None)
            if callable(finalize):
                finalize()
    for layer in quantized_layers(model):
        if layer.kernel_quantizer is None:
            continue
        kernel = layer.kernel_variable
        kernel.assign(tf.cast(layer.kernel_quantizer.exact(kernel), kernel.dtype))
        # The stored kernel now is the deployed one: forward it as it is (gate 0) rather than
        # quantizing it again, since not every quantizer is idempotent (DoReFa's weights).
        layer.kernel_gate.assign(0.0)
    if data is not None:
        reestimate_batchnorm(model, data, batch_size=batch_size, steps=steps)
    return model


def deployable(model: keras.Model) -> keras.Model:
    """An uncompiled copy of ``model`` with the same weights: the model without its training
    state (no optimizer, loss or metrics), for saving after :func:`finalize`.

    Keras' ``.keras`` format saves a compiled model's optimizer variables with it (Adam's two
    moments per weight, and mirror descent's duals: a file four times the weights' size for
    ``tfquant train``'s main job) and has no option to leave them out (``include_optimizer``
    is for ``.h5`` only); a copy that was never compiled has none to save.

    Raises:
        ValueError: a model that does not rebuild from its config.
    """
    check_keras3(model)
    if not getattr(model, "compiled", False):
        return model
    # from_config, not keras.models.clone_model: Keras 3's clone compiles the copy too.
    try:
        copy = type(model).from_config(model.get_config())
    except (NotImplementedError, TypeError, ValueError) as e:
        raise ValueError(
            "Expected a model that rebuilds from its config (Functional, Sequential, or a "
            f"subclass with get_config) to copy without its optimizer. Received: "
            f"{type(model).__name__} ({e})"
        ) from None
    copy.set_weights(model.get_weights())
    return copy


def save_deployable(model: keras.Model, path: str) -> None:
    """Save :func:`deployable` ``(model)`` to ``path`` (a ``.keras`` file): the weights and
    layers a converter or ``keras.models.load_model`` needs, without the training state."""
    deployable(model).save(path)


def float_twin(model: keras.Model) -> keras.Model:
    """The same network in float: every tfquant layer without its quantizers, every other
    layer as it is, the weights copied (kernels as stored, latent for a model not finalized).

    The twin is what a quantized model is compared with for size and latency: the same
    layers and shapes, every convolution and matmul in float32. It is not a trained float
    model (its accuracy means nothing).

    Raises:
        ValueError: a subclassed model (no graph of layers to clone).
    """
    check_keras3(model)

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, QuantizerMixin):
            config.update(input_quantizer=None, kernel_quantizer=None)
            if "pad_values" in config:  # padding with ones only matters for sign inputs
                config["pad_values"] = 0.0
        return layer.__class__.from_config(config)

    try:
        twin = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except ValueError as e:
        raise ValueError(
            f"Expected a Functional or Sequential model to make a float twin of. "
            f"Received: {type(model).__name__} ({e})"
        ) from None
    for source, target in zip(_leaf_layers(model), _leaf_layers(twin)):
        by_name = {w.name: w for w in source.weights}
        for w in target.weights:
            match = by_name.get(w.name)
            if match is not None and tuple(match.shape) == tuple(w.shape):
                w.assign(match)
    return twin


def reestimate_batchnorm(
    model: keras.Model, data: Any, *, batch_size: int = 128, steps: int | None = None
) -> int:
    """Recompute BatchNorm moving statistics as the average over ``data``'s batches.

    Returns the number of batches used. Momentum values are restored afterwards.
    """
    bns = [m for m in iter_layers(model) if isinstance(m, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    saved = [bn.momentum for bn in bns]
    used = 0
    try:
        for i, batch in enumerate(_batches(data, batch_size, steps)):
            for bn in bns:
                bn.momentum = i / (i + 1.0)  # cumulative mean: m_i = (i m_{i-1} + s_i)/(i+1)
            model(batch, training=True)
            used = i + 1
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m
    if used == 0:
        raise ValueError(
            "Expected at least one batch of data to re-estimate BatchNorm. Received none"
        )
    return used
