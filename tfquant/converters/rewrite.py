"""The rewrite before Larq Compute Engine: a new model with deploy layers where planned.

Goes past two of LCE's limits (see :mod:`tfquant.converters.plan`):

* LCE issue 53: a binary ``QuantDense`` stays a float ``FULLY_CONNECTED``. It is rebuilt as
  reshape ``(B, C) -> (B, 1, 1, C)`` of the float input, the layer's sign, a 1x1 VALID
  convolution with the kernel reshaped to ``(1, 1, C, units)`` and a reshape back, which LCE
  turns into ``LceQuantize`` + ``LceBconv2d``.
* LCE issue 806: ternary and k-bit (k <= 8) weights stay float32. Such layers are rebuilt
  with fake-quant ops on the kernel (per output channel), the input and the output, with
  ranges chosen so that every trained value is an exact int8 code
  (:mod:`tfquant.converters.int8`); LCE then emits int8 kernels. A learned grid (codes
  times a trained step, e.g. CPQ's) exports so too: int8 weights ``m_o k`` with scale
  ``u |f_o| / m_o``, unsigned activations as their codes (scale ``u``) between int8 layers.

The rewrite builds a new Keras model (``keras.models.clone_model`` with the deploy layers of
:mod:`tfquant.converters.deploy` and copied weights); the user's model is never modified.
It walks the functional graph through :mod:`tfquant.graph`. This module also re-exports the
plan's, the int8 arithmetic's and the deploy layers' public names (their former home).

May import: ``tfquant.converters.plan``, ``.int8``, ``.deploy``, ``tfquant.graph``,
``tfquant._keras`` and numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfquant._keras import keras
from tfquant.converters.deploy import BinaryDenseAsConv, FoldedBatchNorm, Int8Layer
from tfquant.converters.int8 import (
    activation_range,
    code_grid,
    code_links,
    effective_kernel,
    exact_output_range,
    int8_weight_scales,
    only_signs_read,
    tie_down_reader_unit,
    tie_problem,
    widen,
)
from tfquant.converters.plan import LayerPlan, binary_kernel_problem, plan_layers
from tfquant.graph import consumers, foldable_batchnorm, functional, nodes_by_layer, only_node

__all__ = [
    "BinaryDenseAsConv",
    "FoldedBatchNorm",
    "Int8Layer",
    "LayerPlan",
    "plan_layers",
    "rewrite_model",
    "effective_kernel",
    "binary_kernel_problem",
    "int8_weight_scales",
]


def _calibration_inputs(model: keras.Model, data: Any, samples: int, seed: int) -> list:
    if data is not None:
        return list(data) if isinstance(data, (list, tuple)) else [data]
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(samples, *[int(d) for d in shape[1:]])).astype(np.float32)
        for shape in (tuple(t.shape) for t in model.inputs)
    ]


def _layer_io_ranges(model: keras.Model, layers: list, inputs: list) -> dict:
    """(input min, input max, output min, output max) of each layer on ``inputs``, read
    through a probe model over the layers' input and output tensors in ``model``'s graph."""
    nodes = nodes_by_layer(model)
    tensors = []
    for layer in layers:
        node = only_node(layer, nodes)
        if node is None or len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
            raise ValueError(
                f"Expected layer {layer.name!r} to be called once on one tensor in the model. "
                "Received a layer that is shared or has several inputs or outputs"
            )
        tensors += [node.input_tensors[0], node.output_tensors[0]]
    probe = keras.Model(model.inputs, tensors)
    values = probe(list(inputs), training=False)
    out = {}
    for i, layer in enumerate(layers):
        xin, xout = np.asarray(values[2 * i]), np.asarray(values[2 * i + 1])
        out[layer.name] = (float(xin.min()), float(xin.max()), float(xout.min()), float(xout.max()))
    return out


def rewrite_model(
    model: keras.Model,
    plans: list[LayerPlan],
    *,
    calibration_data: Any = None,
    calibration_samples: int = 64,
    seed: int = 0,
) -> tuple[keras.Model, list[str]]:
    """Build a new model with the planned rewrites applied; the original is unchanged.

    Args:
        model: a functional or Sequential Keras model.
        plans: from :func:`plan_layers`.
        calibration_data: representative inputs (array or list of arrays) for the ranges of
            int8 activations; ``None``: ``calibration_samples`` standard-normal inputs.

    Returns:
        ``(new_model, notes)``: notes say what was assumed (e.g. random calibration data).
    """
    notes: list[str] = []
    todo = {p.name: p for p in plans if p.rewrite}
    if not todo:
        return model, notes
    if functional(model) is None:
        raise ValueError(
            "Expected a Sequential or functional Keras model to rewrite. Received a subclassed "
            f"model {type(model).__name__!r}; convert with rewrite=False or build it functionally"
        )
    by_name = {layer.name: layer for layer in model.layers}
    missing = [n for n in todo if n not in by_name]
    if missing:
        raise ValueError(
            f"Layers {missing} are nested in sub-models; only top-level layers are rewritten"
        )
    int8_layers = [by_name[n] for n, p in todo.items() if p.rewrite == "int8"]
    ranges: dict = {}
    if int8_layers:
        inputs = _calibration_inputs(model, calibration_data, calibration_samples, seed)
        if calibration_data is None:
            notes.append(
                f"int8 activation ranges calibrated on {calibration_samples} random standard-"
                "normal inputs (pass calibration data for ranges that match real inputs)"
            )

    nodes = nodes_by_layer(model)
    readers_of = consumers(model)
    foldable = {layer.name: foldable_batchnorm(layer, readers_of, nodes) for layer in int8_layers}
    folded = {k: v for k, v in foldable.items() if v is not None}
    if int8_layers:
        ranges = _layer_io_ranges(model, int8_layers + list(folded.values()), inputs)
    # what reads a layer's output once its BatchNorm is folded in: the BatchNorm's readers
    readers = {
        name: readers_of[folded[name].name] if name in folded else readers_of[name]
        for name in (layer.name for layer in int8_layers)
    }
    codes = code_links(int8_layers, readers, readers_of)
    code_readers = {r for link in codes.values() for r in link[3]}
    approximate = []
    replaced: dict[str, keras.layers.Layer] = {}
    folded_bn_names = {bn.name for bn in folded.values()}

    def clone(layer):
        plan = todo.get(layer.name)
        if layer.name in folded_bn_names:
            new = FoldedBatchNorm(name=layer.name)
        elif plan is None:
            new = layer.__class__.from_config(layer.get_config())
        elif plan.rewrite == "dense_as_bconv":
            new = BinaryDenseAsConv.from_layer(layer)
        else:
            in_lo, in_hi = ranges[layer.name][:2]
            exact_in = activation_range(layer.input_quantizer)
            in_range = exact_in if exact_in else (*widen(in_lo, in_hi), False)
            if layer.name in code_readers:
                grid = code_grid(layer.input_quantizer)
                assert grid is not None  # code_links made it a code reader
                u = grid[0]
                in_range = (0.0, 255.0 * u, False)
            bn = folded.get(layer.name)
            clip, signs_only, out_why = None, False, None
            out_range: tuple[float, float] | None
            if layer.name in codes:
                u, n, out_why, _ = codes[layer.name]
                out_range, clip = (0.0, 255.0 * u), n * u
            else:
                out_range = exact_output_range(layer, {layer.name: readers[layer.name]})
                signs_only = out_range is None and only_signs_read(readers[layer.name])
                if out_range is None:
                    out_range = widen(*ranges[(bn or layer).name][2:])
                    if not signs_only:
                        out_why = "output requantized to a calibrated int8 range"
            if out_why is None and not signs_only:
                u_out = tie_down_reader_unit(readers[layer.name], readers_of)
                if u_out is not None:
                    out_why = tie_problem(layer, bn, u_out)
            new = Int8Layer.from_layer(
                layer,
                in_range,
                out_range,
                batchnorm=bn,
                sign_safe=signs_only,
                output_clip=clip,
                input_codes=layer.name in code_readers,
            )
            why = [
                reason
                for reason, applies in (
                    ("weights are not on an int8 grid (run tfquant.finalize?)", not new.exact),
                    ("float or scaled input (calibrated range)", exact_in is None),
                )
                if applies
            ]
            if out_why is not None:
                why.append(out_why)
            plan.exact = not why
            if why:
                approximate.append(f"{layer.name}: " + ", ".join(why))
            if bn is not None:
                plan.rewrite = "int8+batchnorm"
        replaced[layer.name] = new
        return new

    new_model = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name not in todo and layer.name not in folded_bn_names and layer.weights:
            replaced[layer.name].set_weights(layer.get_weights())
    if approximate:
        notes.append("int8 layers that round (not bit-exact): " + "; ".join(approximate))
    return new_model, notes
