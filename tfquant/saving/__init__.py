"""Opening model files safely: one loader and one scan, for the converter and the CLI.

* :mod:`tfquant.saving.scan`: find what in a ``.keras`` / ``.h5`` file or a SavedModel
  would run code, reading it as data (formerly ``tfquant.converters.safety``, still
  importable by that name); the SavedModel graphs in :mod:`tfquant.saving.saved_model_scan`,
  its :class:`Finding` and :class:`UnsafeModelError` in :mod:`tfquant.saving.findings`;
* :mod:`tfquant.saving.load`: :func:`load_model`, which scans, then loads with Keras'
  safe mode, and turns Keras' errors into a :class:`ConversionError` that says what is
  wrong;
* :mod:`tfquant.saving.errors`: :class:`ConversionError`.

This package sits below :mod:`tfquant.converters` and :mod:`tfquant.cli`, which both use
it. May import: ``tfquant.errors``, ``tfquant._files``, ``tfquant._keras``; nothing from
``tfquant.converters``.
"""

from tfquant.saving import load, scan
from tfquant.saving.errors import ConversionError
from tfquant.saving.load import load_model
from tfquant.saving.scan import ALLOW_HINT, Finding, UnsafeModelError

__all__ = [
    "ALLOW_HINT",
    "ConversionError",
    "Finding",
    "UnsafeModelError",
    "load",
    "load_model",
    "scan",
]
