"""Select the Keras 2 API (tf-keras) before TensorFlow is imported.

Larq Compute Engine's converter and tensorflow-model-optimization need the Keras 2 API, and
Keras 3 on TF 2.16 crashes TF's TFLite converter on BatchNorm models (shared/LCE.md). Every
tfquant module imports TensorFlow through this module so the environment is set first.
"""

from __future__ import annotations

import os
import sys

_HOW_TO_FIX = (
    "tfquant needs the Keras 2 API (tf-keras). Set the environment variable "
    "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, e.g. `import tfquant` before "
    "`import tensorflow`, or `export TF_USE_LEGACY_KERAS=1` in the shell."
)


def _select_legacy_keras() -> None:
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        # TensorFlow's C++ start-up lines ("Unable to register cuDNN factory"... at ERROR level
        # on every import) are noise for users; Python exceptions still carry real errors.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


_select_legacy_keras()

import tensorflow as tf  # noqa: E402


def _check_keras_version() -> None:
    module = tf.keras.layers.Layer.__module__.split(".")[0]
    if module != "tf_keras":
        raise ImportError(
            f"TensorFlow was imported with the package {module!r} as tf.keras (Keras 3); "
            f"expected Keras 2 (tf-keras). {_HOW_TO_FIX}"
        )


_check_keras_version()

keras = tf.keras

__all__ = ["tf", "keras"]
