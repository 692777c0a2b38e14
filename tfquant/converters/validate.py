"""Check a TFLite flatbuffer before an interpreter touches it, in pure Python.

TFLite's C++ loader (and LCE's interpreter, which builds models without flatbuffers'
verifier) trusts every offset in the file: a truncated or bit-flipped ``.tflite`` can make it
read past the end and die with a segmentation fault. :func:`validate_flatbuffer` does what
flatbuffers' C++ ``Verifier`` does (every table, vtable, vector and string offset lies inside
the file; strings end in a zero byte) and then what TFLite's ``InterpreterBuilder`` assumes
(schema version 3, operator codes, tensor / buffer / opcode indices in range, known tensor
types and builtin codes, non-negative dims, constant buffers of exactly the bytes their
shapes need). Python flatbuffers checks none of this (slices past the end silently shrink,
negative positions read from the end), so the structure is walked here with explicit bounds
first, and the generated accessors are used only once every offset has been checked.

The field layout of every table (which vtable slot holds a scalar, a string, a table, a
vector or a union) is read once from TensorFlow's generated
``tensorflow.lite.python.schema_py_generated``, so the check follows the schema TensorFlow
ships instead of a hand-copied one. The walk visits each table once and spends a budget
proportional to the file size, so no file can make it run long; it takes milliseconds,
growing with the number of operators and tensors, not with the bytes of the weights.

Passing it does not prove the interpreter will not crash (e.g. the flexbuffer options of
``LceBconv2d`` are not decoded): run untrusted models through
:func:`tfquant.converters.bench.isolated_latency`, which also isolates the interpreter.

Example:

>>> from tfquant.converters.validate import validate_flatbuffer
>>> validate_flatbuffer(b"TFL3")
Traceback (most recent call last):
...
tfquant.converters.validate.InvalidFlatbufferError: not a valid TFLite model: expected at least 8 bytes (root offset and "TFL3" identifier), found 4
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import re
import stat
import struct
from typing import NoReturn

import numpy as np
from tensorflow.lite.python import schema_py_generated as _schema

from tfquant.errors import TfquantError

__all__ = [
    "InvalidFlatbufferError",
    "FlatbufferSummary",
    "TensorSpec",
    "validate_flatbuffer",
    "read_flatbuffer_file",
    "MAX_FLATBUFFER_BYTES",
]

PREFIX = "not a valid TFLite model: "
# flatbuffers' FLATBUFFERS_MAX_BUFFER_SIZE: offsets are 32-bit and the verifier refuses more.
# Larger .tflite files keep their weights after the flatbuffer (Buffer.offset / size).
MAX_FLATBUFFER_BYTES = 2**31 - 1
_IDENTIFIER = b"TFL3"
_SCHEMA_VERSION = 3
_MAX_DEPTH = 64

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_VTABLE_HEAD = struct.Struct("<HH")

_FLAG_SIZES = {
    "Bool": 1, "Int8": 1, "Uint8": 1, "Int16": 2, "Uint16": 2,
    "Int32": 4, "Uint32": 4, "Float32": 4, "Int64": 8, "Uint64": 8, "Float64": 8,
}  # fmt: skip
_TYPE_NAMES = {v: k.lower() for k, v in vars(_schema.TensorType).items() if not k.startswith("_")}
# Bytes per element of the types whose constant buffers have a fixed size (STRING, RESOURCE,
# VARIANT and the packed 2- and 4-bit types have no simple rule and are not size-checked).
_ITEMSIZE = {
    "float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2,
    "complex64": 8, "int8": 1, "float64": 8, "complex128": 16, "uint64": 8, "uint32": 4,
    "uint16": 2, "bfloat16": 2,
}  # fmt: skip
_BUILTIN_CODES = frozenset(
    value for name, value in vars(_schema.BuiltinOperator).items() if not name.startswith("_")
)
_CUSTOM = _schema.BuiltinOperator.CUSTOM


class InvalidFlatbufferError(TfquantError, ValueError):
    """The bytes are not a TFLite model an interpreter can safely load. The message starts
    with ``"not a valid TFLite model: "`` and says what was expected and what was found."""


def _fail(message: str) -> NoReturn:
    raise InvalidFlatbufferError(PREFIX + message)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """An input or output of the main subgraph: name, shape (``-1`` for a dynamic dim where
    the shape signature says so) and dtype name (``"float32"``, ``"int8"``...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class FlatbufferSummary:
    """What :func:`validate_flatbuffer` found: counts over all subgraphs, the main
    subgraph's inputs and outputs and the custom operators (e.g. ``LceBconv2d``)."""

    size: int
    version: int
    subgraphs: int
    operators: int
    tensors: int
    buffers: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    custom_ops: tuple[str, ...]
    external_buffers: bool


# ---------------------------------------------------------------------------------------------
# The schema, read from TensorFlow's generated Python module


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str  # as in schema.fbs: operator_codes, builtin_options...
    slot: int  # vtable entry index: the field's vtable offset is 4 + 2 * slot
    kind: str  # scalar | string | table | vector | tables | union
    size: int = 4  # inline bytes (scalars) or element bytes (vectors of scalars)
    target: str = ""  # table class (table, tables) or union enum name (union)
    type_slot: int = -1  # union: the slot of its ``..._type`` field


_METHOD = re.compile(r"^    def (\w+)\(self(?:, j)?\):\n((?:        .*\n|\s*\n)*)", re.M)
_CLASS = re.compile(r"^class (\w+)\(object\):\n", re.M)


def _classify(bodies: list[str]) -> tuple[str, int, str]:
    text = "\n".join(bodies)
    if ".Union(" in text:
        return "union", 4, ""
    if "self._tab.Vector(o)" in text or "VectorLen(o)" in text:
        element = re.search(r"obj = (\w+)\(\)", text)
        if element and "Indirect(x)" in text:
            return "tables", 4, element.group(1)
        scalar = re.search(r"number_types\.(\w+)Flags, a \+", text)
        if scalar and not element:
            return "vector", _FLAG_SIZES[scalar.group(1)], ""
        raise RuntimeError(f"unrecognised vector accessor in the TFLite schema: {text[:300]}")
    if "self._tab.String(o + self._tab.Pos)" in text:
        return "string", 4, ""
    if "Indirect(o + self._tab.Pos)" in text:
        table = re.search(r"obj = (\w+)\(\)", text)
        if table is None:
            raise RuntimeError(f"unrecognised table accessor in the TFLite schema: {text[:300]}")
        return "table", 4, table.group(1)
    scalar = re.search(r"number_types\.(\w+)Flags, o \+ self\._tab\.Pos\)", text)
    if scalar:
        return "scalar", _FLAG_SIZES[scalar.group(1)], ""
    raise RuntimeError(f"unrecognised accessor in the TFLite schema: {text[:300]}")


@functools.cache
def _tables() -> tuple[dict[str, tuple[_Field, ...]], dict[str, dict[int, str]]]:
    """``{table: fields}`` and ``{union: {type value: table}}`` parsed from the generated
    module's accessors (each reads ``self._tab.Offset(4 + 2 * slot)`` and then a scalar,
    a string, a table, a vector or a union)."""
    try:
        source = inspect.getsource(_schema)
    except OSError as e:  # a TensorFlow installed without its .py sources
        raise RuntimeError(f"cannot read TensorFlow's generated TFLite schema: {e}") from e
    unions: dict[str, dict[int, str]] = {}
    for m in re.finditer(r"^def (\w+)Creator\(unionType, table\):\n((?:    .*\n)*)", source, re.M):
        enum = getattr(_schema, m.group(1))
        members = re.findall(r"unionType == \w+\.(\w+):\n\s+return (\w+)T\.InitFromBuf", m.group(2))
        unions[m.group(1)] = {getattr(enum, member): table for member, table in members}
    pieces = _CLASS.split(source)
    bodies = dict(zip(pieces[1::2], pieces[2::2]))
    union_of = {}  # (table, accessor) -> union name, from the object API's _UnPack
    for name, body in bodies.items():
        for accessor_union in re.finditer(r"(\w+)Creator\(self\.\w+, \w+\.(\w+)\(\)\)", body):
            union_of[(name[:-1], accessor_union.group(2))] = accessor_union.group(1)
    tables: dict[str, tuple[_Field, ...]] = {}
    for name, body in bodies.items():
        if "self._tab = flatbuffers.table.Table(buf, pos)" not in body:
            continue
        by_slot: dict[int, list[str]] = {}
        accessor_slot: dict[str, int] = {}
        for method in _METHOD.finditer(body):
            found = re.search(r"self\._tab\.Offset\((\d+)\)", method.group(2))
            if found:
                slot = (int(found.group(1)) - 4) // 2
                by_slot.setdefault(slot, []).append(method.group(2))
                accessor_slot.setdefault(method.group(1), slot)
        fields = []
        for slot, texts in sorted(by_slot.items()):
            kind, size, target = _classify(texts)
            accessor = next(a for a, s in accessor_slot.items() if s == slot)
            type_slot = -1
            if kind == "union":
                target = union_of[(name, accessor)]
                type_slot = accessor_slot[accessor + "Type"]
            field_name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", accessor).lower()
            fields.append(_Field(field_name, slot, kind, size, target, type_slot))
        tables[name] = tuple(fields)
    for name in ("Model", "SubGraph", "Tensor", "Operator", "OperatorCode", "Buffer"):
        if not tables.get(name):
            raise RuntimeError(f"could not read table {name} from the generated TFLite schema")
    return tables, unions


# ---------------------------------------------------------------------------------------------
# Structure: every offset inside the file (flatbuffers' Verifier, in Python)


class _Verifier:
    def __init__(self, buf: bytes, end: int) -> None:
        self.buf = buf
        self.end = end
        self.tables, self.unions = _tables()
        self.seen: set[tuple[int, str]] = set()
        # A well-formed file refers to each table and vector element once (4 bytes each);
        # offsets shared many times over (a bit flip can make them) would make the walk slow.
        self.budget = end // 2 + 1024

    def _spend(self, n: int, where: str) -> None:
        self.budget -= n
        if self.budget < 0:
            _fail(
                f"{where}: expected each table referenced about once, found the same bytes "
                "referenced over and over (overlapping offsets)"
            )

    def _inside(self, pos: int, size: int, where: str, what: str) -> None:
        if pos < 0 or pos + size > self.end:
            _fail(
                f"{where}: expected {what} ({size} bytes at offset {pos}) inside the "
                f"{self.end}-byte flatbuffer, found it outside"
            )

    def _offset(self, pos: int, where: str) -> int:
        target = pos + _U32.unpack_from(self.buf, pos)[0]
        if target + 4 > self.end:
            _fail(
                f"{where}: expected an offset to a point inside the {self.end}-byte "
                f"flatbuffer, found one pointing to byte {target}"
            )
        return target

    def table(self, pos: int, name: str, where: str, depth: int = 0) -> None:
        if (pos, name) in self.seen:
            return
        self.seen.add((pos, name))
        self._spend(1, where)
        if depth > _MAX_DEPTH:
            _fail(f"{where}: expected tables nested at most {_MAX_DEPTH} deep, found deeper")
        self._inside(pos, 4, where, f"a {name} table")
        vtable = pos - _I32.unpack_from(self.buf, pos)[0]
        self._inside(vtable, 4, where, f"the vtable of a {name} table")
        vsize, tsize = _VTABLE_HEAD.unpack_from(self.buf, vtable)
        if vsize < 4 or vsize % 2:
            _fail(f"{where}: expected an even vtable size >= 4, found {vsize}")
        self._inside(vtable, vsize, where, f"the vtable of a {name} table")
        if tsize < 4:
            _fail(f"{where}: expected a table size >= 4, found {tsize}")
        self._inside(pos, tsize, where, f"a {name} table")
        slots = (vsize - 4) // 2
        for field in self.tables[name]:
            if field.slot >= slots:
                continue
            off = _U16.unpack_from(self.buf, vtable + 4 + 2 * field.slot)[0]
            if off == 0:
                continue
            here = f"{where}.{field.name}"
            if off + field.size > tsize:
                _fail(
                    f"{here}: expected the field inside its {name} table's {tsize} bytes, "
                    f"found it at byte {off}"
                )
            if field.kind == "scalar":
                continue
            target = self._offset(pos + off, here)
            if field.kind == "string":
                self.string(target, here)
            elif field.kind == "table":
                self.table(target, field.target, here, depth + 1)
            elif field.kind == "vector":
                self.vector(target, field.size, here)
            elif field.kind == "tables":
                count = self.vector(target, 4, here)
                self._spend(count, here)
                for i in range(count):
                    element = target + 4 + 4 * i
                    self.table(
                        self._offset(element, f"{here}[{i}]"),
                        field.target,
                        f"{here}[{i}]",
                        depth + 1,
                    )
            else:  # union: its type sits in the slot before
                kind = 0
                if field.type_slot < slots:
                    type_off = _U16.unpack_from(self.buf, vtable + 4 + 2 * field.type_slot)[0]
                    if type_off:
                        kind = self.buf[pos + type_off]
                if kind == 0:
                    continue
                member = self.unions[field.target].get(kind)
                if member is None:
                    _fail(
                        f"{here}: expected a {field.target} type known to this schema, found {kind}"
                    )
                self.table(target, member, here, depth + 1)

    def vector(self, pos: int, element_size: int, where: str) -> int:
        count = _U32.unpack_from(self.buf, pos)[0]
        self._inside(pos, 4 + count * element_size, where, f"a vector of {count} elements")
        return count

    def string(self, pos: int, where: str) -> None:
        count = _U32.unpack_from(self.buf, pos)[0]
        self._inside(pos, 4 + count + 1, where, f"a string of {count} bytes and its terminator")
        if self.buf[pos + 4 + count] != 0:
            _fail(
                f"{where}: expected a zero byte after a string, found {self.buf[pos + 4 + count]}"
            )


# ---------------------------------------------------------------------------------------------
# Meaning: what TFLite's InterpreterBuilder assumes


def _ints(values) -> np.ndarray:
    # Generated *AsNumpy accessors return 0 for an absent vector.
    return values if isinstance(values, np.ndarray) else np.zeros(0, np.int32)


def _check_indices(values: np.ndarray, limit: int, where: str, allow_optional: bool) -> None:
    if values.size == 0:
        return
    low = -1 if allow_optional else 0
    bad = (values < low) | (values >= limit)
    if bad.any():
        allowed = f"-1 (optional) or 0..{limit - 1}" if allow_optional else f"0..{limit - 1}"
        _fail(f"{where}: expected tensor indices in {allowed}, found {int(values[bad][0])}")


def _name(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "replace")


def _check_model(buf: bytes, size: int) -> FlatbufferSummary:
    model = _schema.Model.GetRootAs(buf, 0)
    if model.Version() != _SCHEMA_VERSION:
        _fail(f"expected schema version {_SCHEMA_VERSION}, found {model.Version()}")
    n_subgraphs = model.SubgraphsLength()
    if n_subgraphs < 1:
        _fail("expected at least one subgraph, found none")

    n_codes = model.OperatorCodesLength()
    custom_ops = []
    for i in range(n_codes):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin not in _BUILTIN_CODES:
            _fail(
                f"operator_codes[{i}]: expected a builtin operator code known to this "
                f"schema (0..{max(_BUILTIN_CODES)}), found {builtin}"
            )
        if builtin == _CUSTOM:
            if not code.CustomCode():
                _fail(
                    f"operator_codes[{i}]: expected a custom_code for a CUSTOM operator, found none"
                )
            custom_ops.append(_name(code.CustomCode()))

    n_buffers = model.BuffersLength()
    buffer_bytes = np.zeros(n_buffers, np.int64)
    external = False
    for i in range(n_buffers):
        buffer = model.Buffers(i)
        offset, length = buffer.Offset(), buffer.Size()
        if offset > 1:  # weights stored after the flatbuffer; offset 1 is a placeholder
            external = True
            if offset + length > size:
                _fail(
                    f"buffers[{i}]: expected offset + size within the {size}-byte file, "
                    f"found {offset} + {length} = {offset + length}"
                )
            buffer_bytes[i] = length
        else:
            buffer_bytes[i] = buffer.DataLength()
    if size > MAX_FLATBUFFER_BYTES and not external:
        _fail(
            f"expected at most {MAX_FLATBUFFER_BYTES} bytes for a model without external "
            f"buffers (offset / size), found {size}"
        )
    for name, indices in (("metadata_buffer", _ints(model.MetadataBufferAsNumpy())),):
        if indices.size and ((indices < 0) | (indices >= n_buffers)).any():
            _fail(
                f"{name}: expected buffer indices in 0..{n_buffers - 1}, found "
                f"{int(indices[(indices < 0) | (indices >= n_buffers)][0])}"
            )
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Buffer() >= n_buffers:
            _fail(
                f"metadata[{i}]: expected a buffer index in 0..{n_buffers - 1}, found "
                f"{model.Metadata(i).Buffer()}"
            )

    n_ops = n_tensors = 0
    tensor_counts = []
    main_io: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] = ((), ())
    for s in range(n_subgraphs):
        subgraph = model.Subgraphs(s)
        count = subgraph.TensorsLength()
        tensor_counts.append(count)
        n_tensors += count
        specs = [
            _check_tensor(subgraph.Tensors(t), f"subgraphs[{s}].tensors[{t}]", buffer_bytes)
            for t in range(count)
        ]
        inputs = _ints(subgraph.InputsAsNumpy())
        outputs = _ints(subgraph.OutputsAsNumpy())
        _check_indices(inputs, count, f"subgraphs[{s}].inputs", allow_optional=False)
        _check_indices(outputs, count, f"subgraphs[{s}].outputs", allow_optional=False)
        if s == 0:
            main_io = (tuple(specs[i] for i in inputs), tuple(specs[i] for i in outputs))
        n_ops += subgraph.OperatorsLength()
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            where = f"subgraphs[{s}].operators[{o}]"
            if op.OpcodeIndex() >= n_codes:
                _fail(
                    f"{where}: expected an opcode index in 0..{n_codes - 1}, found "
                    f"{op.OpcodeIndex()}"
                )
            # TFLite's CheckTensorIndices lets -1 (kTfLiteOptionalTensor) stand anywhere.
            for part, values in (
                ("inputs", op.InputsAsNumpy()),
                ("outputs", op.OutputsAsNumpy()),
                ("intermediates", op.IntermediatesAsNumpy()),
            ):
                _check_indices(_ints(values), count, f"{where}.{part}", allow_optional=True)
            large = op.LargeCustomOptionsOffset()
            if large > 1 and large + op.LargeCustomOptionsSize() > size:
                _fail(
                    f"{where}: expected large custom options inside the {size}-byte file, "
                    f"found offset {large} + size {op.LargeCustomOptionsSize()}"
                )
    for i in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(i)
        index = signature.SubgraphIndex()
        if index >= n_subgraphs:
            _fail(
                f"signature_defs[{i}]: expected a subgraph index in 0..{n_subgraphs - 1}, "
                f"found {index}"
            )
        for part, length, get in (
            ("inputs", signature.InputsLength(), signature.Inputs),
            ("outputs", signature.OutputsLength(), signature.Outputs),
        ):
            for j in range(length):
                tensor = get(j).TensorIndex()
                if tensor >= tensor_counts[index]:
                    _fail(
                        f"signature_defs[{i}].{part}[{j}]: expected a tensor index in "
                        f"0..{tensor_counts[index] - 1}, found {tensor}"
                    )
    return FlatbufferSummary(
        size=size,
        version=model.Version(),
        subgraphs=n_subgraphs,
        operators=n_ops,
        tensors=n_tensors,
        buffers=n_buffers,
        inputs=main_io[0],
        outputs=main_io[1],
        custom_ops=tuple(custom_ops),
        external_buffers=external,
    )


def _check_tensor(tensor, where: str, buffer_bytes: np.ndarray) -> TensorSpec:
    dtype = _TYPE_NAMES.get(tensor.Type())
    if dtype is None:
        _fail(
            f"{where}: expected a tensor type known to this schema "
            f"(0..{max(_TYPE_NAMES)}), found {tensor.Type()}"
        )
    shape = _ints(tensor.ShapeAsNumpy())
    if (shape < 0).any():
        _fail(f"{where}: expected non-negative dims in the shape, found {shape.tolist()}")
    signature = _ints(tensor.ShapeSignatureAsNumpy())
    if (signature < -1).any():
        _fail(f"{where}: expected dims >= -1 in the shape signature, found {signature.tolist()}")
    index = tensor.Buffer()
    if index >= len(buffer_bytes):
        _fail(f"{where}: expected a buffer index in 0..{len(buffer_bytes) - 1}, found {index}")
    have = int(buffer_bytes[index])
    if have and dtype in _ITEMSIZE and tensor.Sparsity() is None:
        need = math.prod(int(d) for d in shape) * _ITEMSIZE[dtype]
        if need != have:
            _fail(
                f"{where}: expected {need} bytes of constant data for shape "
                f"{shape.tolist()} and type {dtype}, found {have} (buffer {index})"
            )
    dims = signature if signature.size == shape.size else shape
    return TensorSpec(_name(tensor.Name()), tuple(int(d) for d in dims), dtype)


# ---------------------------------------------------------------------------------------------


def validate_flatbuffer(data: bytes) -> FlatbufferSummary:
    """Check that ``data`` is a TFLite model an interpreter can load without reading outside
    it, and summarise it.

    Args:
        data: the bytes of a ``.tflite`` file (``bytes``, ``bytearray`` or ``memoryview``).

    Returns:
        A :class:`FlatbufferSummary`: counts of subgraphs, operators, tensors and buffers,
        the main subgraph's inputs and outputs (name, shape, dtype), the custom operators.

    Raises:
        InvalidFlatbufferError: (a ``ValueError``) the first problem found, e.g.
            ``not a valid TFLite model: expected the file identifier b'TFL3' at bytes 4..8,
            found b'TFL2'``.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    size = len(buf)
    if size < 8:
        _fail(f'expected at least 8 bytes (root offset and "TFL3" identifier), found {size}')
    if buf[4:8] != _IDENTIFIER:
        _fail(f"expected the file identifier {_IDENTIFIER!r} at bytes 4..8, found {buf[4:8]!r}")
    end = min(size, MAX_FLATBUFFER_BYTES)
    verifier = _Verifier(buf, end)
    root = _U32.unpack_from(buf, 0)[0]
    if root < 8 or root + 4 > end:
        _fail(
            "expected the root table offset to point past the 8-byte header and inside the "
            f"{end}-byte file, found {root}"
        )
    verifier.table(root, "Model", "model")
    try:
        return _check_model(buf, size)
    except InvalidFlatbufferError:
        raise
    except Exception as e:  # every offset was checked above: this would be a bug here
        _fail(f"expected the verified tables to read back, found {type(e).__name__}: {e}")


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path, mode: int) -> ValueError:
    kind = next((what for test, what in _FILE_KINDS if test(mode)), "not a regular file")
    return ValueError(f"Expected a regular .tflite file. Received: {os.fspath(path)!r}, {kind}")


def read_flatbuffer_file(path: str | os.PathLike) -> bytes:
    """Read a ``.tflite`` file, refusing FIFOs, devices and directories before opening them
    (opening a FIFO for reading blocks until a writer comes).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` is not a regular file ("Expected a regular .tflite file.
            Received: 'x', a FIFO").
        OSError: it cannot be read (permissions...).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    # Non-blocking open and fstat: a file swapped for a FIFO after the stat cannot block us.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)
