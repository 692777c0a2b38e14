"""The main job: train a zoo network on a real dataset, finalize, save, convert, benchmark.

``tfquant train`` is a thin command line over :func:`run`. Artifacts in ``out``:
``model.keras`` (finalized: kernels hold their exact quantized values), ``model.tflite``
(LCE flatbuffer), ``report.json`` and ``report.md`` (accuracy, size, latency, conversion
report, model summary) and ``curves.png`` (training curves; needs matplotlib).

The package: :mod:`~tfquant.train.config` (what a run is, checked),
:mod:`~tfquant.train.checkpoints` (``--resume``), :mod:`~tfquant.train.data`,
:mod:`~tfquant.train.report` and :mod:`~tfquant.train.job` (the run). It names no method:
it reads each from :mod:`tfquant.methods`. It imports every layer below it (the zoo, the
datasets, the converter) and never the CLI.
"""

from __future__ import annotations

from tfquant.train.checkpoints import CHECKPOINTS, checkpoint_state
from tfquant.train.config import (
    FIELDS,
    METHODS,
    TrainConfig,
    check_config,
    method_option_fields,
    method_options,
)
from tfquant.train.job import ARTIFACTS, run
from tfquant.train.report import layer_bits

__all__ = [
    "METHODS",
    "ARTIFACTS",
    "CHECKPOINTS",
    "FIELDS",
    "TrainConfig",
    "run",
    "check_config",
    "checkpoint_state",
    "layer_bits",
    "method_options",
    "method_option_fields",
]
