"""The conversion report: what each tfquant layer became in the flatbuffer, and why.

:class:`ConversionReport` (ops, per-layer :class:`LayerReport`, sizes, parity, options,
timings, notes; as text or JSON) and the attribution of the flatbuffer's compute ops to the
model's layers by weight shape, in execution order.

May import: ``tfquant.converters.flatbuffer``, ``tfquant._keras`` and the standard library.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tfquant._keras import keras
from tfquant.converters import flatbuffer as _flatbuffer

__all__ = ["ConversionReport", "LayerReport", "layer_reports"]


@dataclasses.dataclass
class LayerReport:
    """What one tfquant layer became in the flatbuffer.

    Attributes:
        name, kind: the layer's name and class.
        declared: ``"binary"``, ``"k-bit"`` or ``"float"`` (from its quantizers).
        became: ``"binary"`` (LceBconv2d), ``"int8"``, ``"float"`` or ``"absent"`` (no
            matching op was found).
        ops: the TFLite ops attributed to the layer.
        rewrite: the rewrite applied before LCE, if any.
        exact: for int8 layers, whether every weight and input level is an exact code.
        reason: why the layer did not become its declared kernel, where it did not.
        weight_bits, input_bits: the kernel's and the input's precision as planned (32 for
            float; a learned one, such as CPQ's learned bit-width, as it is now).
    """

    name: str
    kind: str
    declared: str
    became: str
    ops: list[str]
    rewrite: str | None = None
    exact: bool | None = None
    reason: str | None = None
    weight_bits: int | None = None
    input_bits: int | None = None


@dataclasses.dataclass
class ConversionReport:
    """The conversion report: ops, per-layer outcome, sizes, parity, timings, notes.

    Attributes:
        ops: TFLite op name -> count in the main subgraph.
        layers: one :class:`LayerReport` per tfquant layer (empty for a SavedModel
            directory, which holds no Keras layers).
        sizes: bytes by kind (see :func:`tfquant.converters.flatbuffer.size_breakdown`) and
            ``ideal_bitpacked`` (``None`` where unknown: a SavedModel directory).
        parity: from :func:`tfquant.converters.flatbuffer.parity` (``None`` without
            verification); a SavedModel directory's also has ``reference``.
        options: the conversion options.
        seconds: time per step (``load``, ``rewrite``, ``export``, ``convert``, ``verify``).
        notes: what was assumed or could not be checked.
    """

    ops: dict[str, int]
    layers: list[LayerReport]
    sizes: dict[str, float | None]
    parity: dict[str, Any] | None
    options: dict[str, Any]
    seconds: dict[str, float]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def text(self) -> str:
        """A short human summary."""
        s = self.sizes

        def kib(value: float | None) -> str:
            return "unknown" if value is None else f"{value / 1024:.1f}"

        ideal = s.get("ideal_bitpacked")
        lines = [
            "ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.ops.items())),
            f"size: {kib(s['total'])} KiB (bit-packed weights {kib(s['binary_weights'])}, "
            f"int8 weights {kib(s['int8_weights'])}, float weights "
            f"{kib(s['float_weights'])}, other {kib(s['other'])}); ideal bit-packed "
            + ("unknown" if ideal is None else f"{kib(ideal)} KiB"),
        ]
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.became] = counts.get(layer.became, 0) + 1
        exact = sum(1 for layer in self.layers if layer.became == "int8" and layer.exact)
        lines.append(
            f"tfquant layers: {len(self.layers)} ("
            + ", ".join(
                f"{v} {k}" + (f", {exact} of them bit-exact" if k == "int8" else "")
                for k, v in sorted(counts.items())
            )
            + ")"
        )
        bits = [
            f"{layer.name} {layer.weight_bits}/{layer.input_bits}"
            for layer in self.layers
            if layer.weight_bits is not None
        ]
        if bits:
            lines.append("bits (weights/inputs): " + ", ".join(bits))
        for layer in self.layers:
            if layer.reason:
                lines.append(f"  {layer.name} ({layer.declared}) -> {layer.became}: {layer.reason}")
        if self.parity:
            p = self.parity
            agree = p["argmax_agreement"]
            lines.append(
                f"parity vs {p.get('reference', 'Keras')} ({p['samples']} {p['inputs']} "
                "inputs): max |diff| "
                f"{p['max_abs_diff']:.3g} (output scale {p['output_scale']:.3g})"
                + ("" if agree is None else f", argmax agreement {100 * agree:.1f}%")
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Attribution of ops to layers


def _signature(layer: keras.layers.Layer) -> tuple[int, int, int, int] | None:
    """(output channels, kh, kw, input channels) of the layer's weight as TFLite holds it."""
    # Keras 3's DepthwiseConv2D keeps its (kh, kw, cin, multiplier) kernel in ``kernel``;
    # SeparableConv2D keeps it in ``depthwise_kernel``.
    kernel = getattr(layer, "depthwise_kernel", None)
    if kernel is None and isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = layer.kernel
    if kernel is not None:
        kh, kw, cin, mult = kernel.shape
        return (int(cin * mult), int(kh), int(kw), 1)
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return None
    shape = [int(d) for d in kernel.shape]
    if len(shape) == 2:
        return (shape[1], 1, 1, shape[0])
    if len(shape) == 4:
        return (shape[3], shape[0], shape[1], shape[2])
    return None


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        out.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def _attribute(model: keras.Model, flatbuffer: bytes) -> dict[str, list[dict]]:
    """Match the flatbuffer's compute ops, in execution order, to the model's layers with
    the same weight shape (output channels, kh, kw, input channels)."""
    signatures = [(layer.name, _signature(layer)) for layer in _leaf_layers(model)]
    candidates = [(n, s) for n, s in signatures if s is not None]
    matched: dict[str, list[dict]] = {}
    used: set[str] = set()
    for op in _flatbuffer.compute_ops(flatbuffer):
        shape = op["weight_shape"]
        for name, sig in candidates:
            if name in used:
                continue
            if all(a is None or a == b for a, b in zip(shape, sig)):
                matched.setdefault(name, []).append(op)
                used.add(name)
                break
    return matched


def _became(ops: list[dict]) -> str:
    if not ops:
        return "absent"
    if any(o["op"] == "LceBconv2d" for o in ops):
        return "binary"
    if any(o["weight_type"] == "INT8" for o in ops):
        return "int8"
    return "float"


def layer_reports(model: keras.Model, plans: list, flatbuffer: bytes) -> list[LayerReport]:
    """What each planned layer became in the flatbuffer, and why not its declared kernel
    where it did not (the plan's reason, or what LCE did)."""
    matched = _attribute(model, flatbuffer)
    layers = []
    for p in plans:
        ops = matched.get(p.name, [])
        became = _became(ops)
        reason = p.reason
        if became != "binary" and p.declared == "binary" and reason is None:
            reason = "LCE did not match its binary convolution pattern"
        if p.target == "int8" and became != "int8" and reason is None:
            reason = "LCE kept the fake-quantized layer in float"
        if became == p.declared or (p.declared == "k-bit" and became == "int8"):
            reason = None
        layers.append(
            LayerReport(
                name=p.name,
                kind=p.kind,
                declared=p.declared,
                became=became,
                ops=[o["op"] + ("(int8)" if o["weight_type"] == "INT8" else "") for o in ops],
                rewrite=p.rewrite,
                exact=p.exact,
                reason=reason,
                weight_bits=p.weight_bits,
                input_bits=p.input_bits,
            )
        )
    return layers
