"""Keras 3 -> Larq Compute Engine TFLite conversion.

The model is exported with ``model.export`` (a SavedModel) and converted with LCE's
``convert_saved_model``, the route that works for Keras 3. ``convert`` returns the
flatbuffer; ``convert_with_report`` also says, per tfquant layer, whether it became
``LceBconv2d``, int8 or float (and why), the size breakdown and the parity against Keras.

Modules: :mod:`~tfquant.converters.plan` (which kernel each layer should become, read from
its quantizers' declared grids), :mod:`~tfquant.converters.int8` (scales that make trained
values exact int8 codes), :mod:`~tfquant.converters.deploy` (the layers put in place),
:mod:`~tfquant.converters.rewrite` (the rewritten model), :mod:`~tfquant.converters.lce`
(the conversion and its report), :mod:`~tfquant.converters.validate` and
:mod:`~tfquant.converters.flatbuffer` (reading flatbuffers),
:mod:`~tfquant.converters.bench` and :mod:`~tfquant.converters.device` (benchmarks).
Model files are opened through :mod:`tfquant.saving` (``load_model`` and the scan that
refuses files carrying code, ``UnsafeModelError``, unless ``unsafe=True``); ``safety`` is
that scan's former name, kept.

May import: ``tfquant.saving``, ``tfquant.graph``, ``tfquant.models``, ``tfquant.layers``,
``tfquant.quantizers`` (the base class and ``Grid``; no quantizer class is named here),
``tfquant._files``, ``tfquant._keras``, ``tfquant.errors``.
"""

import sys

from tfquant.converters import bench, device, flatbuffer, rewrite, validate
from tfquant.converters.lce import (
    ConversionError,
    ConversionReport,
    LayerNotBinaryError,
    LayerReport,
    convert,
    convert_with_report,
    load_model,
)
from tfquant.saving import scan as safety
from tfquant.saving.scan import UnsafeModelError

# The scan's former home: `import tfquant.converters.safety` keeps working too.
sys.modules[f"{__name__}.safety"] = safety

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
