"""Loaders against the real offline files: shapes, dtypes, label ranges, class balance."""

import gzip
import pickle

import numpy as np
import pytest

from tfquant import datasets


def _check(split, n, shape, classes):
    x, y = split
    assert x.shape == (n, *shape) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert set(np.unique(y)) == set(range(classes))


def test_fashion_mnist():
    train, test = datasets.load_fashion_mnist()
    _check(train, 60000, (28, 28, 1), 10)
    _check(test, 10000, (28, 28, 1), 10)
    assert np.all(np.bincount(train[1]) == 6000) and np.all(np.bincount(test[1]) == 1000)


def test_mnist():
    train, test = datasets.load_mnist()
    _check(train, 60000, (28, 28, 1), 10)
    _check(test, 10000, (28, 28, 1), 10)
    counts = np.bincount(train[1])
    assert counts.min() > 5000 and counts.max() < 7000


def test_digits():
    train, test = datasets.load_digits()
    _check(train, 1438, (8, 8, 1), 10)
    _check(test, 359, (8, 8, 1), 10)


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(
        datasets.DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"
    ):
        datasets.load_fashion_mnist(tmp_path)


def test_cifar_needs_a_directory():
    with pytest.raises(datasets.DatasetNotFoundError, match="pass path="):
        datasets.load_cifar10()


def test_cifar10_reads_standard_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            "labels": list(range(10)) * 2,
        }
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    (xtr, ytr), (xte, yte) = datasets.load_cifar10(tmp_path)
    assert xtr.shape == (100, 32, 32, 3) and xte.shape == (20, 32, 32, 3)
    raw = pickle.load(open(tmp_path / "test_batch", "rb"))["data"][0]
    np.testing.assert_allclose(xte[0, 0, 0], raw[[0, 1024, 2048]] / 255.0)  # channel order


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar11'"):
        datasets.load("cifar11")


def test_to_dataset_batches():
    x = np.zeros((10, 2), np.float32)
    y = np.arange(10)
    batches = list(datasets.to_dataset(x, y, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]


def test_idx_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="IDX"):
        datasets.arrays._read_idx(bad)
