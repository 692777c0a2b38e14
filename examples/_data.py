"""Shared by the examples: a dataset, optionally sliced (tests run the examples on a slice)."""

from __future__ import annotations

import argparse

from tfquant import datasets


def arguments(doc: str, epochs: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist or digits")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument(
        "--limit", type=int, default=None, help="use only this many training samples"
    )
    parser.add_argument("--out", default=None, help="write model.tflite here")
    return parser.parse_args


def load(name: str, limit: int | None):
    (xtr, ytr), (xte, yte) = datasets.load(name)
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[: limit // 4], yte[: limit // 4]
    return (xtr, ytr), (xte, yte)
