"""A run's data: a dataset's arrays or an image-folder tree, limited by ``--limit``, and the
training batches of each epoch (which depend only on the seed and the epoch, so a resumed
run sees the batches an uninterrupted one would).

Imports :mod:`tfquant.datasets`, :mod:`tfquant.distribute`, :mod:`tfquant.methods` and
:mod:`tfquant.train.config`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tfquant import datasets, distribute, methods
from tfquant.train.config import TrainConfig


@dataclasses.dataclass
class _Data:
    """The data of a run: ``x``, ``y`` arrays (a dataset's training split; for an image
    folder, 20 batches for BatchNorm and calibration, or all of it for TSQ), the held-out
    ``xte``, ``yte``, the input shape and classes, and ``batches(epochs, initial_epoch)``
    -> (dataset, steps per epoch) of the training batches, which depend only on the seed and
    the epoch."""

    x: np.ndarray
    y: np.ndarray
    xte: np.ndarray
    yte: np.ndarray
    input_shape: tuple
    classes: int
    described: str  # what the progress line says it trains on
    batches: Callable[[int, int], tuple[Any, int]]
    batch_size: int

    @property
    def bn_data(self) -> np.ndarray:
        """The inputs BatchNorm is re-estimated on: the first 20 training batches."""
        return self.x[: 20 * self.batch_size]


def _array_batches(x: np.ndarray, y: np.ndarray, config: TrainConfig) -> Callable:
    """``_Data.batches`` over arrays: :func:`tfquant.distribute.epoch_batches`."""
    return lambda epochs, initial: distribute.epoch_batches(
        x, y, config.batch_size, config.seed, epochs, initial
    )


def _load(config: TrainConfig, say) -> _Data:
    if config.data_dir is not None:
        say(f"reading the image folders in {config.data_dir}")
        folder = datasets.image_folder(
            config.data_dir,
            config.image_size,
            batch_size=config.batch_size,
            validation_split=config.validation_split,
            seed=config.seed,
            augment=config.augment,
        )
        steps = math.ceil(folder.train_size / config.batch_size)
        if config.limit:
            steps = min(steps, math.ceil(config.limit / config.batch_size))
        first = folder.train.take(steps)
        # Evaluation, BatchNorm re-estimation and calibration read arrays: the held-out
        # split, and 20 training batches (or all of it, for a method that reads the arrays).
        xte, yte = datasets.to_numpy(
            folder.validation, max(config.limit // 4, 8) if config.limit else None
        )
        whole = methods.get(config.method).reads_arrays  # its fit reads the arrays
        x, y = datasets.to_numpy(first, None if whole else 20 * config.batch_size)
        input_shape, classes = folder.input_shape, len(folder.class_names)
        say(
            f"{folder.train_size} training and {folder.validation_size} held-out images, "
            f"{classes} classes, {input_shape[0]}x{input_shape[1]}x{input_shape[2]}"
        )
        return _Data(
            x=x,
            y=y,
            xte=xte,
            yte=yte,
            input_shape=input_shape,
            classes=classes,
            described=config.data_dir,
            # such a method trains on the arrays it reads (without further augmentation)
            batches=_array_batches(x, y, config)
            if whole
            else lambda epochs, initial: (folder.train_epochs(epochs, initial, steps), steps),
            batch_size=config.batch_size,
        )
    say(f"loading {config.dataset}")
    (xtr, ytr), (xte, yte) = datasets.load(config.dataset)
    if config.limit:
        xtr, ytr = xtr[: config.limit], ytr[: config.limit]
        xte, yte = xte[: max(config.limit // 4, 8)], yte[: max(config.limit // 4, 8)]
    return _Data(
        x=xtr,
        y=ytr,
        xte=xte,
        yte=yte,
        input_shape=xtr.shape[1:],
        classes=datasets.NUM_CLASSES[config.dataset],
        described=f"{len(xtr)} samples",
        batches=_array_batches(xtr, ytr, config),
        batch_size=config.batch_size,
    )
