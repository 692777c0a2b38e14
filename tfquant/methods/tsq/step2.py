r"""TSQ's step 2 on a Keras model: each ternary layer's kernel by response reconstruction.

For each ternary ``QuantConv2D`` / ``QuantDense`` from the input on, it samples im2col rows
of the layer's quantized input in the partly ternarized model and the float network's
responses at the same positions, folds a following BatchNormalization (found by
:mod:`tfquant.graph`, the walk the converter uses), runs the NumPy solver
(:func:`tfquant.methods.tsq.solver.solve_layer`) and writes :math:`\alpha_c \hat w_c` into
the kernel (Wang et al., CVPR 2018, section 3.7; the folding is a reconstruction, see
``docs/methods.md#tsq``).

May import: numpy, TensorFlow/Keras, :mod:`tfquant.graph`, :mod:`tfquant.layers`,
:mod:`tfquant.quantizers` and :mod:`tfquant.methods.tsq.solver`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfquant import graph
from tfquant._keras import keras, tf
from tfquant.layers import QuantConv2D, QuantDense, same_padding
from tfquant.methods.tsq.solver import (
    _apply,
    _check_positive_int,
    optimal_ternary,
    response_objective,
    solve_layer,
)
from tfquant.quantizers import SteTernary

__all__ = ["LayerRecord", "im2col_rows", "learn_transformations", "ternary_layers"]


@dataclass
class LayerRecord:
    """What :func:`learn_transformations` did to one layer.

    Attributes:
        name: the layer's name.
        rows: the number of sampled rows (im2col rows for a convolution).
        error_before: relative reconstruction error
            :math:`\\|Y - f(X W_0 + b)\\|_F / \\|Y\\|_F` of the OTWA of the (folded) float
            kernel, :math:`W_0`, on the sampled rows.
        error_after: the same for the written ternary kernel.
        alpha: ``(C,)`` per-channel magnitudes of the written kernel, whose channel
            ``c`` takes values in :math:`\\{-\\alpha_c, 0, \\alpha_c\\}`.
        folded: whether a following BatchNormalization was folded.
    """

    name: str
    rows: int
    error_before: float
    error_after: float
    alpha: np.ndarray
    folded: bool

    def to_json(self) -> dict:
        """The record as JSON types (``from_json`` reads it back)."""
        return {
            "name": self.name,
            "rows": int(self.rows),
            "error_before": float(self.error_before),
            "error_after": float(self.error_after),
            "alpha": np.asarray(self.alpha, dtype=np.float64).tolist(),
            "folded": bool(self.folded),
        }

    @classmethod
    def from_json(cls, d: dict) -> LayerRecord:
        return cls(**{**d, "alpha": np.asarray(d["alpha"], dtype=np.float64)})


def _padded_codes(layer, codes):
    """``codes`` (NHWC) padded as ``layer``'s convolution pads them: with ``pad_values`` by
    SAME's amounts for ``padding="same"``, not at all for ``"valid"``."""
    if layer.padding != "same":
        return codes
    paddings = [[0, 0]]
    for axis in (1, 2):
        k = layer.kernel_size[axis - 1]
        s, d = layer.strides[axis - 1], layer.dilation_rate[axis - 1]
        paddings.append(list(same_padding(int(codes.shape[axis]), k, s, d)))
    paddings.append([0, 0])
    return tf.pad(codes, paddings, constant_values=layer.pad_values)


def im2col_rows(layer, codes) -> tf.Tensor:
    """The im2col rows of a :class:`~tfquant.layers.QuantConv2D` for input ``codes``.

    ``codes`` are the layer's inputs *after* its input quantizer, NHWC. The result has shape
    ``(batch, out_h, out_w, kh * kw * cin)`` in the order of ``kernel.reshape(-1, filters)``,
    so that ``rows @ kernel.reshape(-1, filters)`` is the layer's convolution (without bias)
    at every output position. Padding (``"same"`` with the layer's ``pad_values``, or
    ``"valid"``), strides and dilation are honoured.

    Raises:
        ValueError: for ``groups != 1`` or ``data_format="channels_first"``.
    """
    _check_conv(layer)
    kh, kw = layer.kernel_size
    padded = _padded_codes(layer, tf.convert_to_tensor(codes))
    return tf.image.extract_patches(
        padded,
        sizes=[1, kh, kw, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding="VALID",
    )


def _check_conv(layer) -> None:
    if getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last":
        raise ValueError(
            "Expected a QuantConv2D with groups=1 and data_format='channels_last'. Received: "
            f"layer {layer.name!r} with groups={layer.groups}, data_format={layer.data_format!r}"
        )


def _linear_response(layer, inputs) -> tf.Tensor:
    """``layer``'s output before its activation, for raw (not yet quantized) ``inputs``."""
    inputs = tf.cast(inputs, layer.compute_dtype)
    if isinstance(layer, QuantConv2D):
        out = layer.convolution_op(inputs, layer.kernel)
    else:
        codes = layer.quantize_input(inputs)
        kernel = layer.quantize_kernel(layer.kernel)
        out = tf.tensordot(codes, kernel, [[codes.shape.rank - 1], [0]])
    if layer.use_bias:
        out = out + layer.bias
    return out


def _relative_error(Y, X, what, alpha, bias, activation) -> tuple[np.ndarray, float]:
    """Per-channel squared residuals and the relative Frobenius error."""
    obj = response_objective(X, Y, what, alpha, bias, activation)
    norm = float(np.sqrt(np.sum(Y * Y)))
    return obj, float(np.sqrt(obj.sum())) / (norm if norm > 0 else 1.0)


def _select_layers(model, layers) -> list:
    kinds = (QuantConv2D, QuantDense)
    top = list(model.layers)
    if layers is None:
        chosen = [
            m for m in top if isinstance(m, kinds) and isinstance(m.kernel_quantizer, SteTernary)
        ]
        if not chosen:
            raise ValueError(
                "Expected a model with at least one QuantConv2D or QuantDense whose "
                "kernel_quantizer is a SteTernary (or pass layers=). Received: "
                f"{model.name!r} with layers {[m.name for m in top]}"
            )
        return chosen
    by_name = {m.name: m for m in top}
    wanted = []
    for item in [layers] if isinstance(layers, (str, keras.layers.Layer)) else list(layers):
        m = by_name.get(item) if isinstance(item, str) else item
        if m is None or not any(m is t for t in top) or not isinstance(m, kinds):
            raise ValueError(
                "Expected layers= to name QuantConv2D or QuantDense layers of the model "
                f"(top level). Received: {item!r}"
            )
        wanted.append(m)
    if not wanted:
        raise ValueError(f"Expected at least one layer in layers=. Received: layers={layers!r}")
    ids = {id(m) for m in wanted}
    return [m for m in top if id(m) in ids]  # topological order


def _float_reference(model, chosen) -> keras.Model:
    """A copy of ``model`` that forwards the float kernels of the ``chosen`` layers."""
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    for m in chosen:
        copy = reference.get_layer(m.name)
        if copy.kernel_gate is not None:
            copy.kernel_gate.assign(0.0)
    return reference


def _batches_of(x, batch_size: int):
    size = len(tf.nest.flatten(x)[0])
    for start in range(0, size, batch_size):
        yield tf.nest.map_structure(lambda a, s=start: a[s : s + batch_size], x)


def _sample_layer(model, reference, layer, x, bn, samples, batch_size, rng, progbar):
    """(X, Y_pre) rows for ``layer``: X its input codes in ``model`` (im2col for a conv),
    Y_pre the pre-activation response of the same positions in ``reference`` (after the
    following BN ``bn`` if any)."""
    ref_layer = reference.get_layer(layer.name)
    feed = keras.Model(model.input, layer.input)
    ref_feed = keras.Model(reference.input, ref_layer.input)
    ref_bn = None if bn is None else reference.get_layer(bn.name)
    size = len(tf.nest.flatten(x)[0])
    n_batches = -(-size // batch_size)
    per_batch = -(-samples // n_batches)
    xs, ys = [], []
    taken = 0
    for i, xb in enumerate(_batches_of(x, batch_size)):
        codes = layer.quantize_input(tf.cast(feed(xb, training=False), layer.compute_dtype))
        target = _linear_response(ref_layer, ref_feed(xb, training=False))
        if ref_bn is not None:
            target = ref_bn(target, training=False)
        if isinstance(layer, QuantConv2D):
            codes = im2col_rows(layer, codes)
        rows = np.asarray(codes, np.float64).reshape(-1, int(codes.shape[-1]))
        target = np.asarray(target, np.float64).reshape(rows.shape[0], -1)
        k = min(per_batch, samples - taken, rows.shape[0])
        pick = rng.choice(rows.shape[0], size=k, replace=False)
        xs.append(rows[pick])
        ys.append(target[pick])
        taken += k
        if progbar is not None:
            progbar.update(i + 1)
        if taken >= samples:
            break
    return np.concatenate(xs), np.concatenate(ys)


def learn_transformations(
    model: keras.Model,
    x,
    *,
    layers=None,
    reference: keras.Model | None = None,
    samples: int = 12000,
    batch_size: int = 64,
    activation: str | dict = "relu",
    iterations: int = 100,
    lam_start: float = 0.01,
    lam_end: float = 1.0,
    sweeps: int = 1,
    allow_float_inputs: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[LayerRecord]:
    r"""TSQ step 2 on a Keras model: make each ternary layer's kernel
    :math:`\alpha_c \hat w_c` by response reconstruction (section 3.7), in place.

    For each chosen layer, in the model's (topological) layer order:

    1. Sample up to ``samples`` rows, spread evenly over the batches of ``x``: ``X`` is the
       layer's input *after its input quantizer* (the codes) in ``model``, where the earlier
       chosen layers are already ternary (so their error is compensated); for a
       :class:`~tfquant.layers.QuantConv2D` the rows are im2col rows (:func:`im2col_rows`) at
       random output positions. ``Y`` is the pre-activation response at the same positions
       of the float step-1 network ``reference`` on the same batch.
    2. If the layer has no activation and its only consumer is a BatchNormalization (last
       axis), the BN is folded (a reconstruction, ``docs/methods.md#tsq``): with
       ``bn(u) = g u + h``, the folded
       kernel is :math:`g_c W_c` and the folded bias :math:`b'_c = g_c b_c + h_c` stays out of
       the ternary constraint; ``Y`` is the reference's BN output. Otherwise ``Y`` is the
       layer's output before its activation and the bias is the layer's own.
    3. :func:`solve_layer` from the OTWA of the (folded) float kernel, with the target
       :math:`f(Y)` and :math:`f` = ``activation``. A channel whose solution reconstructs
       worse than its OTWA initialisation keeps the initialisation, so ``error_after <=
       error_before`` always. The kernel written is :math:`\alpha'_c \hat w_c / g_c` when
       folded (the BN is unchanged, so the layer and its BN compute the solved folded
       response; a channel with :math:`g_c = 0` gets a zero kernel), else
       :math:`\alpha_c \hat w_c`; the layer's bias is unchanged. The layer's
       ``kernel_gate`` is set to 0 (as :func:`tfquant.finalize` does), so the forward pass
       uses the stored ternary kernel as it is.

    Which layers: by default every top-level QuantConv2D / QuantDense whose
    ``kernel_quantizer`` is a :class:`~tfquant.quantizers.SteTernary`; ``layers=`` (names or
    layer objects) chooses any top-level QuantConv2D / QuantDense instead. Layers inside
    nested models are not visited.

    The reference: by default a clone of ``model`` taken before any change, with the chosen
    layers' kernel gates at 0, so it forwards the float step-1 kernels and the same input
    quantizers. Pass ``reference`` (same layer names) to use another step-1 network.

    Reconstructed (``docs/methods.md#tsq``): the sample count (12,000 rows, BitSplit's),
    batch size 64,
    iterations 100, the :math:`\lambda` schedule, :math:`f` = ReLU, and the BN folding.

    Args:
        model: a built functional or Sequential Keras 3 model (modified in place).
        x: network inputs, an array (or a structure of arrays matching ``model.inputs``).
        layers: ``None`` (SteTernary layers) or the layers to ternarize.
        reference: the float step-1 network, or ``None`` for the clone described above.
        samples: rows per layer (at most).
        batch_size: the batch size the model is run with.
        activation: :math:`f` of :func:`solve_layer` (``"relu"`` or ``"linear"``), or a
            dict from layer name to it (missing names: ``"relu"``).
        iterations, lam_start, lam_end, sweeps: as :func:`solve_layer`.
        allow_float_inputs: allow a chosen layer without an ``input_quantizer`` (step 2 is
            meant to work on codes, section 3.1).
        seed: seed of the row sampling.
        progress: show a :class:`keras.utils.Progbar` per layer.

    Returns:
        One :class:`LayerRecord` per processed layer, in order.

    Raises:
        ValueError: no eligible layer, a bad ``layers=`` entry, a layer whose input is not
            quantized (unless ``allow_float_inputs``), a grouped or channels-first
            convolution, an unbuilt model, empty ``x`` or a bad argument.
    """
    samples = _check_positive_int("samples", samples)
    batch_size = _check_positive_int("batch_size", batch_size)
    _check_positive_int("iterations", iterations)
    if not isinstance(model, keras.Model) or not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "Expected a built functional or Sequential Keras model with inputs. "
            f"Received: {model!r}"
        )
    chosen = _select_layers(model, layers)
    for m in chosen:
        if m.input_quantizer is None and not allow_float_inputs:
            raise ValueError(
                "Expected the layers of TSQ step 2 to have an input_quantizer (step 2 "
                "regresses on input codes), or allow_float_inputs=True. Received: layer "
                f"{m.name!r} with input_quantizer=None"
            )
        if isinstance(m, QuantConv2D):
            _check_conv(m)
    size = len(tf.nest.flatten(x)[0]) if tf.nest.flatten(x) else 0
    if size == 0:
        raise ValueError(f"Expected non-empty inputs x. Received: {size} examples")
    values = activation.values() if isinstance(activation, dict) else [activation]
    if any(v not in ("relu", "linear") for v in values):
        raise ValueError(
            f"Expected activation 'relu' or 'linear' (or a dict of them). "
            f"Received: activation={activation!r}"
        )
    if reference is None:
        reference = _float_reference(model, chosen)
    rng = np.random.default_rng(seed)
    n_batches = -(-size // batch_size)
    records = []
    for layer in chosen:
        f = activation.get(layer.name, "relu") if isinstance(activation, dict) else activation
        bn = graph.following_batchnorm(model, layer)
        progbar = keras.utils.Progbar(n_batches + 1, verbose=1) if progress else None
        if progress:
            print(f"TSQ step 2: {layer.name}")
        X, Y_pre = _sample_layer(model, reference, layer, x, bn, samples, batch_size, rng, progbar)
        ref_layer = reference.get_layer(layer.name)
        W = np.asarray(ref_layer.kernel.numpy(), np.float64)
        W = W.reshape(-1, W.shape[-1])
        b = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else np.zeros(W.shape[1])
        if bn is not None:
            g, h = graph.batchnorm_affine(bn)
            W, bias = W * g, g * b + h
        else:
            g, bias = np.ones(W.shape[1]), b
        Y = _apply(f, Y_pre)
        what0, alpha0 = optimal_ternary(W, axis=0)
        alpha0 = alpha0[0]
        obj0, before = _relative_error(Y, X, what0, alpha0, bias, f)
        sol = solve_layer(
            X,
            Y,
            W,
            bias,
            f,
            iterations=iterations,
            lam_start=lam_start,
            lam_end=lam_end,
            sweeps=sweeps,
        )
        keep = sol.objective <= obj0
        what = np.where(keep, sol.what, what0)
        alpha = np.where(keep, sol.alpha, alpha0)
        _, after = _relative_error(Y, X, what, alpha, bias, f)
        scale = np.divide(alpha, g, out=np.zeros_like(alpha), where=g != 0)
        kernel = (what * scale).reshape(tuple(layer.kernel.shape))
        layer.kernel.assign(tf.cast(kernel, layer.kernel.dtype))
        if layer.kernel_gate is not None:
            layer.kernel_gate.assign(0.0)
        record = LayerRecord(
            layer.name, int(X.shape[0]), before, after, np.abs(scale), bn is not None
        )
        if progbar is not None:
            progbar.update(
                n_batches + 1,
                values=[("error_before", before), ("error_after", after)],
                finalize=True,
            )
        records.append(record)
    return records


def ternary_layers(model: keras.Model) -> list:
    """The top-level QuantConv2D / QuantDense layers whose kernel quantizer is a
    :class:`~tfquant.quantizers.SteTernary`: the layers TSQ ternarizes.

    Raises:
        ValueError: when there is none.
    """
    return _select_layers(model, None)
