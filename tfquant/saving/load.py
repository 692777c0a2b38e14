"""Load a Keras model file safely: scan it as data first, then let Keras load it.

:func:`load_model` is the one way tfquant opens a model file, for the converter and the
command line alike: the path is checked (a regular ``.keras`` / ``.h5`` file, or a
SavedModel directory where that is allowed), the file is scanned for code
(:mod:`tfquant.saving.scan`) and refused if it carries any (unless ``unsafe``), and Keras'
errors become a :class:`~tfquant.saving.errors.ConversionError` that says what is wrong.

May import: ``tfquant.saving.scan``, ``tfquant.saving.errors``, ``tfquant._files`` and
``tfquant._keras``.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator

from tfquant._files import FileError, check_input
from tfquant._keras import keras, tf
from tfquant.saving.errors import ConversionError
from tfquant.saving.scan import ALLOW_HINT, UnsafeModelError, check

__all__ = ["check_path", "is_saved_model_dir", "load_model", "quiet"]


def is_saved_model_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))


def check_path(path: str) -> None:
    """Refuse a missing path, a directory without ``saved_model.pb`` and anything that is
    not a regular file (a FIFO would block the first ``open`` forever, ``/dev/zero`` never
    ends), before anything opens it."""
    try:
        check_input(path, "model", directory=True)
    except FileError as e:
        raise ConversionError(str(e)) from None
    if os.path.isdir(path):
        if not is_saved_model_dir(path):
            raise ConversionError(
                f"Expected a SavedModel directory (with saved_model.pb), a .keras file or a "
                f".h5 file. Received: {path!r}, a directory without saved_model.pb"
            )
    elif not path.endswith((".keras", ".h5", ".hdf5")):
        raise ConversionError(
            f"Expected a .keras or .h5 file or a SavedModel directory. Received: {path!r}"
        )


# Keras' safe-mode refusals (serialization_lib, Lambda, TFSMLayer, TorchModuleWrapper,
# lookup vocabularies) all advise these; the scan of tfquant.saving.scan finds the
# same cases first, so this is the fallback for what it does not know.
_KERAS_SAFE_MODE_MARKERS = ("safe_mode=False", "enable_unsafe_deserialization")
# Exceptions Keras lets through from rebuilding a malformed config; their text ("list index
# out of range", a missing key) says nothing to the user.
_KERAS_INTERNAL_ERRORS = (IndexError, KeyError, AttributeError, AssertionError)


def _keras_load_error(path: str, error: Exception, unsafe: bool) -> ConversionError:
    """The error to raise for ``keras.models.load_model`` failing on ``path``: Keras'
    safe-mode refusals become :class:`UnsafeModelError`, the rest a short
    "Could not load" (the innermost cause, without Keras' dump of the full config)."""
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
    (:func:`tfquant.saving.scan.check`), and a file carrying Python code (a
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
            (``tfquant.converters.convert_with_report`` converts such a directory as it is).
    """
    path = os.fspath(path)
    check_path(path)
    if os.path.isdir(path):
        raise ConversionError(
            f"Expected a .keras or .h5 file. Received: the SavedModel directory {path!r}, "
            "which holds no Keras layers (Keras 3's model.export writes none), so it cannot "
            "be loaded as a Keras model; use the .keras file it was exported from"
        )
    check(path, unsafe=unsafe)  # also: not the format its name says
    try:
        with quiet():
            model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:  # Keras raises many types here
        raise _keras_load_error(path, e, unsafe) from e
    if not isinstance(model, keras.Model):
        raise ConversionError(
            f"Expected a Keras model in {path!r}. Received: a {type(model).__name__}"
        )
    return model


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            yield
        finally:
            logger.setLevel(level)
