"""Keras 3 model -> Larq Compute Engine TFLite flatbuffer, with a report and clear errors.

The route (the one Larq Compute Engine 0.16 takes for Keras 3 models): the model, after the rewrites of
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

The report's classes live in :mod:`tfquant.converters.report`, model loading in
:mod:`tfquant.saving`. May import: ``tfquant.converters.rewrite``, ``.report``,
``.flatbuffer``, ``tfquant.saving``, ``tfquant.models``, ``tfquant._keras``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from tfquant._keras import check_keras3, keras, tf
from tfquant.converters import flatbuffer as _flatbuffer
from tfquant.converters import rewrite as _rewrite
from tfquant.converters.report import ConversionReport, LayerReport, layer_reports
from tfquant.saving import scan as _safety
from tfquant.saving.errors import ConversionError
from tfquant.saving.load import check_path as _check_path
from tfquant.saving.load import load_model
from tfquant.saving.load import quiet as _quiet

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


class LayerNotBinaryError(ConversionError):
    """A layer declared binary (1-bit inputs and kernel) did not become ``LceBconv2d``."""


# ---------------------------------------------------------------------------------------------
# Loading


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


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
    route) and checked in LCE's interpreter. The SavedModel's batch is
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
            default such a file is refused (:mod:`tfquant.saving.scan`). Only for
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

    layers = layer_reports(model, plans, flatbuffer)
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

    Its graph is scanned first (:func:`tfquant.saving.scan.check`): LCE's converter
    runs its init and restore ops and the parity check runs its serving signature, so ops
    that read or write files or call Python are refused unless ``unsafe``."""
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
