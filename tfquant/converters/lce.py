"""Keras 3 model -> Larq Compute Engine TFLite flatbuffer, with a report and clear errors.

The route (shared/LCE.md, "Versions"): the model, after the rewrites of
:mod:`tfquant.converters.rewrite`, is exported with ``model.export`` as a SavedModel into a
temporary directory, which ``larq_compute_engine.convert_saved_model`` converts; the
directory is removed whatever happens.

Example:

>>> import keras
>>> from tfquant.converters import convert, convert_with_report
>>> model = keras.models.load_model("model.keras")              # doctest: +SKIP
>>> flatbuffer = convert(model)                                   # doctest: +SKIP
>>> flatbuffer, report = convert_with_report("model.keras")      # doctest: +SKIP
>>> print(report.text())                                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from tfquant._files import FileError, check_input
from tfquant._keras import check_keras3, keras, tf
from tfquant.converters import flatbuffer as _flatbuffer
from tfquant.converters import rewrite as _rewrite

__all__ = [
    "ConversionError",
    "LayerNotBinaryError",
    "LayerReport",
    "ConversionReport",
    "load_model",
    "convert",
    "convert_with_report",
]

_TARGETS = ("arm", "xcore")


class ConversionError(ValueError):
    """The model cannot be converted: bad input, a model LCE cannot take, or a layer that
    did not get the kernel its quantizers ask for. The message says which and why."""


class LayerNotBinaryError(ConversionError):
    """A layer declared binary (1-bit inputs and kernel) did not become ``LceBconv2d``."""


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
            float; a learned one, e.g. ``CPQQuantizer.learned_bits()``, as it is now).
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
        ideal = s.get("ideal_bitpacked")
        lines = [
            "ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.ops.items())),
            f"size: {s['total'] / 1024:.1f} KiB (bit-packed weights {s['binary_weights'] / 1024:.1f}, "
            f"int8 weights {s['int8_weights'] / 1024:.1f}, float weights "
            f"{s['float_weights'] / 1024:.1f}, other {s['other'] / 1024:.1f}); ideal bit-packed "
            + ("unknown" if ideal is None else f"{ideal / 1024:.1f} KiB"),
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
# Loading


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _is_saved_model_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))


def _check_path(path: str) -> None:
    """Refuse a missing path, a directory without ``saved_model.pb`` and anything that is
    not a regular file (a FIFO would block the first ``open`` forever, ``/dev/zero`` never
    ends), before anything opens it."""
    try:
        check_input(path, "model", directory=True)
    except FileError as e:
        raise ConversionError(str(e)) from None
    if os.path.isdir(path):
        if not _is_saved_model_dir(path):
            raise ConversionError(
                f"Expected a SavedModel directory (with saved_model.pb), a .keras file or a "
                f".h5 file. Received: {path!r}, a directory without saved_model.pb"
            )
    elif not path.endswith((".keras", ".h5", ".hdf5")):
        raise ConversionError(
            f"Expected a .keras or .h5 file or a SavedModel directory. Received: {path!r}"
        )


# Keras' safe-mode refusals (serialization_lib, Lambda, TFSMLayer, TorchModuleWrapper,
# lookup vocabularies) all advise these; the scan of tfquant.converters.safety finds the
# same cases first, so this is the fallback for what it does not know.
_KERAS_SAFE_MODE_MARKERS = ("safe_mode=False", "enable_unsafe_deserialization")
# Exceptions Keras lets through from rebuilding a malformed config; their text ("list index
# out of range", a missing key) says nothing to the user.
_KERAS_INTERNAL_ERRORS = (IndexError, KeyError, AttributeError, AssertionError)


def _keras_load_error(path: str, error: Exception, unsafe: bool) -> ConversionError:
    """The error to raise for ``keras.models.load_model`` failing on ``path``: Keras'
    safe-mode refusals become :class:`UnsafeModelError`, the rest a short
    "Could not load" (the innermost cause, without Keras' dump of the full config)."""
    from tfquant.converters.safety import ALLOW_HINT, UnsafeModelError

    text = str(error)
    if not unsafe and any(m in text for m in _KERAS_SAFE_MODE_MARKERS):
        # Keras' first sentence says what it refused; the rest advises safe_mode=False.
        refused = text.split(" This carries")[0].split(" If you trust")[0].strip()
        return UnsafeModelError(
            f"Refusing to load {path!r}: Keras' safe mode refused it ({refused}). {ALLOW_HINT}"
        )
    if isinstance(error, _KERAS_INTERNAL_ERRORS):
        detail = (
            "its model config is malformed or from an incompatible Keras version "
            f"({type(error).__name__} while rebuilding the model)"
        )
        return ConversionError(f"Could not load {path!r} as a Keras model: {detail}")
    text = text.split("Exception encountered: ")[-1]  # Keras wraps the cause in TypeErrors
    unknown = re.match(r"Could not locate (class|function) '([^']+)'", text)
    if unknown:
        module = re.search(r"'module': '([^']+)'", text)
        origin = f" from module {module.group(1)!r}" if module else ""
        detail = (
            f"it uses the {unknown.group(1)} {unknown.group(2)!r}{origin}, which is neither a "
            "Keras nor a tfquant object nor registered in this process (Keras imports no "
            "other module named by a model file: import the module that defines it, "
            "registered with keras.saving.register_keras_serializable, before loading)"
        )
    else:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        lines = lines or [type(error).__name__]
        detail = lines[0] + (f" {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else "")
        detail = detail.split(" Full object config:")[0][:400]
    return ConversionError(f"Could not load {path!r} as a Keras model: {detail}")


def load_model(path: str | os.PathLike, *, unsafe: bool = False) -> keras.Model:
    """Load a Keras 3 model from a ``.keras`` (or legacy ``.h5``) file with tfquant's
    custom objects (registered under ``"tfquant"``).

    Loading is safe by default: the file's config is first read as data
    (:func:`tfquant.converters.safety.check`), and a file carrying Python code (a
    ``Lambda`` layer's serialized lambda, a ``TFSMLayer``, ...) is refused before Keras
    deserializes anything; Keras then loads with ``safe_mode`` on.

    Args:
        path: a ``.keras``, ``.h5`` or ``.hdf5`` file.
        unsafe: load files that carry Python code (Keras' ``safe_mode=False``): that code
            runs in this process. Only for files you trust.

    Returns:
        The model, not compiled.

    Raises:
        UnsafeModelError: (a ``ConversionError``) the file carries Python code and
            ``unsafe`` is false; the message names the layer and what it carries.
        ConversionError: the path does not exist, is not a regular file, or does not hold a
            Keras model (not a zip archive, no HDF5 signature, no model config, ...), or it
            is a SavedModel directory: Keras 3 writes SavedModels (``model.export``) without
            the Keras layers, so they cannot be loaded back as a Keras model
            (:func:`convert_with_report` converts such a directory as it is).
    """
    from tfquant.converters import safety as _safety

    path = os.fspath(path)
    _check_path(path)
    if os.path.isdir(path):
        raise ConversionError(
            f"Expected a .keras or .h5 file. Received: the SavedModel directory {path!r}, "
            "which holds no Keras layers (Keras 3's model.export writes none), so it cannot "
            "be loaded as a Keras model; use the .keras file it was exported from"
        )
    _safety.check(path, unsafe=unsafe)  # also: not the format its name says
    try:
        with _quiet():
            model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:  # Keras raises many types here
        raise _keras_load_error(path, e, unsafe) from e
    if not isinstance(model, keras.Model):
        raise ConversionError(
            f"Expected a Keras model in {path!r}. Received: a {type(model).__name__}"
        )
    return model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            yield
        finally:
            logger.setLevel(level)


@contextlib.contextmanager
def _native_stderr_to(buffer: list[str]) -> Iterator[None]:
    """Send file descriptor 2 (the MLIR converter's C++ logs) to ``buffer``."""
    try:
        fd = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
            tmp.seek(0)
            buffer.append(tmp.read().decode(errors="replace"))


def _lce_error_message(error: BaseException, log: str) -> str:
    text = f"{error}\n{log}"
    useful = [
        line.strip()
        for line in text.splitlines()
        if any(k in line for k in ("error:", "Error", "not supported", "None is only"))
    ]
    detail = "; ".join(dict.fromkeys(useful))[:800] or _first_line(error)
    return f"Larq Compute Engine could not convert the model: {detail}"


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
    candidates = [(layer.name, _signature(layer)) for layer in _leaf_layers(model)]
    candidates = [(n, s) for n, s in candidates if s is not None]
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


# ---------------------------------------------------------------------------------------------
# Conversion


def _dtype(value: Any, what: str) -> tf.DType:
    if isinstance(value, str):
        value = {"float32": tf.float32, "int8": tf.int8}.get(value, value)
    if value not in (tf.float32, tf.int8):
        raise ConversionError(f"Expected {what} tf.float32 or tf.int8. Received: {value!r}")
    return value


def _run_lce(saved_model_dir: str, in_type: tf.DType, out_type: tf.DType, target: str) -> bytes:
    import larq_compute_engine as lce

    log: list[str] = []
    try:
        with _quiet(), _native_stderr_to(log):
            return lce.convert_saved_model(
                saved_model_dir,
                inference_input_type=in_type,
                inference_output_type=out_type,
                target=target,
            )
    except Exception as e:  # the MLIR converter raises several types
        if "not integer quantized" in str(e) and tf.int8 in (in_type, out_type):
            which = "input" if in_type == tf.int8 else "output"
            raise ConversionError(_int8_io_message(which)) from e
        raise ConversionError(_lce_error_message(e, "".join(log))) from e


def _int8_io_message(what: str) -> str:
    return (
        f"inference_{what}_type=int8 needs a model whose {what} is an int8 tensor (an int8 "
        f"layer right at the model's {what}); this model's {what} stays float32. Convert "
        "with float32 instead"
    )


def _export(model: keras.Model, directory: str) -> None:
    """``model.export`` (a SavedModel with a dynamic batch) into ``directory``."""
    try:
        with _quiet():
            model.export(directory, format="tf_saved_model", verbose=False)
    except Exception as e:  # tracing raises many types
        raise ConversionError(
            f"Could not export the model as a SavedModel (model.export): {_first_line(e)}"
        ) from e


def _check_flatbuffer(flatbuffer: bytes, in_type: tf.DType, out_type: tf.DType) -> None:
    ins, outs = _flatbuffer.io_details(flatbuffer)
    for what, wanted, tensors in (("input", in_type, ins), ("output", out_type, outs)):
        if wanted == tf.int8 and any(t["type"] != "INT8" for t in tensors):
            raise ConversionError(_int8_io_message(what))
    unsupported = _flatbuffer.unsupported_ops(flatbuffer)
    if unsupported:
        detail = ", ".join(f"{u['op']} (at {u['tensor']!r})" for u in unsupported[:5])
        raise ConversionError(
            f"The model has operations that neither TFLite nor LCE implements: {detail}. "
            "Replace the layers computing them"
        )


def _verify(flatbuffer: bytes, reference: Any, inputs: Any, samples: int) -> dict[str, Any]:
    try:
        return _flatbuffer.parity(flatbuffer, reference, inputs, samples=samples)
    except (RuntimeError, ValueError) as e:
        raise ConversionError(
            f"The converted model does not run in LCE's interpreter: {_first_line(e)}"
        ) from e


class _LegacyKerasError(ConversionError, TypeError):
    """A tf-keras (Keras 2) model: a ConversionError, and a TypeError like tfquant's other
    Keras-version checks."""


def _options(target, in_type, out_type, int8, allow_float, rewrite) -> dict[str, Any]:
    return {
        "target": target,
        "inference_input_type": in_type.name,
        "inference_output_type": out_type.name,
        "int8": int8 if isinstance(int8, str) else list(int8),
        "allow_float": allow_float,
        "rewrite": rewrite,
    }


def convert_with_report(
    model_or_path: keras.Model | str | os.PathLike,
    *,
    target: str = "arm",
    inference_input_type: tf.DType | str = tf.float32,
    inference_output_type: tf.DType | str = tf.float32,
    int8: str | list[str] = "auto",
    calibration_data: Any = None,
    allow_float: bool = False,
    rewrite: bool = True,
    verify: bool = True,
    parity_inputs: Any = None,
    parity_samples: int = 8,
    progress: Callable[[str], None] | None = None,
    unsafe: bool = False,
) -> tuple[bytes, ConversionReport]:
    """Convert a tfquant Keras 3 model through Larq Compute Engine and report what it became.

    The (rewritten) model is exported with ``model.export`` into a temporary SavedModel
    directory, converted with ``larq_compute_engine.convert_saved_model`` (the Keras 3
    route, shared/LCE.md) and checked in LCE's interpreter. The SavedModel's batch is
    dynamic, but LCE's converter writes a batch of 1 into the flatbuffer (LCE's interpreter
    runs a larger batch one sample at a time).

    A SavedModel directory (as ``model.export`` writes it) holds no Keras layers: it is
    converted as it is, without the rewrites, without per-layer attribution (so no check
    that declared-binary layers became ``LceBconv2d``), and its parity is checked against
    its own serving signature; the report's notes say so.

    Args:
        model_or_path: a Keras 3 model, or the path of a ``.keras`` / ``.h5`` file or a
            SavedModel directory.
        target: ``"arm"`` or ``"xcore"`` (LCE's targets).
        inference_input_type, inference_output_type: ``tf.float32`` or ``tf.int8`` (int8
            needs a model whose input / output is quantized, e.g. an int8 first layer).
        int8: ``"auto"``: ternary and k-bit (2 to 8 bit) layers with a quantized input
            become int8 kernels whose codes are the trained levels exactly; ``"none"``: they
            stay float32 (LCE's own behaviour); or a list of layer names to export as int8
            (needs a Keras model, not a SavedModel directory).
        calibration_data: representative inputs for int8 activation ranges; ``None`` uses
            random standard-normal inputs (a note in the report says so).
        allow_float: accept layers declared binary that did not become ``LceBconv2d``;
            otherwise they raise :class:`LayerNotBinaryError`.
        rewrite: apply the rewrites of :mod:`tfquant.converters.rewrite` (binary Dense as a
            1x1 binary conv, int8 export). ``False`` converts the model as it is.
        verify: run the flatbuffer in LCE's interpreter against the Keras model.
        parity_inputs: inputs for the parity check (default: ``parity_samples`` random ones).
        parity_samples: how many random inputs the parity check uses by default.
        progress: called with a short message as each step starts.
        unsafe: load model files that carry code (a ``Lambda`` layer's serialized
            function, SavedModel graph ops that read or write files or call Python); by
            default such a file is refused (:mod:`tfquant.converters.safety`). Only for
            files you trust.

    Returns:
        ``(flatbuffer, report)``.

    Raises:
        UnsafeModelError: (a ``ConversionError``) the file carries code and ``unsafe`` is
            false; the message names the layer or graph node.
        ConversionError: bad input (a tf-keras model included: that error is also a
            ``TypeError``), a model LCE cannot convert, or (unless ``allow_float``) a binary
            layer that stays float; the message names the layer and the reason.
    """
    say = progress or (lambda message: None)
    seconds: dict[str, float] = {}
    if target not in _TARGETS:
        raise ConversionError(f"Expected target in {_TARGETS}. Received: target={target!r}")
    in_type = _dtype(inference_input_type, "inference_input_type")
    out_type = _dtype(inference_output_type, "inference_output_type")
    if not (int8 in ("auto", "none") or isinstance(int8, (list, tuple))):
        raise ConversionError(
            f"Expected int8 'auto', 'none' or a list of layer names. Received: int8={int8!r}"
        )
    options = _options(target, in_type, out_type, int8, allow_float, rewrite)

    t = time.perf_counter()
    if not isinstance(model_or_path, keras.Model):
        try:
            check_keras3(model_or_path, "model")
        except TypeError as e:  # a tf-keras model: name both Keras packages
            raise _LegacyKerasError(str(e)) from None
    if isinstance(model_or_path, keras.Model):
        model = model_or_path
    elif isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        _check_path(path)
        if os.path.isdir(path):
            return _convert_saved_model_dir(
                path,
                options,
                verify=verify,
                parity_inputs=parity_inputs,
                parity_samples=parity_samples,
                say=say,
                unsafe=unsafe,
            )
        say(f"loading {path}")
        model = load_model(path, unsafe=unsafe)
    else:
        raise ConversionError(
            "Expected a Keras model or the path of a .keras / .h5 file or SavedModel "
            f"directory. Received: {type(model_or_path).__name__}"
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ConversionError(
            f"Expected a built model with known inputs. Received: {model.name!r}; call it on "
            "data or build it from keras.Input first"
        )
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    say("planning and rewriting layers")
    plans = _rewrite.plan_layers(model, int8 if rewrite else "none")
    if isinstance(int8, (list, tuple)):
        unknown = [name for name in int8 if name not in {p.name for p in plans}]
        if unknown:
            raise ConversionError(
                f"Expected int8 layer names among the model's quantized layers "
                f"{[p.name for p in plans]}. Received unknown: {unknown}"
            )
    notes: list[str] = []
    if rewrite:
        try:
            deploy, notes = _rewrite.rewrite_model(model, plans, calibration_data=calibration_data)
        except ValueError as e:
            raise ConversionError(f"Could not rewrite the model: {e}") from e
    else:
        deploy = model
        for p in plans:
            if p.rewrite:
                p.target, p.rewrite = "float", None
                p.reason = p.reason or "rewrites disabled (rewrite=False)"
    seconds["rewrite"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="tfquant-export-") as tmp:
        t = time.perf_counter()
        say("exporting a SavedModel (model.export)")
        saved_model = os.path.join(tmp, "saved_model")
        _export(deploy, saved_model)
        seconds["export"] = time.perf_counter() - t

        t = time.perf_counter()
        say("converting with Larq Compute Engine")
        flatbuffer = _run_lce(saved_model, in_type, out_type, target)
        seconds["convert"] = time.perf_counter() - t
    _check_flatbuffer(flatbuffer, in_type, out_type)

    matched = _attribute(model, flatbuffer)
    layers = []
    for p in plans:
        ops = matched.get(p.name, [])
        became = _became(ops)
        reason = p.reason
        if became != "binary" and p.declared == "binary" and reason is None:
            reason = "LCE did not match its binary convolution pattern (shared/LCE.md)"
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
    not_binary = [r for r in layers if r.declared == "binary" and r.became != "binary"]
    if not_binary and not allow_float:
        detail = "; ".join(f"{r.name!r} ({r.kind}): {r.reason}" for r in not_binary)
        raise LayerNotBinaryError(
            f"{len(not_binary)} layer(s) declared binary did not become a binary kernel "
            f"(LceBconv2d): {detail}. Pass allow_float=True (--allow-float) to accept float "
            "kernels for them"
        )
    if not_binary:
        notes.append(f"{len(not_binary)} binary layer(s) kept as float (allow_float)")

    from tfquant.models import summary

    sizes: dict[str, float | None] = dict(_flatbuffer.size_breakdown(flatbuffer))
    sizes["ideal_bitpacked"] = summary(model, print_fn=None).memory_bytes

    report_parity = None
    if verify:
        t = time.perf_counter()
        say("checking parity with LCE's interpreter")
        report_parity = _verify(flatbuffer, model, parity_inputs, parity_samples)
        seconds["verify"] = time.perf_counter() - t
    report = ConversionReport(
        ops=_flatbuffer.op_counts(flatbuffer),
        layers=layers,
        sizes=sizes,
        parity=report_parity,
        options=options,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        notes=notes,
    )
    return flatbuffer, report


def _convert_saved_model_dir(
    path: str,
    options: dict[str, Any],
    *,
    verify: bool,
    parity_inputs: Any,
    parity_samples: int,
    say: Callable[[str], None],
    unsafe: bool = False,
) -> tuple[bytes, ConversionReport]:
    """Convert a SavedModel directory as it is (no Keras layers to rewrite or attribute).

    Its graph is scanned first (:func:`tfquant.converters.safety.check`): LCE's converter
    runs its init and restore ops and the parity check runs its serving signature, so ops
    that read or write files or call Python are refused unless ``unsafe``."""
    from tfquant.converters import safety as _safety

    _safety.check(path, unsafe=unsafe)
    if not isinstance(options["int8"], str):
        raise ConversionError(
            "Expected int8 'auto' or 'none' for a SavedModel directory. Received: a list of "
            f"layer names ({options['int8']}); int8 export by layer name rewrites Keras layers, "
            "which a SavedModel written by model.export does not hold: convert the .keras file"
        )
    in_type = _dtype(options["inference_input_type"], "inference_input_type")
    out_type = _dtype(options["inference_output_type"], "inference_output_type")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    say(f"converting the SavedModel {path} with Larq Compute Engine")
    flatbuffer = _run_lce(path, in_type, out_type, options["target"])
    seconds["convert"] = time.perf_counter() - t
    _check_flatbuffer(flatbuffer, in_type, out_type)
    notes = [
        "SavedModel directory: converted as it is. It holds no Keras layers, so tfquant's "
        "rewrites were not applied (a binary Dense stays FULLY_CONNECTED; ternary and k-bit "
        "weights stay float32), no op was attributed to a layer, and whether each binary "
        "layer became LceBconv2d was not checked; convert the .keras file for those",
        "ideal bit-packed size unknown (needs the Keras layers)",
    ]
    sizes: dict[str, float | None] = dict(_flatbuffer.size_breakdown(flatbuffer))
    sizes["ideal_bitpacked"] = None
    report_parity = None
    if verify:
        t = time.perf_counter()
        say("checking parity with LCE's interpreter")
        try:
            with _quiet():
                reference = _flatbuffer.SavedModelFunction(path)
        except Exception as e:  # TensorFlow's loader raises many types
            raise ConversionError(
                f"Could not load the SavedModel {path!r} for the parity check: {_first_line(e)}"
            ) from e
        report_parity = _verify(flatbuffer, reference, parity_inputs, parity_samples)
        report_parity["reference"] = "SavedModel serving signature"
        seconds["verify"] = time.perf_counter() - t
    report = ConversionReport(
        ops=_flatbuffer.op_counts(flatbuffer),
        layers=[],
        sizes=sizes,
        parity=report_parity,
        options={**options, "rewrite": False},
        seconds={k: round(v, 3) for k, v in seconds.items()},
        notes=notes,
    )
    return flatbuffer, report


def convert(
    model_or_path: keras.Model | str | os.PathLike,
    *,
    target: str = "arm",
    inference_input_type: tf.DType | str = tf.float32,
    inference_output_type: tf.DType | str = tf.float32,
    int8: str | list[str] = "auto",
    calibration_data: Any = None,
    allow_float: bool = False,
    rewrite: bool = True,
    unsafe: bool = False,
) -> bytes:
    """Convert a tfquant Keras model to an LCE TFLite flatbuffer (bytes).

    Same arguments as :func:`convert_with_report` (without the parity check).

    Raises:
        ConversionError: see :func:`convert_with_report`.
    """
    flatbuffer, _ = convert_with_report(
        model_or_path,
        target=target,
        inference_input_type=inference_input_type,
        inference_output_type=inference_output_type,
        int8=int8,
        calibration_data=calibration_data,
        allow_float=allow_float,
        rewrite=rewrite,
        verify=False,
        unsafe=unsafe,
    )
    return flatbuffer
