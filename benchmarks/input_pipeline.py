"""Is the input pipeline the bottleneck? ``tfquant.datasets.image_folder`` against a train step.

Writes a synthetic image-folder tree (``--images`` PNGs of ``--size`` x ``--size`` RGB noise
around a class level, ``--classes`` folders) to ``--data-dir`` (default: a temporary folder,
removed afterwards), then measures, at batch ``--batch-size`` on this machine:

* the loader's images per second over whole training epochs (the validation split is
  ``--validation-split``), for each configuration: no cache (PNG decode every epoch) with
  and without augmentation, and the in-memory cache with and without augmentation (its
  first epoch, which decodes and fills the cache, is ``first_epoch_images_per_second``);
  augmentation is ``Augment()``: flips and 1/8-size shifts;
* a training step of ``tfquant.zoo.build("binary_cnn", method="ste")`` (Adam 1e-3) by
  ``train_on_batch`` on one in-memory batch: the images per second the model can take;
* ``model.fit`` for one epoch on the cached, augmented pipeline (the two sharing the cores,
  as in training) and on in-memory arrays of the same size, interleaved ``--epochs``
  times after a warm-up epoch each (medians): ``fit_pipeline_over_arrays`` near 1 says
  the pipeline costs training nothing end to end.

The verdict "pipeline is not the bottleneck" holds iff loader images/s over train-step
images/s (``ratio``) is above 1 for the cached, augmented configuration.

Run (about 2 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/input_pipeline.py --out runs/input_pipeline.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfquant import datasets, zoo  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4000, help="PNG files to write")
    p.add_argument("--size", type=int, default=32, help="image height and width")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--validation-split", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=3, help="timed loader epochs per config")
    p.add_argument("--steps", type=int, default=30, help="timed train_on_batch steps")
    p.add_argument("--data-dir", default=None, help="where to write the tree (kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    for name in ("images", "size", "classes", "batch_size", "epochs", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.images < 2 * args.classes:
        p.error("--images must be at least 2 per class")
    return args


def write_tree(root: pathlib.Path, images: int, size: int, classes: int, seed: int) -> float:
    """Write the PNGs; returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    for i in range(images):
        label = i % classes
        folder = root / f"class_{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        level = 20 + 200 * label / max(classes - 1, 1)
        image = np.clip(level + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        (folder / f"{i:06d}.png").write_bytes(tf.io.encode_png(image).numpy())
    return time.perf_counter() - start


def epoch_rate(dataset) -> tuple[float, int]:
    """(images per second, images) over one pass of ``dataset``."""
    start, n = time.perf_counter(), 0
    for x, _ in dataset:
        n += int(x.shape[0])
    return n / (time.perf_counter() - start), n


def loader_rates(root, args) -> dict:
    configs = {
        "no_cache": dict(cache=False, augment=False),
        "no_cache_augmented": dict(cache=False, augment=True),
        "cached": dict(cache=True, augment=False),
        "cached_augmented": dict(cache=True, augment=True),
    }
    out = {}
    for name, kwargs in configs.items():
        folder = datasets.image_folder(
            root,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            seed=args.seed,
            **kwargs,
        )
        result = {"cache": folder.cache, "train_images": folder.train_size}
        # the first epoch traces, decodes and fills the cache
        first, _ = epoch_rate(folder.train_epochs(1))
        result["first_epoch_images_per_second"] = first
        # what tfquant train reads: each epoch's own seeded shuffle, the cache shared
        rates = [epoch_rate(folder.train_epochs(e + 2, e + 1))[0] for e in range(args.epochs)]
        result["images_per_second"] = float(np.median(rates))
        result["images_per_second_per_epoch"] = rates
        out[name] = result
        print(
            f"[input_pipeline] {name}: {result['images_per_second']:.0f} images/s", file=sys.stderr
        )
    return out


def train_rates(root, args, input_shape, classes) -> dict:
    keras.utils.set_random_seed(args.seed)
    model = zoo.build("binary_cnn", method="ste", input_shape=input_shape, classes=classes)
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(0, 1, (args.batch_size, *input_shape)).astype(np.float32)
    y = rng.integers(0, classes, args.batch_size)
    for _ in range(3):
        model.train_on_batch(x, y)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    step_ips = args.batch_size / float(np.median(times))

    folder = datasets.image_folder(
        root,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
        cache=True,
        augment=True,
    )
    n = folder.train_size
    xs = rng.uniform(0, 1, (n, *input_shape)).astype(np.float32)
    ys = rng.integers(0, classes, n)
    fits = {
        "arrays": lambda: model.fit(xs, ys, batch_size=args.batch_size, epochs=1, verbose=0),
        "pipeline": lambda: model.fit(folder.train_epochs(1), epochs=1, verbose=0, shuffle=False),
    }
    for fit in fits.values():  # warm-up: traces fit, fills the cache
        fit()
    rates: dict = {name: [] for name in fits}
    for _ in range(args.epochs):  # interleaved: both see the same machine load
        for name, fit in fits.items():
            start = time.perf_counter()
            fit()
            rates[name].append(n / (time.perf_counter() - start))
    fit_arrays = float(np.median(rates["arrays"]))
    fit_pipeline = float(np.median(rates["pipeline"]))
    return {
        "model": "zoo.binary_cnn, method ste, Adam 1e-3",
        "train_on_batch_images_per_second": step_ips,
        "train_on_batch_seconds_per_step": float(np.median(times)),
        "fit_on_arrays_images_per_second": fit_arrays,
        "fit_on_cached_augmented_pipeline_images_per_second": fit_pipeline,
        "fit_images_per_second_per_epoch": rates,
        "fit_pipeline_over_arrays": fit_pipeline / fit_arrays,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    tmp = None
    if args.data_dir:
        root = pathlib.Path(args.data_dir)
    else:
        tmp = tempfile.mkdtemp(prefix="tfquant_input_pipeline_")
        root = pathlib.Path(tmp) / "tree"
    try:
        write_seconds = write_tree(root, args.images, args.size, args.classes, args.seed)
        loader = loader_rates(root, args)
        train = train_rates(root, args, (args.size, args.size, 3), args.classes)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    step = train["train_on_batch_images_per_second"]
    ratios = {name: r["images_per_second"] / step for name, r in loader.items()}
    ratio = ratios["cached_augmented"]
    out = {
        "benchmark": "input_pipeline",
        "data": f"synthetic PNG tree: {args.images} images {args.size}x{args.size}x3, "
        f"{args.classes} classes",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": common.machine(),
        "write_seconds": write_seconds,
        "loader": loader,
        "train": train,
        "ratio_loader_over_train_step": ratios,
        "ratio": ratio,
        "fit_pipeline_over_arrays": train["fit_pipeline_over_arrays"],
        "verdict": "pipeline is not the bottleneck" if ratio > 1 else "pipeline is the bottleneck",
    }
    common.dump(out, args.out)
    return out


if __name__ == "__main__":
    main()
