"""tfquant: train binary and low-bit networks in Keras, ship them through Larq Compute Engine.

Importing tfquant selects the Keras 2 API (``TF_USE_LEGACY_KERAS=1``) when TensorFlow is not
imported yet, and raises ``ImportError`` with instructions when TensorFlow was already
imported with Keras 3 as ``tf.keras``.
"""

from tfquant import (
    _keras,  # noqa: F401  (must run before anything imports TensorFlow)
    callbacks,
    datasets,
    layers,
    methods,  # registers BinaryRelax's quantizer, so saved models load after `import tfquant`
    models,
    quantizers,
)
from tfquant.models import finalize, summary
from tfquant.optimizers import MirrorDescent

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "datasets",
    "layers",
    "methods",
    "models",
    "quantizers",
    "finalize",
    "summary",
    "MirrorDescent",
    "__version__",
]
