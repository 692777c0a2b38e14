"""What ``tfquant train`` runs: :class:`TrainConfig`, the numeric settings' ranges
(:data:`FIELDS`, which the command line's flags also read) and :func:`check_config`; the
method's options resolved for a configuration (:func:`method_options`).

Imports :mod:`tfquant.methods`, the zoo's and the datasets' names, :mod:`tfquant.distribute`
and :mod:`tfquant.errors`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tfquant import datasets, distribute, methods, zoo
from tfquant.errors import ConfigError
from tfquant.methods.base import Method, Option

__all__ = ["METHODS", "TrainConfig", "FIELDS", "check_config", "method_options"]

# the built-in methods' names (tfquant.methods.names() also lists those registered later)
METHODS = tuple(methods.names())


@dataclasses.dataclass
class TrainConfig:
    """What ``tfquant train`` runs. Defaults are the README's main job."""

    dataset: str = "fashion_mnist"
    model: str = "bireal_cnn"
    method: str = methods.DEFAULT
    epochs: int = 2
    batch_size: int = 128
    learning_rate: float | None = None  # None: the method's default
    # the methods' declared options (tfquant.methods), None or these defaults: not given
    finetune_epochs: int | None = None  # epochs of TSQ's step 3 (None: epochs // 3, >= 1)
    bits: int | None = None  # bits of weights and activations (None: the method's default)
    learn_bits: bool = False  # learn each layer's weight bit-width, starting at `bits`
    dropbits: str = "A"  # DropBits scheme "A" (range), "B" (resolution) or "none"
    limit: int | None = None  # use only the first `limit` training (and limit//4 test) samples
    data_dir: str | None = None  # an image-folder tree (one folder per class) instead of dataset
    image_size: str | None = None  # data_dir: "H,W" to resize to (None: the images' own size)
    augment: bool = False  # data_dir: random flips and shifts of the training images
    validation_split: float = 0.1  # data_dir: the held-out fraction the report evaluates on
    seed: int = 0
    out: str = "runs/train"
    overwrite: bool = False
    convert: bool = True
    # 0: quiet; 1: a line per epoch and Keras' progress bar; 2: a line per epoch (a log);
    # None: 1 on a terminal, else 2
    verbose: int | None = None
    strategy: str = "none"  # "mirrored": tf.distribute (several workers when TF_CONFIG says so)
    resume: bool = False  # continue the run whose checkpoints are in out/checkpoints


# The numeric settings of TrainConfig with their ranges, written once: check_config and
# the command line's flags (tfquant.cli.train) both read them. The methods' own options
# (bits, ...) are declared by the methods (tfquant.methods).
FIELDS: tuple[Option, ...] = (
    Option("epochs", int, 2, "epochs to train", min=1, max=10_000),
    Option("batch_size", int, 128, "training batch size", min=1, max=65_536),
    Option("learning_rate", float, None, "default: the method's", min=0, open_interval=True),
    Option(
        "validation_split",
        float,
        0.1,
        "with --data-dir: held-out fraction",
        min=0,
        max=1,
        open_interval=True,
    ),
    Option("limit", int, None, "train on the first N samples only", min=8),
    Option(
        "seed", int, 0, "seed of the initialization, the batches and step 2", min=0, max=2**32 - 1
    ),
)


def method_option_fields() -> tuple[str, ...]:
    """The TrainConfig fields that are methods' options (declared by some method)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return tuple(n for n in methods.options() if n in names)


def _given(config: TrainConfig, name: str) -> bool:
    """Whether ``config`` sets method option ``name`` (not None nor the field's default)."""
    default = TrainConfig.__dataclass_fields__[name].default
    value = getattr(config, name)
    return value is not None and value != default


def check_config(config: TrainConfig) -> None:
    """Raise :class:`~tfquant.errors.ConfigError` (a ValueError) naming what was expected
    and what was received."""
    if config.strategy not in distribute.STRATEGIES:
        raise ConfigError(
            f"Expected strategy in {distribute.STRATEGIES}. Received: {config.strategy!r}"
        )
    if config.data_dir is None and (config.image_size is not None or config.augment):
        raise ConfigError(
            "Expected image_size and augment only with data_dir (an image-folder tree). "
            f"Received: image_size={config.image_size!r}, augment={config.augment!r}"
        )
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise ConfigError(
            f"Expected data_dir an existing directory with one folder per class. Received: "
            f"{config.data_dir!r}"
        )
    if config.data_dir is None and config.dataset not in datasets.DATASETS:
        raise ConfigError(
            f"Unknown dataset {config.dataset!r}. Expected one of {sorted(datasets.DATASETS)}."
        )
    if config.model not in zoo.MODELS:
        raise ConfigError(f"Unknown model {config.model!r}. Expected one of {sorted(zoo.MODELS)}.")
    method = methods.get(config.method)
    for field in FIELDS:
        value = getattr(config, field.name)
        if value is None and field.default is not None:
            raise ConfigError(f"Expected {field.name} {field.describe_range()}. Received: None")
        field.check(value)
    method_options(config, method)


def method_options(config: TrainConfig, method: Method | None = None) -> dict[str, Any]:
    """The method's resolved options for ``config`` (``zoo.build``'s ``method_options``):
    the TrainConfig fields the method declares, defaults where not given.

    Raises:
        ConfigError: an option given that the method does not declare (naming both), a
            value out of range, or one the method refuses for this run.
    """
    method = method or methods.get(config.method)
    declared = {o.name for o in method.options}
    for name in method_option_fields():
        if name not in declared and _given(config, name):
            who = methods.declaring(name)
            who_text = repr(who[0]) if len(who) == 1 else " or ".join(who)
            raise ConfigError(
                f"Expected {name} only with method {who_text}. Received: "
                f"{name}={getattr(config, name)!r} with method {config.method!r}"
            )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = sorted(declared - fields)
    if missing:
        raise ConfigError(
            f"Expected method {method.name!r}'s options among tfquant train's settings "
            f"{sorted(fields)}. Received: options {missing}"
        )
    options = method.resolve({name: getattr(config, name) for name in declared})
    method.check(options, config.epochs)
    return options
