"""Find what in a model file would run code, without deserializing anything.

A model file is data until a loader turns parts of it into code: Keras rebuilds a
``Lambda`` layer's function from the bytecode in the config, a ``TFSMLayer`` loads another
SavedModel, TensorFlow runs a SavedModel's graph, whose ops can read and write files or call
back into Python. :func:`scan` reads the file as plain data (the ``.keras`` zip's
``config.json``, the HDF5 ``model_config`` attribute, the ``saved_model.pb`` protocol
buffer) and lists each such place, so that :func:`tfquant.saving.load_model` and
:func:`tfquant.converters.convert_with_report` refuse the file before Keras or TensorFlow
touches it, unless the caller passes ``unsafe=True`` (``--unsafe``).

Keras' own ``safe_mode`` (keras 3.15) refuses a serialized lambda (``__lambda__``, also in
legacy ``.h5`` files, measured below), a ``TFSMLayer``, a pickled ``TorchModuleWrapper``
and a lookup layer's vocabulary file; it is bypassed process-wide by
``keras.config.enable_unsafe_deserialization()``, and it does not look at SavedModel
graphs. This scan covers the same cases independently of that global, and the graphs.

(Also importable as ``tfquant.converters.safety``, its former name.)
May import: ``tfquant._files``, ``tfquant.saving.errors`` and the standard library (the
SavedModel protocol buffers from TensorFlow, lazily, for a SavedModel only).

Example:

>>> from tfquant.saving import scan
>>> findings = scan.scan("model.keras")                        # doctest: +SKIP
>>> print("; ".join(map(str, findings)))                         # doctest: +SKIP
layer 'lambda' (Lambda): its function is a Python lambda (serialized bytecode)
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from tfquant._files import describe
from tfquant.saving.errors import ConversionError

__all__ = [
    "UnsafeModelError",
    "Finding",
    "scan",
    "scan_keras_file",
    "scan_h5_file",
    "scan_saved_model",
    "check",
    "unsafe_message",
    "ALLOW_HINT",
]

ALLOW_HINT = "Load it only if you trust its source: `--unsafe` on the command line, or unsafe=True"


class UnsafeModelError(ConversionError):
    """The model file carries code that loading or running it would execute (a ``Lambda``
    layer's serialized function, graph ops that read or write files or call Python).

    Attributes:
        findings: the :class:`Finding` objects, one per place.
    """

    def __init__(self, message: str, findings: Iterable[Finding] = ()) -> None:
        super().__init__(message)
        self.findings = list(findings)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One place in a model file that would run code.

    Attributes:
        where: the layer (``"layer 'name' (Class)"``) or graph node
            (``"node 'name' (op WriteFile) in function 'f'"``).
        what: what it carries or does.
    """

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def unsafe_message(path: str, findings: list[Finding], what: str) -> str:
    """The :class:`UnsafeModelError` message: the file, each place (five at most) and how
    to allow it."""
    shown = "; ".join(map(str, findings[:5]))
    more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
    return f"Refusing to load {path!r}: {what}: {shown}{more}. {ALLOW_HINT}"


def check(path: str | os.PathLike, *, unsafe: bool = False) -> list[Finding]:
    """:func:`scan` ``path`` and refuse it if anything would run code, unless ``unsafe``.

    Args:
        path: a ``.keras`` file, a ``.h5`` / ``.hdf5`` file or a SavedModel directory.
        unsafe: return the findings instead of raising (the caller trusts the file).

    Returns:
        The findings (empty unless ``unsafe``).

    Raises:
        UnsafeModelError: the file carries code and ``unsafe`` is false; the message names
            each layer or graph node and says how to allow it.
        ConversionError: the file is not what its name says (see :func:`scan`), whatever
            ``unsafe`` is.
    """
    path = os.fspath(path)
    findings = scan(path)
    if findings and not unsafe:
        what = (
            "its graph runs ops that touch files or run Python"
            if os.path.isdir(path)
            else "it carries code (or file access) that loading it would run"
        )
        raise UnsafeModelError(unsafe_message(path, findings, what), findings)
    return findings


def scan(path: str | os.PathLike) -> list[Finding]:
    """What in the model at ``path`` would run code, read as data (nothing deserialized).

    Args:
        path: a ``.keras`` file, a ``.h5`` / ``.hdf5`` file or a SavedModel directory.

    Returns:
        One :class:`Finding` per place; empty if none.

    Raises:
        ConversionError: ``path`` is not a regular file or directory, or not the format its
            name says (not a zip archive, no ``config.json``, no HDF5 signature, invalid
            JSON, an unreadable ``saved_model.pb``), or another kind of file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return scan_saved_model(path)
    if path.endswith(".keras"):
        return scan_keras_file(path)
    if path.endswith((".h5", ".hdf5")):
        return scan_h5_file(path)
    raise ConversionError(
        f"Expected a .keras or .h5 file or a SavedModel directory. Received: {path!r}"
    )


# ---------------------------------------------------------------------------------------------
# Files


def _open_regular(path: str, what: str):
    """Open ``path`` for reading without blocking on a FIFO, and only if it is a regular
    file (checked on the open descriptor, so a file swapped after a check is caught too)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ConversionError(f"Cannot read {path!r}: {e.strerror or e}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConversionError(f"Expected {what}. Received: {path!r}, {describe(mode)}")
    return os.fdopen(fd, "rb")


def _json(text: bytes | str, path: str, expected: str, field: str) -> dict:
    """The JSON object in ``text`` (a Keras config), or a ConversionError saying why not."""
    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(
            f"Expected {expected}. Received: {path!r}, whose {field} is not valid JSON ({e})"
        ) from None
    except RecursionError:
        raise ConversionError(
            f"Expected {expected}. Received: {path!r}, whose {field} is nested too deeply"
        ) from None
    if not isinstance(config, dict):
        raise ConversionError(
            f"Expected {expected}. Received: {path!r}, whose {field} holds a "
            f"{type(config).__name__}, not a Keras config"
        )
    return config


# A config.json of a large model is a few MB; Keras writes members uncompressed.
_MAX_CONFIG_BYTES = 256 << 20
_KERAS_FILE = "a .keras file (a zip archive holding config.json)"


def scan_keras_file(path: str) -> list[Finding]:
    """:func:`scan` for a ``.keras`` file: the layers of its ``config.json``.

    Raises:
        ConversionError: not a regular file, not a zip archive, a damaged one, no
            ``config.json`` or not valid JSON in it.
    """
    with _open_regular(path, _KERAS_FILE) as f:
        if not zipfile.is_zipfile(f):
            raise ConversionError(
                f"Expected {_KERAS_FILE}. Received: {path!r}, which is not a zip archive"
            )
        try:
            with zipfile.ZipFile(f) as archive:
                try:
                    info = archive.getinfo("config.json")
                except KeyError:
                    raise ConversionError(
                        f"Expected {_KERAS_FILE}. Received: {path!r}, a zip archive without "
                        "config.json"
                    ) from None
                if info.file_size > _MAX_CONFIG_BYTES:
                    raise ConversionError(
                        f"Expected {_KERAS_FILE}. Received: {path!r}, whose config.json "
                        f"declares {info.file_size} bytes (more than {_MAX_CONFIG_BYTES})"
                    )
                text = archive.read(info)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
            raise ConversionError(
                f"Expected {_KERAS_FILE}. Received: {path!r}, a damaged zip archive ({e})"
            ) from None
    return _scan_config(_json(text, path, _KERAS_FILE, "config.json"), path)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_H5_FILE = "an HDF5 file (.h5 / .hdf5, as Keras' model.save writes it)"


def _has_hdf5_signature(f, size: int) -> bool:
    """The HDF5 superblock signature at offset 0, or after a user block (512, 1024, 2048,
    ... bytes), as the HDF5 library searches for it."""
    offset = 0
    while offset + len(_HDF5_SIGNATURE) <= size:
        f.seek(offset)
        if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


# Measured (keras 3.15.1, TF 2.21, h5py 3.14), each load in a fresh process, on a model whose
# Lambda writes a marker file when called: keras.models.load_model("m.h5") in its default
# safe mode refuses the Lambda ("Requested the deserialization of a `Lambda` layer whose
# `function` is a Python lambda") and the marker is not written, both for Keras 3 .h5 files
# (`__lambda__`) and for tf-keras 2.x files (marshalled bytecode with function_type
# "lambda", which keras.src.legacy.saving.saving_utils turns into `__lambda__`). With
# safe_mode=False the marker is written while loading (the functional model is rebuilt by
# calling each layer). keras.config.enable_unsafe_deserialization() turns safe mode off
# process-wide, overriding safe_mode=True; this scan does not depend on it.
def scan_h5_file(path: str) -> list[Finding]:
    """:func:`scan` for a ``.h5`` / ``.hdf5`` file: the layers of its ``model_config``
    attribute (Keras 3's legacy format, and tf-keras / Keras 2 files). The HDF5 signature
    is checked before h5py opens the file.

    Raises:
        ConversionError: not a regular file, no HDF5 signature, a file h5py cannot open,
            no ``model_config`` (a weights-only file) or not valid JSON in it.
    """
    with _open_regular(path, _H5_FILE) as f:
        if not _has_hdf5_signature(f, os.fstat(f.fileno()).st_size):
            raise ConversionError(
                f"Expected {_H5_FILE}. Received: {path!r}, which does not start with the "
                "HDF5 signature"
            )
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
    except (OSError, ValueError, KeyError) as e:  # h5py's text is HDF5's internals
        raise ConversionError(
            f"Expected {_H5_FILE}. Received: {path!r}, which starts like an HDF5 file but "
            "cannot be opened as one (damaged or truncated?)"
        ) from e
    if raw is None:
        raise ConversionError(
            f"Expected a Keras model saved with model.save. Received: {path!r}, an HDF5 "
            "file without a model config (weights only, as model.save_weights writes?)"
        )
    if hasattr(raw, "decode"):
        raw = raw.decode("utf-8", errors="replace")
    return _scan_config(_json(raw, path, _H5_FILE, "model_config"), path)


# ---------------------------------------------------------------------------------------------
# Keras configs

# Lookup layers whose `vocabulary` may be a file path (Keras' safe mode refuses a path).
_LOOKUP_LAYERS = {"StringLookup", "IntegerLookup", "TextVectorization", "IndexLookup"}

# Keras 3.15 resolves a config's `module` only for keras, keras_hub, keras_cv and
# keras_nlp (serialization_lib._retrieve_class_or_fn imports nothing else, and only
# accepts KerasSaveable subclasses from them); any other class or function must be
# registered in the process (`register_keras_serializable`), else loading fails with
# "Could not locate class". So a `module` outside keras / tfquant imports nothing and is
# not flagged here; the legacy .h5 path (keras.src.legacy.saving.serialization) looks names
# up among the registered objects and keras.layers only.


def _layer_name(config: dict) -> str | None:
    inner = config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return inner["name"]
    return None


def _is_legacy_lambda(value: Any) -> bool:
    """A Keras 2 serialized lambda: ``[base64 marshalled code, defaults, closure]``."""
    return isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str)


def _scan_config(config: Any, path: str) -> list[Finding]:
    """Walk a Keras config (Functional / Sequential layers, nested models, wrappers such as
    TimeDistributed and Bidirectional, any object config) and list each place that would
    run code. ``compile_config`` is skipped: tfquant loads with ``compile=False``, and Keras
    then never deserializes it."""
    try:
        return list(_walk(config, [], ()))
    except RecursionError:
        raise ConversionError(
            f"Expected a Keras model config. Received: {path!r}, whose config is nested too "
            "deeply to be a model"
        ) from None


def _where(stack: list[tuple[str, str]]) -> str:
    name, cls = stack[-1]
    outer = [f"{n!r} ({c})" for n, c in stack[1:-1]]  # the outermost model is the file
    return f"layer {name!r} ({cls})" + (f" inside {' > '.join(outer)}" if outer else "")


def _walk(node: Any, stack: list[tuple[str, str]], field: tuple[str, ...]) -> Iterator[Finding]:
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item, stack, field)
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    if class_name == "__lambda__":
        where = _where(stack) if stack else "the model config"
        at = ".".join(field) or "a value"
        yield Finding(where, f"its {at} is a Python lambda (serialized bytecode)")
        return
    if class_name == "function" and _is_loader_function(node):
        where = _where(stack) if stack else "the model config"
        target = f"{node.get('module')}.{node.get('config')}"
        yield Finding(
            where,
            f"it calls {target}, a function that loads files or changes how Keras loads them "
            "(the safe-mode bypass of CVE-2025-9906)",
        )
        return
    name = _layer_name(node) if isinstance(class_name, str) else None
    if name is not None and isinstance(class_name, str):
        stack = [*stack, (name, class_name)]
        yield from _layer_findings(class_name, node["config"], stack)
        field = ()
    for key, value in node.items():
        if key == "compile_config":
            continue
        yield from _walk(value, stack, (*field, key) if key != "config" else field)


# Serialized functions from these modules load files or switch safe mode off: no model
# needs them as a layer's function (Keras >= 3.11 refuses them too; this holds for any Keras).
_LOADER_MODULES = (
    "keras.config",
    "keras.saving",
    "keras.models",
    "keras.utils",
    "keras.src.saving",
    "keras.src.utils",
    "keras.src.models",
    "builtins",
    "os",
    "subprocess",
)


def _is_loader_function(node: dict) -> bool:
    module = node.get("module")
    return isinstance(module, str) and any(
        module == m or module.startswith(m + ".") for m in _LOADER_MODULES
    )


def _layer_findings(class_name: str, config: dict, stack) -> Iterator[Finding]:
    where = _where(stack)
    if class_name == "Lambda":
        # Keras 3 turns any such list into __lambda__, whatever `function_type` says.
        for key in ("function", "output_shape"):
            if _is_legacy_lambda(config.get(key)):
                yield Finding(
                    where, f"its {key} is a Python lambda (marshalled bytecode, Keras 2 format)"
                )
    elif class_name == "TFSMLayer":
        yield Finding(
            where,
            f"it loads the SavedModel {config.get('filepath')!r} from this machine and runs "
            "its graph",
        )
    elif class_name == "TorchModuleWrapper" and "module" in config:
        yield Finding(where, "its module is a pickled torch.nn.Module (torch.load runs code)")
    elif class_name in _LOOKUP_LAYERS and isinstance(config.get("vocabulary"), str):
        yield Finding(
            where,
            f"it reads the vocabulary file {config['vocabulary']!r} from this machine, outside "
            "the model file",
        )


# ---------------------------------------------------------------------------------------------
# SavedModel graphs

_PYTHON = "calls back into Python"
_READS = "reads files"
_WRITES = "writes files"
_RESTORE_OPS = frozenset({"Restore", "RestoreV2", "RestoreSlice"})

# Op types that touch the file system, the network or Python. The checkpoint restore ops
# are allowed in the saver's restore function only (see scan_saved_model).
_UNSAFE_OPS: dict[str, str] = {
    **dict.fromkeys("PyFunc PyFuncStateless EagerPyFunc".split(), _PYTHON),
    **dict.fromkeys(
        """ReadFile MatchingFiles ImmutableConst InitializeTableFromTextFile
        InitializeTableFromTextFileV2 LoadAndRemapMatrix GenerateVocabRemapping
        WholeFileReader WholeFileReaderV2 TextLineReader TextLineReaderV2 TFRecordReader
        TFRecordReaderV2 FixedLengthRecordReader FixedLengthRecordReaderV2 LMDBReader
        RecordInput ReaderRestoreState ReaderRestoreStateV2 TFRecordDataset TFRecordDatasetV2
        TextLineDataset FixedLengthRecordDataset FixedLengthRecordDatasetV2 CSVDataset
        CSVDatasetV2 ExperimentalCSVDataset LMDBDataset ExperimentalLMDBDataset SqlDataset
        ExperimentalSqlDataset MatchingFilesDataset ExperimentalMatchingFilesDataset
        LoadDataset SnapshotDatasetReader SnapshotNestedDatasetReader SnapshotChunkDataset
        ListSnapshotChunksDataset DataServiceDataset DataServiceDatasetV2 DataServiceDatasetV3
        DataServiceDatasetV4 Restore RestoreV2 RestoreSlice""".split(),
        _READS,
    ),
    **dict.fromkeys(
        """WriteFile Save SaveV2 SaveSlices MergeV2Checkpoints SaveDataset SaveDatasetV2
        DistributedSave SnapshotDataset SnapshotDatasetV2 CacheDataset CacheDatasetV2
        DatasetToTFRecord ExperimentalDatasetToTFRecord RegisterDataset RegisterDatasetV2
        FileSystemSetConfiguration CreateSummaryFileWriter CreateSummaryDbWriter SummaryWriter
        WriteSummary WriteScalarSummary WriteHistogramSummary WriteImageSummary
        WriteAudioSummary WriteGraphSummary WriteRawProtoSummary ImportEvent FlushSummaryWriter
        CloseSummaryWriter StatsAggregatorSetSummaryWriter DebugIdentity DebugIdentityV2
        DebugIdentityV3 DebugNanCount DebugNumericSummary""".split(),
        _WRITES,
    ),
}


def _node_risk(node, allowed: frozenset[str]) -> str | None:
    if node.op in allowed:
        return None
    if node.op in _UNSAFE_OPS:
        return _UNSAFE_OPS[node.op]
    if node.op == "PrintV2" and "output_stream" in node.attr:
        if node.attr["output_stream"].s.startswith(b"file://"):
            return _WRITES
    if node.op in ("DecodeProtoV2", "EncodeProto") and "descriptor_source" in node.attr:
        if node.attr["descriptor_source"].s not in (b"", b"local://"):
            return _READS
    return None


def _called_functions(node, library: dict) -> Iterator[str]:
    """The library functions a node calls: ``f``, ``then_branch``, ``body``, ... attributes,
    lists of them, or the node's op itself naming a function."""
    if node.op in library:
        yield node.op
    for value in node.attr.values():
        if value.func.name:
            yield value.func.name
        for func in value.list.func:
            yield func.name


def _tensor_node(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def _object_graph_functions(meta_graph) -> list[str]:
    """Functions ``tf.saved_model.load`` itself runs: resources' ``_create_resource`` and
    ``_initialize``, and the restore functions of objects with custom saveables (variables
    are restored from the checkpoint by Python, without the graph's saver)."""
    nodes = meta_graph.object_graph_def.nodes

    def names(node_id: int) -> list[str]:
        obj = nodes[node_id]
        kind = obj.WhichOneof("kind")
        if kind == "function":
            return list(obj.function.concrete_functions)
        if kind == "bare_concrete_function":
            return [obj.bare_concrete_function.concrete_function_name]
        return []

    out: list[str] = []
    for obj in nodes:
        for child in obj.children:
            if child.local_name in ("_create_resource", "_initialize") and child.node_id < len(
                nodes
            ):
                out += names(child.node_id)
        for saveable in obj.saveable_objects.values():
            if saveable.restore_function < len(nodes):
                out += names(saveable.restore_function)
    return out


def _signature_nodes(meta_graph) -> list[str]:
    """The graph nodes the signatures read and return (``serving_default``, any other, and
    ``__saved_model_init_op``)."""
    out = []
    for signature in meta_graph.signature_def.values():
        for tensor in [*signature.inputs.values(), *signature.outputs.values()]:
            if tensor.name:
                out.append(_tensor_node(tensor.name))
    return out


def _init_nodes(meta_graph) -> list[str]:
    """The init ops the TF1-style session loader runs (it also runs the signature
    ``__saved_model_init_op``)."""
    out = []
    for key in ("saved_model_main_op", "legacy_init_op", "table_initializer"):
        if key in meta_graph.collection_def:
            out += [_tensor_node(n) for n in meta_graph.collection_def[key].node_list.value]
    return out


def _scan_graph(meta_graph, node_roots, function_roots, allowed, what) -> Iterator[Finding]:
    graph = {n.name: n for n in meta_graph.graph_def.node}
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    functions: list[str] = [f for f in function_roots if f in library]
    seen_nodes: set[str] = set()
    pending = [n for n in node_roots if n in graph]
    while pending:  # the graph nodes the roots depend on (data and control inputs)
        name = pending.pop()
        if name in seen_nodes:
            continue
        seen_nodes.add(name)
        node = graph[name]
        risk = _node_risk(node, allowed)
        if risk:
            yield Finding(f"node {name!r} (op {node.op})", f"{risk}, {what}")
        functions += _called_functions(node, library)
        pending += [_tensor_node(i) for i in node.input if _tensor_node(i) in graph]
    seen_functions: set[str] = set()
    while functions:  # every node of a called function may run (automatic control deps)
        fname = functions.pop()
        if fname in seen_functions or fname not in library:
            continue
        seen_functions.add(fname)
        for node in library[fname].node_def:
            risk = _node_risk(node, allowed)
            if risk:
                yield Finding(
                    f"node {node.name!r} (op {node.op}) in function {fname!r}",
                    f"{risk}, {what}",
                )
            functions += _called_functions(node, library)


def scan_saved_model(path: str) -> list[Finding]:
    """:func:`scan` for a SavedModel directory: the ops its signatures (``serving_default``
    and any other), its init op and ``tf.saved_model.load``'s own functions can run, every
    function they call included. ``RestoreV2`` in the saver's restore function is how the
    variables are read, and is allowed there only.

    Raises:
        ConversionError: ``saved_model.pb``, ``fingerprint.pb`` or a file in ``variables/``
            is not a regular file, or ``saved_model.pb`` is not a SavedModel protocol buffer.
    """
    pb = os.path.join(path, "saved_model.pb")
    with _open_regular(pb, "a SavedModel's saved_model.pb (a regular file)") as f:
        data = f.read()
    # The files TensorFlow's loaders open by name (a FIFO among them would block them).
    variables = os.path.join(path, "variables")
    entries = [os.path.join(path, "fingerprint.pb")]
    if os.path.isdir(variables):
        entries += [entry.path for entry in os.scandir(variables)]
    for entry in entries:
        if os.path.lexists(entry):
            mode = os.stat(entry).st_mode if os.path.exists(entry) else 0
            if not stat.S_ISREG(mode):
                raise ConversionError(
                    "Expected a SavedModel directory of regular files. Received: "
                    f"{entry!r}, {describe(mode) if mode else 'a broken symbolic link'}"
                )
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ConversionError(
            f"Expected a SavedModel directory. Received: {path!r}, whose saved_model.pb is "
            f"not a SavedModel protocol buffer ({e})"
        ) from None
    # The roots: what serving runs; what loading runs (init ops, the functions of
    # tf.saved_model.load); and the saver's restore_op_name, which the session loader behind
    # LCE's convert_saved_model runs to read the variables (RestoreV2 allowed there only;
    # tf.saved_model.load restores variables from Python instead). The saver's save function
    # runs only when saving, and is not scanned.
    findings: dict[str, Finding] = {}
    for meta_graph in saved_model.meta_graphs:
        restore = _tensor_node(meta_graph.saver_def.restore_op_name)
        for nodes, functions, allowed, what in (
            (_signature_nodes(meta_graph), [], frozenset(), "run when serving"),
            (
                _init_nodes(meta_graph),
                _object_graph_functions(meta_graph),
                frozenset(),
                "run while loading",
            ),
            ([restore] if restore else [], [], _RESTORE_OPS, "run while restoring variables"),
        ):
            for finding in _scan_graph(meta_graph, nodes, functions, allowed, what):
                findings.setdefault(finding.where, finding)
    return list(findings.values())
