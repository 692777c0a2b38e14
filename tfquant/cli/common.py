"""What the subcommands share: argument types, the usage error, input and output checks.

Imports nothing from tfquant at module level but :mod:`tfquant.errors`; the rest (files,
numpy) is imported when a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable

from tfquant.errors import TfquantError

__all__ = ["UNSAFE_HELP", "UsageError", "int_in", "load_npy", "outputs", "positive_float"]


class UsageError(TfquantError):
    """Bad input to a subcommand: reported on stderr in one line, with exit status 2."""


UNSAFE_HELP = (
    "load model files that carry Python code (a Lambda layer's serialized function, or "
    "graph ops that read or write files): that code runs on this machine. Only for files "
    "you trust; by default such a model is refused"
)


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``low..high`` written in ASCII digits (``int()``
    alone also takes ``"1_0"`` and ``"٣"``); the error names the range."""
    expected = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def parse(text: str) -> int:
        digits = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,20}", digits):
            raise argparse.ArgumentTypeError(f"Expected {expected}. Received: {text!r}")
        value = int(digits)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"Expected {expected}. Received: {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"Expected a finite number > 0. Received: {text!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"Expected a finite number > 0. Received: {text!r}")
    return value


def outputs(inputs: Iterable[str | None], planned: list[tuple[str | None, str]], overwrite: bool):
    """Check every input (a regular file or a directory) and every output path against the
    inputs and each other before any work; returns the :class:`tfquant._files.Outputs`.

    Raises:
        tfquant._files.FileError: the message names the path and what was expected.
    """
    from tfquant._files import Outputs, check_input

    given = [path for path in inputs if path is not None]
    plan = Outputs(given, overwrite=overwrite)
    for source in given:
        check_input(source, "input", directory=True)
    for path, what in planned:
        if path is not None:
            plan.add(path, what)
    return plan


def load_npy(path: str | None):
    """The batch of inputs in the ``.npy`` file ``path`` as float32 (None for None).

    Raises:
        UsageError: not a readable ``.npy`` file of one non-empty numeric array.
        tfquant._files.FileError: missing, or not a regular file.
    """
    if path is None:
        return None
    import numpy as np

    from tfquant._files import check_input

    check_input(path, "data file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"Cannot read the data file {path!r} as a .npy array: {e}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise UsageError(
            f"Expected a .npy file holding one array. Received: {path!r}, an .npz archive "
            "of several arrays; save the one you want with numpy.save"
        )
    if array.dtype.kind not in "biuf" or array.ndim < 1 or array.shape[0] < 1:
        raise UsageError(
            f"Expected a non-empty numeric array (a batch of inputs) in {path!r}. Received: "
            f"dtype {array.dtype}, shape {array.shape}"
        )
    return array.astype("float32")
