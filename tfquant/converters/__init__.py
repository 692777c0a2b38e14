"""Keras 3 -> Larq Compute Engine TFLite conversion (installed as ``tfquant.converters``).

The model is exported with ``model.export`` (a SavedModel) and converted with LCE's
``convert_saved_model``, the route that works for Keras 3. ``convert`` returns the flatbuffer; ``convert_with_report`` also says, per tfquant layer,
whether it became ``LceBconv2d``, int8 or float (and why), the size breakdown and the
parity against Keras. See :mod:`tfquant.converters.rewrite` for the rewrites past LCE's
limits (binary Dense, ternary / k-bit weights as exact int8), and
:mod:`tfquant.converters.safety` for the scan that refuses model files carrying code
(``UnsafeModelError``) unless ``unsafe=True``.
"""

from tfquant.converters import bench, device, flatbuffer, rewrite, safety, validate
from tfquant.converters.lce import (
    ConversionError,
    ConversionReport,
    LayerNotBinaryError,
    LayerReport,
    convert,
    convert_with_report,
    load_model,
)
from tfquant.converters.safety import UnsafeModelError

__all__ = [
    "convert",
    "convert_with_report",
    "load_model",
    "ConversionError",
    "LayerNotBinaryError",
    "UnsafeModelError",
    "ConversionReport",
    "LayerReport",
    "flatbuffer",
    "rewrite",
    "bench",
    "device",
    "safety",
    "validate",
]
