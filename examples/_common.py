"""Shared by the examples: arguments, a dataset (optionally sliced: tests run the examples
on a slice), and the evaluate-and-convert tail."""

from __future__ import annotations

import argparse

from tfquant import datasets


def arguments(doc: str, epochs: int, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist or digits")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument(
        "--limit", type=int, default=None, help="use only this many training samples"
    )
    parser.add_argument("--out", default=None, help="write model.tflite here")
    return parser.parse_args(argv)


def load(name: str, limit: int | None):
    (xtr, ytr), (xte, yte) = datasets.load(name)
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[: limit // 4], yte[: limit // 4]
    return (xtr, ytr), (xte, yte)


def evaluate_and_convert(model, x_test, y_test, out: str | None) -> dict:
    """Hard-quantized test accuracy, then LCE conversion (written to ``out`` if given)."""
    import numpy as np

    from tfquant import converters
    from tfquant._files import write_file

    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    flatbuffer = converters.convert(model)
    if out:
        write_file(f"{out}/model.tflite", flatbuffer)
    ops = converters.flatbuffer.op_counts(flatbuffer)
    print(
        f"hard-quantized test accuracy {accuracy:.4f}; LceBconv2d ops: {ops.get('LceBconv2d', 0)}"
    )
    return {"accuracy": accuracy, "ops": ops}
