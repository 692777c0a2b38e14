"""The SavedModel scan: which ops a SavedModel's graphs can run that read or write files or
call back into Python, read from ``saved_model.pb`` as a protocol buffer (nothing is
loaded or run).

May import: ``tfquant.saving.findings``, ``tfquant.saving.errors``, ``tfquant._files``, the
standard library, and TensorFlow's protocol buffer classes (lazily, for a SavedModel only).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from tfquant._files import describe
from tfquant.saving.errors import ConversionError
from tfquant.saving.findings import Finding, open_regular

__all__ = ["scan_saved_model"]

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
    with open_regular(pb, "a SavedModel's saved_model.pb (a regular file)") as f:
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
