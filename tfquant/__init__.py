"""tfquant: train binary and low-bit networks in Keras 3, ship them through Larq Compute Engine.

Keras 3 (``import keras``) on the TensorFlow backend; ``tensorflow``, ``keras`` and
``tfquant`` import in any order, and tfquant reads and sets no environment variable.
"""

from tfquant import (
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
