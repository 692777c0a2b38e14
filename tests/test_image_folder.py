"""tfquant.datasets.image_folder: a small tree of PNGs whose pixel level encodes the class."""

import numpy as np
import pytest
import tensorflow as tf

from tfquant import datasets

CLASSES = ["zebra", "apple", "mango"]  # written unsorted; labels follow the sorted names
LEVEL = {"apple": 40, "mango": 120, "zebra": 200}  # base pixel value of each class


def _png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


def _tree(root, per_class=10, size=(16, 16), channels=3, classes=CLASSES):
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(per_class):
            noise = rng.integers(0, 30, (*size, channels))
            _png(root / name / f"{i:02d}.png", (LEVEL.get(name, 100) + noise).astype(np.uint8))
    return root


def _epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _class_of(x):
    """The class whose level is nearest the mean pixel of each (unaugmented) image."""
    names = sorted(LEVEL)
    levels = np.array([LEVEL[n] + 14.5 for n in names]) / 255.0
    return np.abs(x.mean(axis=(1, 2, 3))[:, None] - levels).argmin(1)


def test_shapes_dtypes_range_and_labels(tmp_path):
    folder = datasets.image_folder(_tree(tmp_path), batch_size=8, validation_split=0.2, seed=1)
    assert folder.class_names == ["apple", "mango", "zebra"]
    assert folder.input_shape == (16, 16, 3)
    assert (folder.train_size, folder.validation_size) == (24, 6)
    assert folder.cache == "memory"
    assert int(folder.train.cardinality()) == 3 and int(folder.validation.cardinality()) == 1
    x, y = next(iter(folder.train))
    assert x.shape == (8, 16, 16, 3) and x.dtype == tf.float32 and y.dtype == tf.int64
    xt, yt = _epoch(folder.train)
    xv, yv = _epoch(folder.validation)
    for xs, ys in ((xt, yt), (xv, yv)):
        assert 0.0 <= xs.min() and xs.max() <= 1.0
        np.testing.assert_array_equal(_class_of(xs), ys)
    assert np.bincount(np.concatenate([yt, yv])).tolist() == [10, 10, 10]
    # Exactly the PNG bytes / 255: level + noise in [0, 30).
    assert xt.min() >= 40 / 255 - 1e-6 and xt.max() <= 229 / 255 + 1e-6


def test_augmentation_changes_training_images_only(tmp_path):
    root = _tree(tmp_path)
    plain = datasets.image_folder(root, batch_size=8, seed=2)
    aug = datasets.image_folder(
        root, batch_size=8, seed=2, augment=datasets.Augment(translate=0.25, rotation=10)
    )
    xp, yp = _epoch(plain.train)
    xa, ya = _epoch(aug.train)
    np.testing.assert_array_equal(yp, ya)  # same order: augmentation draws its own seeds
    changed = np.abs(xa - xp).max(axis=(1, 2, 3)) > 1e-3
    assert changed.mean() > 0.8
    assert 0.0 <= xa.min() and xa.max() <= 1.0
    for a, b in zip(_epoch(plain.validation), _epoch(aug.validation)):
        np.testing.assert_array_equal(a, b)


def test_flip_and_shift_are_exact_pixel_moves(tmp_path):
    folder = datasets.image_folder(
        _tree(tmp_path), batch_size=32, validation_split=None, seed=0, augment=True
    )
    plain = datasets.image_folder(tmp_path, batch_size=32, validation_split=None, seed=0)
    (xa, _), (xp, _) = _epoch(folder.train), _epoch(plain.train)
    # Nearest-pixel warps: every augmented value is an input value of that image or 0.
    for a, p in zip(xa, xp):
        assert np.isin(a, np.append(p, 0.0)).all()


def test_deterministic_with_seed(tmp_path):
    root = _tree(tmp_path)
    runs = [
        datasets.image_folder(root, batch_size=8, seed=s, augment=True, cache=False)
        for s in (5, 5, 6)
    ]
    first = [_epoch(r.train) for r in runs]
    np.testing.assert_array_equal(first[0][0], first[1][0])
    np.testing.assert_array_equal(first[0][1], first[1][1])
    assert not np.array_equal(first[0][0], first[2][0])
    second = _epoch(runs[0].train)  # a new epoch: reshuffled and re-augmented
    assert not np.array_equal(first[0][0], second[0])
    np.testing.assert_array_equal(np.sort(first[0][1]), np.sort(second[1]))


def test_resize_grayscale_and_size_forms(tmp_path):
    root = _tree(tmp_path)
    for size in ((8, 12), [8, 12], "8,12", "8x12"):
        folder = datasets.image_folder(root, size, batch_size=4, color_mode="grayscale")
        assert folder.input_shape == (8, 12, 1)
        x, y = next(iter(folder.train))
        assert x.shape == (4, 8, 12, 1)
    square = datasets.image_folder(root, 10, batch_size=4)
    assert square.input_shape == (10, 10, 3)


def test_mixed_sizes_need_image_size(tmp_path):
    root = _tree(tmp_path)
    _png(root / "mango" / "big.png", np.full((20, 16, 3), 120, np.uint8))
    with pytest.raises(ValueError, match=r"(?s)16x16.*big\.png is 20x16.*--image-size"):
        datasets.image_folder(root)
    folder = datasets.image_folder(root, (16, 16), batch_size=31, validation_split=None)
    x, y = next(iter(folder.train))
    assert x.shape == (31, 16, 16, 3)


def test_cache_choices(tmp_path):
    root = _tree(tmp_path / "data")
    assert datasets.image_folder(root, cache_budget=0).cache == "none"
    assert datasets.image_folder(root, cache_budget=30 * 16 * 16 * 3 * 4).cache == "memory"
    assert datasets.image_folder(root, cache=True, cache_budget=0).cache == "memory"
    folder = datasets.image_folder(root, cache=tmp_path / "cache" / "tree", seed=3)
    assert folder.cache == f"file:{tmp_path / 'cache' / 'tree'}"
    a = _epoch(folder.train)
    assert list((tmp_path / "cache").glob("tree-train*"))
    b = _epoch(folder.train)  # from the file: the same images, reshuffled
    np.testing.assert_array_equal(np.sort(a[0].ravel()), np.sort(b[0].ravel()))


def test_to_numpy(tmp_path):
    folder = datasets.image_folder(_tree(tmp_path), batch_size=4)
    x, y = datasets.to_numpy(folder.validation)
    assert x.shape == (6, 16, 16, 3) and y.shape == (6,)
    x, y = datasets.to_numpy(folder.train, limit=5)
    assert x.shape == (5, 16, 16, 3) and y.dtype == np.int64


def _loose(root):
    _png(root / "a.png", np.zeros((4, 4, 3), np.uint8))
    return root


def _empty_classes(root):
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("no images")
    return root


def _one_empty(root):
    _tree(root, per_class=2, classes=["cat", "dog"])
    (root / "eel").mkdir()
    return root


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r: r / "missing", "does not exist"),
        (lambda r: (r / "f.png").write_bytes(b"x") and r / "f.png", "is a file"),
        (lambda r: r, "no sub-folders"),
        (_loose, "1 images lie directly in it"),
        (_empty_classes, "none in any of its 2 sub-folders"),
        (_one_empty, "no images in 'eel'"),
        (lambda r: _tree(r, per_class=3, classes=["only"]), "at least 2 class folders"),
    ],
    ids=["missing", "file", "empty", "loose", "no-images", "empty-class", "one-class"],
)
def test_bad_trees(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        datasets.image_folder(make(tmp_path))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": (0, 8)}, "image_size"),
        ({"image_size": (8,)}, "image_size"),
        ({"image_size": (8, 8, 3)}, "image_size"),
        ({"image_size": "big"}, "image_size"),
        ({"image_size": (8.0, 8)}, "image_size"),
        ({"image_size": True}, "image_size"),
        ({"validation_split": 0}, r"validation_split a fraction in \(0, 1\)"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"validation_split": 0.01}, "leave images in both splits"),
        ({"batch_size": 0}, "batch_size"),
        ({"color_mode": "cmyk"}, "color_mode"),
        ({"augment": "yes"}, "augment"),
        ({"shuffle_buffer": 0}, "shuffle_buffer"),
        ({"cache_budget": -1}, "cache_budget"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.image_folder(_tree(tmp_path, per_class=2), **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"translate": 0.6}, {"rotation": -1}, {"zoom": True}, {"fill_mode": "mirror"}]
)
def test_bad_augment(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        datasets.Augment(**kwargs)
