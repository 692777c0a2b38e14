"""Image folders: one sub-folder of images per class, as seeded ``tf.data`` pipelines.

Keras' ``image_dataset_from_directory`` lists and decodes the files; this module checks the
tree first (so a wrong folder gets an error that says what was expected), caches decoded
images, shuffles and augments training batches with seeds alone, so that a resumed run reads
what an uninterrupted one does.

Imports numpy, TensorFlow and Keras; from tfquant only :mod:`tfquant._keras` and
:mod:`tfquant.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pathlib
from typing import Any, NamedTuple

import numpy as np

from tfquant.datasets.arrays import Split
from tfquant.errors import ConfigError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras' loader reads
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
FILL_MODES = ("constant", "nearest", "reflect", "wrap")


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random augmentation of training batches, seeded and stateless (one affine warp each).

    Every image gets its own draw: a horizontal flip with probability 1/2 (``flip``), a shift
    of a whole number of pixels uniform in ``[-p, p]`` with ``p = round(translate * size)``
    per axis (``translate=0.125`` on 32x32 is the usual 4-pixel pad-and-crop, with
    ``fill_mode="constant"`` zero padding), a rotation uniform in ``[-rotation, rotation]``
    degrees and a scale uniform in ``[1 - zoom, 1 + zoom]``. Flips and shifts alone are exact
    pixel moves (nearest interpolation); rotation or zoom interpolate bilinearly.
    """

    flip: bool = True
    translate: float = 0.125
    rotation: float = 0.0
    zoom: float = 0.0
    fill_mode: str = "constant"

    def __post_init__(self):
        if not isinstance(self.flip, bool):
            raise ConfigError(f"Expected flip a bool. Received: flip={self.flip!r}")
        for name, high in (("translate", 0.5), ("rotation", 180.0), ("zoom", 0.9)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0 <= value <= high)
            ):
                raise ConfigError(
                    f"Expected {name} a number in [0, {high}]. Received: {name}={value!r}"
                )
        if self.fill_mode not in FILL_MODES:
            raise ConfigError(
                f"Expected fill_mode one of {list(FILL_MODES)}. Received: fill_mode={self.fill_mode!r}"
            )

    @property
    def active(self) -> bool:
        return self.flip or self.translate > 0 or self.rotation > 0 or self.zoom > 0


class ImageFolder(NamedTuple):
    """What :func:`image_folder` returns (a tuple: ``train, validation, class_names, ...``)."""

    train: Any  # tf.data.Dataset of (float32 [B, H, W, C] in [0, 1], int64 [B]) batches
    validation: Any  # the same, unshuffled and unaugmented; None without a validation split
    class_names: list[str]  # sorted sub-folder names; label i is class_names[i]
    input_shape: tuple[int, int, int]  # (H, W, C)
    train_size: int  # images in the training split
    validation_size: int  # images in the validation split (0 without one)
    cache: str  # "memory", "file:<prefix>" or "none": where decoded images are kept
    # (epochs, initial_epoch=0, steps=None) -> the training batches of those epochs in
    # sequence, each epoch's order and augmentation seeded by (seed, epoch) alone: what
    # tfquant train reads, so that a resumed run reads what an uninterrupted one does
    train_epochs: Any = None


def _parse_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    value = image_size
    if isinstance(value, str):
        parts = value.replace("x", ",").replace("X", ",").split(",")
        try:
            value = tuple(int(p) for p in parts if p.strip())
        except ValueError:
            value = None
    elif isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    elif isinstance(value, (tuple, list)):
        value = tuple(value)
    else:
        value = None
    if (
        value is None
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value)
        or not all(1 <= v <= 16384 for v in value)
    ):
        raise ConfigError(
            "Expected image_size (height, width): two integers in 1..16384 (or one for a "
            f"square, or a string 'H,W'). Received: image_size={image_size!r}"
        )
    return int(value[0]), int(value[1])


def _index(root: pathlib.Path, follow_links: bool) -> dict[str, list[str]]:
    """``{class name: image paths}``, the class folders sorted, as Keras' loader finds them."""
    if not root.exists():
        raise ConfigError(
            f"Expected data_dir an existing directory. Received: {str(root)!r} does not exist"
        )
    if not root.is_dir():
        raise ConfigError(f"Expected data_dir a directory. Received: {str(root)!r} is a file")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        loose = [p.name for p in root.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS)]
        hint = (
            f" ({len(loose)} images lie directly in it: move them into one folder per class)"
            if loose
            else ""
        )
        raise ConfigError(
            f"Expected data_dir to hold one sub-folder per class, with images inside. "
            f"Received: {str(root)!r} has no sub-folders{hint}"
        )
    index = {}
    for name in classes:
        files = []
        for folder, _, names in sorted(os.walk(root / name, followlinks=follow_links)):
            files += [
                os.path.join(folder, f)
                for f in sorted(names)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            ]
        index[name] = files
    empty = [name for name, files in index.items() if not files]
    if len(empty) == len(classes):
        raise ConfigError(
            f"Expected images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of "
            f"{str(root)!r}. Received: none in any of its {len(classes)} sub-folders"
        )
    if empty:
        raise ConfigError(
            f"Expected images in every class folder of {str(root)!r}. Received: no images in "
            f"{', '.join(repr(e) for e in empty[:5])}{' ...' if len(empty) > 5 else ''} "
            "(remove the empty folders, or add images)"
        )
    if len(classes) < 2:
        raise ConfigError(
            f"Expected at least 2 class folders in {str(root)!r}. Received: only "
            f"{classes[0]!r} ({len(index[classes[0]])} images)"
        )
    return index


def _image_sizes(paths: list[str]):
    """Yield ``(path, (height, width))``, from the file headers where Pillow is installed."""
    pil: Any = None
    try:
        from PIL import Image as pil
    except ModuleNotFoundError:
        pass
    for path in paths:
        if pil is not None:
            with pil.open(path) as im:
                width, height = im.size
        else:
            from tfquant._keras import tf

            shape = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).shape
            height, width = int(shape[0]), int(shape[1])
        yield path, (height, width)


def _common_size(index: dict[str, list[str]]) -> tuple[int, int]:
    first_path, first = None, None
    for path, size in _image_sizes([p for files in index.values() for p in files]):
        if first is None:
            first_path, first = path, size
        elif size != first:
            raise ConfigError(
                "Expected images of one size when image_size is None. Received: "
                f"{first_path} is {first[0]}x{first[1]} (HxW) and {path} is "
                f"{size[0]}x{size[1]}. Pass image_size=(H, W) (the command line's "
                "--image-size H,W) to resize every image to one size."
            )
    assert first is not None  # _index found images
    return first


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _augment_batch(images, seed, augment: Augment):
    """One random affine warp per image of a batch (see :class:`Augment`), stateless."""
    from tfquant._keras import keras, tf

    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    ones, zeros = tf.ones([n]), tf.zeros([n])
    if augment.flip:
        f = tf.where(tf.random.stateless_uniform([n], seeds[0]) < 0.5, -1.0, 1.0)
    else:
        f = ones
    shifts = []
    for axis, size in enumerate((width, height)):
        p = int(round(augment.translate * size))
        shift = tf.random.stateless_uniform(
            [n], tf.random.experimental.stateless_fold_in(seeds[1], axis), -p, p + 1, tf.int32
        )
        shifts.append(tf.cast(shift, tf.float32))
    theta = tf.random.stateless_uniform([n], seeds[2], -1.0, 1.0) * (augment.rotation * np.pi / 180)
    scale = 1.0 + tf.random.stateless_uniform([n], seeds[3], -1.0, 1.0) * augment.zoom
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # Output pixel (x, y) reads input pixel M (x, y, 1): flip about the centre, then rotate
    # and scale about it, then shift. Row-major [a0 a1 a2 b0 b1 b2 c0 c1] for affine_transform.
    cos, sin = scale * tf.cos(theta), scale * tf.sin(theta)
    xf0, xf2 = f, (1.0 - f) * (width - 1) / 2.0  # x_flipped = f x + xf2
    a0, a1 = cos * xf0, -sin
    a2 = cos * xf2 - cos * cx + sin * cy + cx + shifts[0]
    b0, b1 = sin * xf0, cos
    b2 = sin * xf2 - sin * cx - cos * cy + cy + shifts[1]
    transform = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    exact = augment.rotation == 0 and augment.zoom == 0
    return keras.ops.image.affine_transform(
        images,
        transform,
        interpolation="nearest" if exact else "bilinear",
        fill_mode=augment.fill_mode,
        data_format="channels_last",
    )


def image_folder(
    data_dir: str | os.PathLike,
    image_size: int | tuple[int, int] | str | None = None,
    *,
    batch_size: int = 128,
    validation_split: float | None = 0.2,
    seed: int = 0,
    color_mode: str = "rgb",
    augment: bool | Augment | None = False,
    cache: bool | str | os.PathLike | None = None,
    cache_budget: int | None = None,
    shuffle_buffer: int | None = None,
    interpolation: str = "bilinear",
    follow_links: bool = False,
) -> ImageFolder:
    """Training and validation ``tf.data`` pipelines over a folder of class folders.

    ``data_dir/<class>/**/<image>`` (bmp, gif, jpeg, jpg, png); labels are the indices of
    the sorted class folder names. Keras' ``image_dataset_from_directory`` lists and
    decodes the files (parallel map), splitting off ``validation_split`` of them after a
    seeded shuffle. Then, per split: ``cache`` (decoded images, before augmentation), for
    training a seeded ``shuffle`` reshuffled every epoch, ``batch``, one parallel map that
    scales to float32 in ``[0, 1]`` (like the other loaders), casts labels to int64 and,
    for training only, applies :class:`Augment`, then ``prefetch(AUTOTUNE)``.

    Args:
        data_dir: the root folder, one sub-folder per class (at least 2).
        image_size: ``(height, width)`` every image is resized to (bilinear by default); an
            int for a square, or ``"H,W"``. ``None``: the images must share one size, read
            from their headers, which becomes the input size.
        batch_size: images per batch.
        validation_split: fraction of the images held out for validation, in (0, 1);
            ``None`` for no validation split (``validation`` is then ``None``).
        seed: fixes the split, the shuffling and the augmentation (with TensorFlow's global
            seed, which ``keras.utils.set_random_seed`` sets).
        color_mode: ``"grayscale"``, ``"rgb"`` or ``"rgba"`` (1, 3 or 4 channels).
        augment: ``True`` for ``Augment()`` (flip and 1/8-size shifts), an :class:`Augment`,
            or ``False``/``None`` for none. Training split only.
        cache: ``None``: in memory when the decoded float32 images (count x H x W x C x 4
            bytes, both splits) fit in ``cache_budget``, else not cached; ``True``: in
            memory; ``False``: decode every epoch; a path: files ``<path>-train`` and
            ``<path>-validation`` (written during the first epoch, which must finish).
        cache_budget: bytes for ``cache=None``; default a quarter of the physical memory.
        shuffle_buffer: training shuffle buffer, in images, after the cache; default
            ``min(train_size, 10000, max(batch_size, 256 MiB / image bytes))``. (Keras'
            loader also reshuffles the file paths every epoch before decoding: without a
            cache, the order is well mixed whatever the buffer.)
        interpolation: the resize method (Keras: ``"bilinear"``, ``"nearest"``, ``"area"``,
            ...).
        follow_links: follow symbolic links to folders.

    Returns:
        :class:`ImageFolder` ``(train, validation, class_names, input_shape, train_size,
        validation_size, cache)``. Both datasets have known cardinality (batches per epoch).

    Raises:
        ValueError: ``data_dir`` missing or not a directory, no class folders, a class
            folder without images, a single class, images of different sizes with
            ``image_size=None`` (naming two of them), or a bad argument.

    Example:
        >>> folder = image_folder("images/", image_size=(32, 32), augment=True)  # doctest: +SKIP
        >>> model.fit(folder.train, validation_data=folder.validation, epochs=10)  # doctest: +SKIP
    """
    size = _parse_image_size(image_size)
    for name, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"Expected {name} an integer >= {low}. Received: {name}={value!r}")
    if validation_split is not None and (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, (int, float))
        or not 0 < validation_split < 1
    ):
        raise ConfigError(
            "Expected validation_split a fraction in (0, 1), or None for no validation split. "
            f"Received: validation_split={validation_split!r}"
        )
    if color_mode not in COLOR_MODES:
        raise ConfigError(
            f"Expected color_mode one of {list(COLOR_MODES)}. Received: color_mode={color_mode!r}"
        )
    if augment is True:
        augment = Augment()
    elif augment is False or augment is None:
        augment = None
    elif not isinstance(augment, Augment):
        raise ConfigError(
            f"Expected augment a bool or a tfquant.datasets.Augment. Received: augment={augment!r}"
        )
    if shuffle_buffer is not None and (
        isinstance(shuffle_buffer, bool)
        or not isinstance(shuffle_buffer, int)
        or shuffle_buffer < 1
    ):
        raise ConfigError(
            f"Expected shuffle_buffer an integer >= 1. Received: shuffle_buffer={shuffle_buffer!r}"
        )
    if cache_budget is not None and (
        isinstance(cache_budget, bool) or not isinstance(cache_budget, int) or cache_budget < 0
    ):
        raise ConfigError(
            f"Expected cache_budget a number of bytes >= 0. Received: cache_budget={cache_budget!r}"
        )
    if not (cache is None or isinstance(cache, (bool, str, os.PathLike))) or cache == "":
        raise ConfigError(
            f"Expected cache None, a bool or a file path prefix. Received: cache={cache!r}"
        )

    root = pathlib.Path(data_dir)
    index = _index(root, follow_links)
    if size is None:
        size = _common_size(index)
    channels = COLOR_MODES[color_mode]
    count = sum(len(files) for files in index.values())
    if validation_split is not None:
        held_out = int(validation_split * count)
        if held_out < 1 or held_out >= count:
            raise ConfigError(
                f"Expected validation_split to leave images in both splits. Received: "
                f"validation_split={validation_split!r} of {count} images holds out {held_out}"
            )

    from tfquant._keras import keras, tf

    common = dict(
        directory=str(root),
        labels="inferred",
        label_mode="int",
        class_names=list(index),
        color_mode=color_mode,
        batch_size=None,
        image_size=size,
        shuffle=True,  # shuffles the file list (seeded) before the split
        seed=seed,
        interpolation=interpolation,
        follow_links=follow_links,
        data_format="channels_last",
        verbose=False,
    )
    # verbose=False still prints "Using N files for training." to stdout: keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        if validation_split is None:
            train, validation = keras.utils.image_dataset_from_directory(**common), None
        else:
            train, validation = keras.utils.image_dataset_from_directory(
                **common, validation_split=validation_split, subset="both"
            )
    train_size = int(train.cardinality())
    validation_size = int(validation.cardinality()) if validation is not None else 0

    image_bytes = size[0] * size[1] * channels * 4
    if cache is None:
        budget = _memory_bytes() // 4 if cache_budget is None else cache_budget
        where = "memory" if (train_size + validation_size) * image_bytes <= budget else "none"
    elif cache is True:
        where = "memory"
    elif cache is False:
        where = "none"
    else:
        prefix = pathlib.Path(cache)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        where = f"file:{prefix}"

    def cached(ds, split):
        if where == "memory":
            return ds.cache()
        if where.startswith("file:"):
            return ds.cache(f"{where[5:]}-{split}")
        return ds

    def finish(x, y):
        return x / 255.0, tf.cast(y, tf.int64)

    if shuffle_buffer is None:  # at most 256 MiB of decoded images (Keras also shuffles paths)
        shuffle_buffer = min(train_size, 10_000, max(batch_size, 2**28 // image_bytes))
    base = cached(train, "train")

    def batches(shuffled, seed_, rerandomize: bool):
        """Batch, scale and (for training) augment, each batch's augmentation seeded from
        ``seed_``'s stream (re-drawn each iteration when ``rerandomize``)."""
        ds = shuffled.batch(batch_size)
        if augment is None or not augment.active:
            return ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
        seeds = tf.data.Dataset.random(seed=seed_, rerandomize_each_iteration=rerandomize)

        def augmented(batch, s):
            x, y = finish(*batch)
            return _augment_batch(x, s, augment), y

        return tf.data.Dataset.zip((ds, seeds.batch(2))).map(
            augmented, num_parallel_calls=tf.data.AUTOTUNE
        )

    def one_epoch(epoch: int):
        """Epoch ``epoch``'s batches: the shuffle and the augmentation seeded by
        ``(seed, epoch)`` alone, so a resumed run reads what an uninterrupted one does."""
        epoch_seed = (seed * 1_000_003 + epoch) % 2**31
        shuffled = base.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        return batches(shuffled, epoch_seed, rerandomize=False)

    def train_epochs(epochs: int, initial_epoch: int = 0, steps: int | None = None):
        """Epochs ``initial_epoch`` to ``epochs - 1`` in sequence (each its first ``steps``
        batches when given), for ``fit(..., steps_per_epoch=..., initial_epoch=...)``. The
        epochs are concatenated in Python (tf.data's shuffle takes no tensor seed); the
        cache is shared, so images are decoded once."""
        if not 0 <= initial_epoch < epochs:
            raise ConfigError(
                f"Expected 0 <= initial_epoch < epochs. Received: {initial_epoch}, {epochs}"
            )
        parts = [one_epoch(e) for e in range(initial_epoch, epochs)]
        if steps:
            parts = [part.take(steps) for part in parts]
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
        return ds.prefetch(tf.data.AUTOTUNE)

    shuffled = base.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    train = batches(shuffled, seed, rerandomize=True)
    train = train.prefetch(tf.data.AUTOTUNE)
    if validation is not None:
        validation = (
            cached(validation, "validation")
            .batch(batch_size)
            .map(finish, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
    return ImageFolder(
        train=train,
        validation=validation,
        class_names=list(index),
        input_shape=(size[0], size[1], channels),
        train_size=train_size,
        validation_size=validation_size,
        cache=where,
        train_epochs=train_epochs,
    )


def to_numpy(dataset, limit: int | None = None) -> Split:
    """``(x, y)`` arrays of the first ``limit`` samples (all by default) of a dataset of
    ``(x, y)`` batches, e.g. :func:`image_folder`'s validation split for evaluation."""
    xs, ys, n = [], [], 0
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        n += len(xs[-1])
        if limit is not None and n >= limit:
            break
    if not xs:
        raise ConfigError("Expected a dataset with at least one batch. Received: an empty one")
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit is not None else (x, y)
