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

(Also importable as ``tfquant.converters.safety``, its former name.) The SavedModel graph
scan is :mod:`tfquant.saving.saved_model_scan`; what a finding is, and the error that
refuses a file, :mod:`tfquant.saving.findings`; both re-exported here.
May import: ``tfquant.saving.findings``, ``.saved_model_scan``, ``.errors`` and the
standard library.

Example:

>>> from tfquant.saving import scan
>>> findings = scan.scan("model.keras")                        # doctest: +SKIP
>>> print("; ".join(map(str, findings)))                         # doctest: +SKIP
layer 'lambda' (Lambda): its function is a Python lambda (serialized bytecode)
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from typing import Any

from tfquant.saving.errors import ConversionError
from tfquant.saving.findings import (
    ALLOW_HINT,
    Finding,
    UnsafeModelError,
    open_regular,
    unsafe_message,
)
from tfquant.saving.saved_model_scan import _scan_graph, scan_saved_model  # noqa: F401

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
    with open_regular(path, _KERAS_FILE) as f:
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
    with open_regular(path, _H5_FILE) as f:
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
