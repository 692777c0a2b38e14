"""The Keras 3 functional graph, read: which layer reads which, and BatchNorm folding.

The converter (which layers to rewrite, which BatchNormalization folds into an int8 layer)
and TSQ's step 2 (which BatchNormalization folds into a layer's solve) walk a model's graph
the same way; this module is that walk. It reads Keras 3's Functional graph
(``_nodes_by_depth`` and the nodes' ``parent_nodes``); a Sequential model is walked through
the Functional graph Keras builds for it once its input shape is known. Subclassed models
have no graph: every function here then answers "nothing" (no nodes, no consumers).

May import: ``tfquant._keras`` and numpy only (it sits below ``tfquant.methods`` and
``tfquant.converters``, which both use it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfquant._keras import keras

__all__ = [
    "functional",
    "graph_nodes",
    "nodes_by_layer",
    "only_node",
    "input_shape",
    "consumers",
    "foldable_batchnorm",
    "following_batchnorm",
    "batchnorm_values",
    "batchnorm_affine",
    "fold_batchnorm",
]


def functional(model: keras.Model) -> Any:
    """The Functional graph of a Functional or Sequential model; ``None`` for subclassed
    models (and Sequential ones not yet built on an input shape)."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    return graph if graph is not None and hasattr(graph, "_nodes_by_depth") else None


def graph_nodes(model: keras.Model) -> list:
    """The nodes (layer calls) of the model's own graph, inputs first."""
    graph = functional(model)
    if graph is None:
        return []
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def nodes_by_layer(model: keras.Model) -> dict[int, list]:
    """``id(layer)`` -> the layer's calls (nodes) in the model's graph."""
    out: dict[int, list] = {}
    for node in graph_nodes(model):
        out.setdefault(id(node.operation), []).append(node)
    return out


def only_node(layer: keras.layers.Layer, nodes: dict[int, list]) -> Any:
    """The layer's call in the graph when it is called exactly once, else ``None``."""
    calls = nodes.get(id(layer), [])
    return calls[0] if len(calls) == 1 else None


def input_shape(layer: keras.layers.Layer, nodes: dict[int, list]) -> tuple | None:
    """The shape of the layer's single input tensor (from its call in the graph, else from
    the shape it was built with); ``None`` where unknown or not a single tensor."""
    node = only_node(layer, nodes)
    if node is not None:
        tensors = node.input_tensors
        return tuple(tensors[0].shape) if len(tensors) == 1 else None
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
            return tuple(shape)
    return None


def consumers(model: keras.Model) -> dict[str, list]:
    """Layer name -> the layers reading its output in the model's graph (``None`` stands for
    a model output)."""
    out: dict[str, list] = {layer.name: [] for layer in model.layers}
    for node in graph_nodes(model):
        for parent in node.parent_nodes:
            out.setdefault(parent.operation.name, []).append(node.operation)
    graph = functional(model)
    for x in graph.outputs if graph is not None else []:
        history = getattr(x, "_keras_history", None)
        if history is not None and history.operation is not None:
            out.setdefault(history.operation.name, []).append(None)
    return out


def foldable_batchnorm(
    layer: keras.layers.Layer, readers: dict[str, list], nodes: dict[int, list]
) -> keras.layers.BatchNormalization | None:
    """The BatchNormalization that alone reads ``layer``'s linear output, if any.

    Folding needs: the layer has no activation of its own, it and the BatchNormalization are
    each called once, its output is read by the BatchNormalization only (not also a model
    output), and the BatchNormalization normalises the last (channel) axis.

    Args:
        layer: a layer with an ``activation`` attribute (Dense, Conv and their tfquant kin).
        readers: :func:`consumers` of the model.
        nodes: :func:`nodes_by_layer` of the model.
    """
    after = readers.get(layer.name, [])
    if len(after) != 1 or not isinstance(after[0], keras.layers.BatchNormalization):
        return None
    bn = after[0]
    node, bn_node = only_node(layer, nodes), only_node(bn, nodes)
    if node is None or bn_node is None or len(bn_node.input_tensors) != 1:
        return None
    linear = keras.activations.get(layer.activation) is keras.activations.linear
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    rank = len(node.output_tensors[0].shape)
    if not linear or axis not in (-1, rank - 1):
        return None
    return bn


def following_batchnorm(
    model: keras.Model, layer: keras.layers.Layer
) -> keras.layers.BatchNormalization | None:
    """:func:`foldable_batchnorm` of one layer of ``model`` (walks the graph once)."""
    return foldable_batchnorm(layer, consumers(model), nodes_by_layer(model))


def batchnorm_values(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, ...]:
    """``(gamma, beta, moving_mean, moving_variance)`` as numpy (ones / zeros where the
    layer has no scale / center)."""
    n = int(bn.moving_mean.shape[0])
    gamma = np.asarray(bn.gamma.numpy()) if bn.gamma is not None else np.ones(n, np.float32)
    beta = np.asarray(bn.beta.numpy()) if bn.beta is not None else np.zeros(n, np.float32)
    return gamma, beta, np.asarray(bn.moving_mean.numpy()), np.asarray(bn.moving_variance.numpy())


def batchnorm_affine(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """``(g, h)`` with ``bn(u) = g * u + h`` in inference mode, float64."""
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in batchnorm_values(bn))
    g = gamma / np.sqrt(var + bn.epsilon)
    return g, beta - g * mean


def fold_batchnorm(
    kernel: np.ndarray, bias: np.ndarray | None, bn: keras.layers.BatchNormalization
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold an inference-mode BatchNormalization into the linear layer before it.

    ``bn(x W + b) = x (W k) + ((b - mean) k + beta)`` with ``k = gamma / sqrt(var + eps)``
    per output channel (the kernel's last axis), computed in the variables' float32.

    Returns:
        ``(kernel * k, folded bias, k)``.
    """
    gamma, beta, mean, var = batchnorm_values(bn)
    k = gamma / np.sqrt(var + bn.epsilon)
    folded_bias = ((np.zeros_like(mean) if bias is None else bias) - mean) * k + beta
    return kernel * k, folded_bias, k
