"""Read what a converted TFLite flatbuffer holds: its operators and tensors."""

from __future__ import annotations

from collections import Counter

import numpy as np
from tensorflow.lite.python import schema_py_generated as _schema

from tfquant._keras import tf

__all__ = [
    "op_names",
    "op_counts",
    "load_model_t",
    "size_breakdown",
    "compute_ops",
    "io_details",
    "signature_names",
    "run",
    "random_inputs",
    "parity",
    "SavedModelFunction",
    "unsupported_ops",
    "LCE_OPS",
]

_TENSOR_TYPES = {v: k for k, v in vars(_schema.TensorType).items() if not k.startswith("_")}
_BUILTIN_NAMES = {
    value: name for name, value in vars(_schema.BuiltinOperator).items() if not name.startswith("_")
}


def load_model_t(flatbuffer: bytes) -> _schema.ModelT:
    """Parse a flatbuffer into TFLite's object API (``ModelT``)."""
    return _schema.ModelT.InitFromObj(_schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))


def _op_name(model: _schema.ModelT, opcode_index: int) -> str:
    code = model.operatorCodes[opcode_index]
    if code.customCode:
        return (
            code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        )
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _BUILTIN_NAMES.get(builtin, str(builtin))


def op_names(flatbuffer: bytes) -> list[str]:
    """Operator names of the main subgraph in execution order (e.g. ``"LceBconv2d"``,
    ``"CONV_2D"``)."""
    model = load_model_t(flatbuffer)
    return [_op_name(model, op.opcodeIndex) for op in model.subgraphs[0].operators]


def op_counts(flatbuffer: bytes) -> dict[str, int]:
    """How many operators of each name the main subgraph holds."""
    return dict(Counter(op_names(flatbuffer)))


# ---------------------------------------------------------------------------------------------
# Tensors, sizes, compute ops

_INT8, _INT32, _FLOAT32 = 9, 2, 0
_COMPUTE_OPS = ("LceBconv2d", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _buffer_bytes(model: _schema.ModelT, index: int) -> int:
    data = model.buffers[index].data if 0 <= index < len(model.buffers) else None
    return 0 if data is None else len(data)


def size_breakdown(flatbuffer: bytes) -> dict[str, int]:
    """Bytes of the file by kind: ``binary_weights`` (bit-packed LceBconv2d filters),
    ``int8_weights``, ``float_weights`` (float32 constants), ``other`` (the rest: int32
    biases and shapes, graph structure, metadata) and ``total``."""
    model = load_model_t(flatbuffer)
    sub = model.subgraphs[0]
    binary_inputs = {
        op.inputs[1]
        for op in sub.operators
        if _op_name(model, op.opcodeIndex) == "LceBconv2d" and len(op.inputs) > 1
    }
    sizes = {"binary_weights": 0, "int8_weights": 0, "float_weights": 0}
    seen = set()
    for i, tensor in enumerate(sub.tensors):
        n = _buffer_bytes(model, tensor.buffer)
        if not n or tensor.buffer in seen:
            continue
        seen.add(tensor.buffer)
        if i in binary_inputs:
            sizes["binary_weights"] += n
        elif tensor.type == _INT8:
            sizes["int8_weights"] += n
        elif tensor.type == _FLOAT32:
            sizes["float_weights"] += n
    sizes["total"] = len(flatbuffer)
    sizes["other"] = sizes["total"] - sum(
        sizes[k] for k in ("binary_weights", "int8_weights", "float_weights")
    )
    return sizes


def compute_ops(flatbuffer: bytes) -> list[dict]:
    """The convolution and fully connected ops in execution order, each as a dict with
    ``op``, ``weight_shape`` (output channels, kh, kw, input channels; a fully connected
    op's ``(units, C)`` reads as ``(units, 1, 1, C)``), ``input_type`` and ``weight_type``
    (TFLite tensor type names)."""
    model = load_model_t(flatbuffer)
    sub = model.subgraphs[0]
    out = []
    for op in sub.operators:
        name = _op_name(model, op.opcodeIndex)
        if name not in _COMPUTE_OPS or len(op.inputs) < 2:
            continue
        x, w = sub.tensors[op.inputs[0]], sub.tensors[op.inputs[1]]
        shape: list[int | None] = [int(d) for d in w.shape]
        if name == "FULLY_CONNECTED" and len(shape) == 2:
            shape = [shape[0], 1, 1, shape[1]]
        elif name == "DEPTHWISE_CONV_2D":
            shape = [shape[3], shape[1], shape[2], 1]
        elif name == "LceBconv2d":
            # bit-packed filter (O, kh, kw, ceil(C/32)): the input tensor tells C
            cin = int(x.shape[-1]) if x.type != _INT32 else None
            shape = [shape[0], shape[1], shape[2], cin]
        out.append(
            {
                "op": name,
                "weight_shape": shape,
                "input_type": _TENSOR_TYPES.get(x.type, str(x.type)),
                "weight_type": _TENSOR_TYPES.get(w.type, str(w.type)),
            }
        )
    return out


def io_details(flatbuffer: bytes) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of the main subgraph: ``name``, ``shape``, ``shape_signature``
    (-1 for a dynamic dimension, e.g. the batch), ``type`` and int8 ``scale`` /
    ``zero_point`` (None for float tensors)."""
    model = load_model_t(flatbuffer)
    sub = model.subgraphs[0]

    def detail(i):
        t = sub.tensors[i]
        q = t.quantization
        scale = (
            float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else None
        )
        zp = int(q.zeroPoint[0]) if scale is not None and q.zeroPoint is not None else None
        signature = t.shapeSignature if t.shapeSignature is not None else t.shape
        name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
        return {
            "name": name,
            "shape": [int(d) for d in t.shape],
            "shape_signature": [int(d) for d in signature],
            "type": _TENSOR_TYPES.get(t.type, str(t.type)),
            "scale": scale,
            "zero_point": zp,
        }

    return [detail(i) for i in sub.inputs], [detail(i) for i in sub.outputs]


def signature_names(flatbuffer: bytes) -> tuple[list[str | None], list[str | None]]:
    """The serving signature's names of the main subgraph's inputs and outputs, in the
    subgraph's order (``None`` where the flatbuffer has no signature for a tensor).

    A converted SavedModel keeps its signature names (``model.export``: the ``keras.Input``
    names and ``output_0``, ``output_1``, ...); the subgraph's order of inputs and outputs
    need not be the model's.
    """
    model = load_model_t(flatbuffer)
    sub = model.subgraphs[0]
    by_index_in: dict[int, str] = {}
    by_index_out: dict[int, str] = {}
    for sig in model.signatureDefs or []:
        for table, out in ((sig.inputs, by_index_in), (sig.outputs, by_index_out)):
            for t in table or []:
                name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
                out.setdefault(int(t.tensorIndex), name)
        break  # the first signature: serving_default for a converted SavedModel
    return (
        [by_index_in.get(int(i)) for i in sub.inputs],
        [by_index_out.get(int(i)) for i in sub.outputs],
    )


def _order(names: list[str | None], wanted: list[str] | None) -> list[int] | None:
    """Positions ``p`` such that ``wanted[p[i]]`` is ``names[i]``, or None (positional)."""
    present = [n for n in names if n is not None]
    if wanted is None or len(present) != len(names) or sorted(present) != sorted(wanted):
        return None
    return [wanted.index(n) for n in present]


def _reference_names(model) -> tuple[list[str] | None, list[str] | None]:
    if isinstance(model, SavedModelFunction):
        return model.input_names, model.output_names
    try:  # model.export's signature: keras.Input names in, output_0, output_1, ... out
        return [t.name for t in model.inputs], [f"output_{k}" for k in range(len(model.outputs))]
    except (AttributeError, TypeError, ValueError):
        return None, None


# ---------------------------------------------------------------------------------------------
# Running and parity


def run(flatbuffer: bytes, inputs, *, num_threads: int = 1) -> list[np.ndarray]:
    """Run the flatbuffer with LCE's interpreter (indirect BGEMM kernels) on float inputs;
    int8 inputs and outputs are quantized / dequantized with the tensors' parameters.
    Returns the outputs as float32 arrays."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    ins, outs = io_details(flatbuffer)
    feed = []
    for x, d in zip(inputs, ins):
        x = np.asarray(x, np.float32)
        if d["type"] == "INT8":
            x = np.clip(np.round(x / d["scale"]) + d["zero_point"], -128, 127).astype(np.int8)
        feed.append(x)
    interpreter = Interpreter(flatbuffer, num_threads=num_threads, use_indirect_bgemm=True)
    result = interpreter.predict(feed if len(feed) > 1 else feed[0])
    result = list(result) if isinstance(result, (list, tuple)) else [result]
    out = []
    for y, d in zip(result, outs):
        y = np.asarray(y)
        if d["type"] == "INT8":
            y = (y.astype(np.float32) - d["zero_point"]) * d["scale"]
        out.append(y.astype(np.float32))
    return out


class SavedModelFunction:
    """A SavedModel directory's serving signature as a reference for :func:`parity`.

    Called like a Keras model (``f(x)`` or ``f([x1, x2])``), it returns the list of outputs.
    Inputs and outputs are taken in the order of their signature names (``input_names``,
    ``output_names``); :func:`parity` matches them to the flatbuffer's by name.

    Args:
        path: the SavedModel directory (e.g. written by ``model.export``).
        signature: the signature key.

    Raises:
        ValueError: the SavedModel has no such signature.
    """

    def __init__(self, path: str, signature: str = "serving_default") -> None:
        self._loaded = tf.saved_model.load(path)
        if signature not in self._loaded.signatures:
            raise ValueError(
                f"Expected a SavedModel with the signature {signature!r}. Received: "
                f"signatures {sorted(self._loaded.signatures)} in {path!r}"
            )
        self._function = self._loaded.signatures[signature]
        _, specs = self._function.structured_input_signature
        self.input_names = sorted(specs)
        self.inputs = [specs[n] for n in self.input_names]
        self.output_names = sorted(self._function.structured_outputs)

    def __call__(self, inputs, training: bool = False) -> list:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        feed = {n: tf.constant(x) for n, x in zip(self.input_names, inputs)}
        outputs = self._function(**feed)
        return [outputs[n] for n in self.output_names]


def _input_shapes(model) -> list[tuple]:
    shapes = [tuple(t.shape) for t in model.inputs]
    for shape in shapes:
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"Expected inputs with known shapes past the batch axis for random inputs. "
                f"Received: an input of shape {shape}; pass inputs for the parity check"
            )
    return shapes


def random_inputs(model, samples: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Standard-normal inputs of the model's input shapes (batch of ``samples``).

    Args:
        model: a Keras model or a :class:`SavedModelFunction` (anything with ``inputs``
            whose ``shape`` is known past the batch axis).
    """
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(samples, *[int(d) for d in shape[1:]])).astype(np.float32)
        for shape in _input_shapes(model)
    ]


def parity(flatbuffer: bytes, model, inputs=None, *, samples: int = 8, seed: int = 0) -> dict:
    """Compare the flatbuffer (LCE interpreter) with the Keras model (or a
    :class:`SavedModelFunction`) on ``inputs`` (default: ``samples`` standard-normal
    inputs).

    Returns:
        ``max_abs_diff``, ``mean_abs_diff``, ``output_scale`` (max |reference output|),
        ``relative_max_diff`` (max_abs_diff / output_scale), ``argmax_agreement`` (fraction of
        samples whose argmax over the last axis agrees, for outputs with more than one
        value per sample), ``samples`` and ``inputs`` (``"given"`` or ``"random"``).
    """
    given = inputs is not None
    if not given:
        inputs = random_inputs(model, samples, seed)
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    inputs = [np.asarray(x, np.float32) for x in inputs]
    expected = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    # Feed and read the flatbuffer by signature name: its order need not be the model's.
    fb_in, fb_out = signature_names(flatbuffer)
    ref_in, ref_out = _reference_names(model)
    in_order, out_order = _order(fb_in, ref_in), _order(fb_out, ref_out)
    feed = inputs if in_order is None else [inputs[p] for p in in_order]
    actual = run(flatbuffer, feed)
    if out_order is not None:
        actual = [actual[out_order.index(k)] for k in range(len(actual))]
    diffs, scales, agree, total = [], [], 0, 0
    for e, a in zip(expected, actual):
        e = np.asarray(e, np.float32)
        a = a.reshape(e.shape)
        diffs.append(np.abs(e - a))
        scales.append(float(np.abs(e).max()))
        if e.ndim >= 2 and e.shape[-1] > 1:
            ea = e.reshape(-1, e.shape[-1]).argmax(-1)
            aa = a.reshape(-1, a.shape[-1]).argmax(-1)
            agree += int(np.sum(ea == aa))
            total += ea.size
    max_diff = float(max(d.max() for d in diffs))
    scale = max(scales)
    return {
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
        "output_scale": scale,
        "relative_max_diff": max_diff / scale if scale else max_diff,
        "argmax_agreement": (agree / total) if total else None,
        "samples": int(inputs[0].shape[0]),
        "inputs": "given" if given else "random",
    }


LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")


def unsupported_ops(flatbuffer: bytes) -> list[dict]:
    """Custom ops that neither TFLite's builtins nor LCE implement (e.g. ``Digamma`` or
    ``Flex*`` ops): the model would fail to run. Each as ``{"op", "tensor"}`` where
    ``tensor`` is the op's first output name (it usually starts with the layer's path)."""
    model = load_model_t(flatbuffer)
    sub = model.subgraphs[0]
    out = []
    for op in sub.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = _op_name(model, op.opcodeIndex)
        if code.customCode and name not in LCE_OPS:
            tensor = sub.tensors[op.outputs[0]].name if len(op.outputs) else b""
            out.append({"op": name, "tensor": tensor.decode(errors="replace")})
    return out
