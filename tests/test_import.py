"""`import tfquant` selects Keras 2, or says how to fix an earlier Keras 3 import."""

import os
import subprocess
import sys


def _run(code):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_import_selects_legacy_keras():
    proc = _run(
        "import tfquant, os, tensorflow as tf;"
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.layers.Layer.__module__)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "tf_keras.src.engine.base_layer"]


def test_import_after_keras3_tensorflow_raises_with_instructions():
    proc = _run("import tensorflow as tf; tf.keras.layers; import tfquant")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "TF_USE_LEGACY_KERAS=1" in proc.stderr
