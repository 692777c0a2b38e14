"""tfquant is Keras 3: any import order works, no environment variable is read or set, and
tf-keras objects or another Keras backend get errors that say what to change."""

import itertools
import os
import subprocess
import sys

import pytest

_MODULES = {"tf": "import tensorflow as tf", "keras": "import keras", "tfquant": "import tfquant"}

# After the imports: tfquant layers build in a keras.Sequential and train one step.
_USE = """
import numpy as np
model = keras.Sequential([keras.Input((4,)),
    tfquant.layers.QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign")])
model.compile(optimizer=tfquant.MirrorDescent(), loss="mse")
model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0)
print(keras.__version__.split(".")[0], keras.backend.backend(),
      os.environ.get("TF_USE_LEGACY_KERAS"), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""


def _run(code: str, **env_changes: str | None) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")
    }
    for key, value in env_changes.items():
        if value is not None:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("order", list(itertools.permutations(_MODULES)), ids=lambda o: "-".join(o))
def test_every_import_order_works_and_sets_no_environment_variable(order):
    code = "import os\n" + "\n".join(_MODULES[m] for m in order) + "\n" + _USE
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["3", "tensorflow", "None", "None"]


def test_legacy_keras_variable_does_not_change_tfquant():
    # A user who exported TF_USE_LEGACY_KERAS=1 (for larq, say) still gets Keras 3 layers.
    proc = _run("import os, tensorflow as tf, keras, tfquant\n" + _USE, TF_USE_LEGACY_KERAS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["3", "tensorflow", "1", "None"]


def test_other_keras_backend_is_a_clear_import_error():
    # Keras' jax, torch and numpy backends all need jax or torch, which this machine does
    # not have, so Keras itself cannot start on them here. Stand-in: Keras starts on
    # TensorFlow and then reports another backend, which is what tfquant's check reads.
    code = "import keras\nkeras.backend.backend = lambda: 'jax'\nimport tfquant"
    proc = _run(code)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "Received: Keras backend 'jax'" in proc.stderr
    assert "KERAS_BACKEND=tensorflow" in proc.stderr


_LEGACY = """
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, keras, tfquant
from tfquant import converters
legacy = tf.keras  # tf-keras (Keras 2)
assert legacy.layers.Layer.__module__.startswith("tf_keras"), legacy.layers.Layer.__module__
model = legacy.Sequential([legacy.Input((4,)), legacy.layers.Dense(2)])
for name, call in [
    ("finalize", lambda: tfquant.finalize(model)),
    ("summary", lambda: tfquant.summary(model, print_fn=None)),
    ("convert", lambda: converters.convert(model)),
    ("layer_on_legacy_input", lambda: tfquant.layers.QuantDense(2)(legacy.Input((4,)))),
    ("mirror_descent", lambda: tfquant.MirrorDescent().build(model.trainable_variables)),
]:
    try:
        call()
    except Exception as e:
        message = str(e)
        ok = ("tf_keras" in message or "tf-keras" in message) and "import keras" in message
        print(name, "OK" if ok else "UNCLEAR: " + type(e).__name__ + ": " + message[:300])
    else:
        print(name, "NO ERROR")
"""


def test_legacy_tf_keras_objects_get_an_error_naming_both_packages():
    # (tf-keras itself refuses Keras 3 objects before tfquant runs in two places, with its own
    # messages: a tfquant layer added to a tf-keras Sequential ("The added layer must be an
    # instance of class Layer") and MirrorDescent given to a tf-keras compile ("Could not
    # interpret optimizer identifier"). The optimizer's own check is reached by build.)
    proc = _run(_LEGACY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines == {
        "finalize": "OK",
        "summary": "OK",
        "convert": "OK",
        "layer_on_legacy_input": "OK",
        "mirror_descent": "OK",
    }, proc.stdout
