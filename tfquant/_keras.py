"""Keras 3 (``import keras``) on the TensorFlow backend: the one place tfquant imports both.

tfquant's quantizers are ``tf.custom_gradient`` functions in the op shapes Larq Compute
Engine recognises, so the Keras backend must be TensorFlow. Import order is
free and no environment variable is read or set: ``import keras`` is Keras 3 whatever
``TF_USE_LEGACY_KERAS`` says; only ``tf.keras`` follows that variable, and tfquant never uses
``tf.keras``.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tfquant needs Keras 3 on the TensorFlow backend (its quantizers use "
        "tf.custom_gradient and TensorFlow ops that Larq Compute Engine converts). "
        f"Received: Keras backend {keras.backend.backend()!r}. Set the environment variable "
        'KERAS_BACKEND=tensorflow before importing keras, or set "backend": "tensorflow" '
        "in ~/.keras/keras.json."
    )

_LEGACY_HINT = (
    "tfquant is built on Keras 3 (the `keras` package, `import keras`); this object comes "
    "from the legacy tf.keras (the `tf_keras` package, Keras 2, selected by "
    "TF_USE_LEGACY_KERAS=1). Build the model with `import keras` (keras.Sequential, "
    "keras.layers, keras.Model) and tfquant.layers, or load it with "
    "keras.models.load_model after saving it as .keras."
)


def is_legacy_keras(obj: Any) -> bool:
    """Whether ``obj`` (or its class) comes from tf-keras / Keras 2 rather than Keras 3."""
    cls = obj if isinstance(obj, type) else type(obj)
    return any(
        c.__module__.split(".")[0] == "tf_keras"
        or c.__module__.startswith(("tensorflow.python.keras", "keras.engine"))
        for c in cls.__mro__
    )


def check_keras3(obj: Any, what: str = "model") -> None:
    """Raise ``TypeError`` naming both Keras packages when ``obj`` is a tf-keras object."""
    if is_legacy_keras(obj):
        raise TypeError(
            f"Expected a Keras 3 {what} (keras package). Received: {type(obj).__module__}."
            f"{type(obj).__name__} from tf_keras. {_LEGACY_HINT}"
        )


def iter_layers(model: Any) -> list:
    """Every layer inside ``model`` (nested models and layers owned by layers included),
    ``model`` itself first. Keras 3 has no public recursive walk (tf-keras' ``submodules``);
    ``_flatten_layers`` is the one Keras uses itself, stable across Keras 3 releases."""
    return list(model._flatten_layers(include_self=True, recursive=True))


__all__ = ["tf", "keras", "is_legacy_keras", "check_keras3", "iter_layers"]
