"""Read what a converted TFLite flatbuffer holds: its operators and tensors."""

from __future__ import annotations

from collections import Counter

from tensorflow.lite.python import schema_py_generated as _schema

from tfquant._keras import tf  # noqa: F401  (selects tf-keras before TensorFlow loads)

__all__ = ["op_names", "op_counts", "load_model_t"]

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
