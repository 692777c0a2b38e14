"""Progress as whole lines: elapsed time and an estimate of what is left, in a log or a terminal.

Keras' progress bar redraws one line with carriage returns: on a terminal that reads well,
in a log file it is noise. Every line here is complete when printed, so a log reads the
same as the screen:

    epoch 2/5  loss 0.41  acc 0.86  val_acc 0.84  12.3 s  ~18 s left
    [3/4] timing the float twin  4.1 s  ~1 s left

:class:`Progress` is for steps (converting, benchmarking, finalizing); :class:`EpochLines`
is a Keras callback that prints one such line per epoch of ``model.fit``.

This module imports Keras only for the callback's base class, nothing else from tfquant.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import keras

__all__ = ["EpochLines", "Progress", "elapsed_and_left"]


def elapsed_and_left(elapsed: float, done: int, total: int | None) -> str:
    """``"12.3 s  ~37 s left"``: the time so far and, after ``done`` of ``total`` equal units
    of work, the rest at the same pace (``"12.3 s"`` alone when the total is unknown or
    nothing is done yet)."""
    text = f"{elapsed:.1f} s"
    if total is not None and 0 < done < total:
        text += f"  ~{elapsed / done * (total - done):.0f} s left"
    return text


class Progress:
    """One line per step on ``stream`` (stderr by default), as the step starts.

    Each line names the step, its number out of ``total`` when that is known, the time since
    the first step and an estimate of what is left; :meth:`close` prints how it ended.

    Example:

    >>> import io
    >>> out = io.StringIO()
    >>> progress = Progress(total=2, stream=out)
    >>> progress("converting the model")
    >>> progress("timing it")
    >>> progress.close()
    >>> [line.split("  ")[0] for line in out.getvalue().splitlines()]
    ['[1/2] converting the model', '[2/2] timing it', 'done in 0.0 s']

    Args:
        total: how many steps there will be, when known (for the estimate).
        enabled: print nothing when False (``-q``).
        stream: where to print; default ``sys.stderr`` at the time of printing.
    """

    def __init__(
        self, total: int | None = None, *, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream
        self.steps = 0
        self._start: float | None = None

    def _print(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream or sys.stderr, flush=True)

    def __call__(self, message: str) -> None:
        """Start the step ``message``."""
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        number = f"[{self.steps + 1}/{self.total}] " if self.total else ""
        timing = elapsed_and_left(now - self._start, self.steps, self.total)
        self._print(f"{number}{message}  {timing}")
        self.steps += 1

    def close(self, failed: bool = False) -> None:
        """Print how it ended (``done in 4.2 s`` or ``failed after 4.2 s``) if a step ran."""
        if self._start is None:
            return
        took = time.perf_counter() - self._start
        self._print(f"failed after {took:.1f} s" if failed else f"done in {took:.1f} s")
        self._start = None


_SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}


class EpochLines(keras.callbacks.Callback):
    """A Keras callback: one line per epoch with its metrics, the time and what is left.

    ``epoch 2/5  loss 0.41  acc 0.86  val_acc 0.84  12.3 s  ~18 s left``: the estimate is
    the mean time of this run's epochs so far times the epochs left (a resumed run counts
    from the epoch it resumed at). An epoch that lasts longer than ``every`` seconds also
    gets a line every ``every`` seconds, ``epoch 1/5  step 300/938  61.2 s  ~1251 s left``,
    estimated from the steps done so far, so a log never goes quiet for a whole epoch. Pass
    ``verbose=0`` to ``fit`` beside it where Keras' own bar is not wanted (a log).

    Args:
        stream: where to print; default ``sys.stdout`` at the time of printing.
        prefix: put before each line (e.g. ``"step 1: "``).
        every: seconds between the lines within an epoch; None for none.
    """

    def __init__(
        self, stream: TextIO | None = None, prefix: str = "", every: float | None = 60.0
    ) -> None:
        super().__init__()
        self.stream = stream
        self.prefix = prefix
        self.every = every
        self._start = 0.0
        self._last = 0.0
        self._first: int | None = None
        self._epoch = 0

    def _print(self, line: str) -> None:
        print(self.prefix + line, file=self.stream or sys.stdout, flush=True)

    def _epochs(self) -> int:
        return int((self.params or {}).get("epochs") or 0)

    def on_train_begin(self, logs=None) -> None:
        self._start = self._last = time.perf_counter()
        self._first = None

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self._first is None:
            self._first = epoch
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.every is None:
            return
        now = time.perf_counter()
        if now - self._last < self.every:
            return
        self._last = now
        steps = int((self.params or {}).get("steps") or 0)
        epochs, first = self._epochs(), self._first or 0
        of_steps = f"/{steps}" if steps else ""
        timing = elapsed_and_left(
            now - self._start,
            (self._epoch - first) * steps + batch + 1,
            (epochs - first) * steps if steps and epochs else None,
        )
        of = f"/{epochs}" if epochs else ""
        self._print(f"epoch {self._epoch + 1}{of}  step {batch + 1}{of_steps}  {timing}")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        epochs = self._epochs()
        first = epoch if self._first is None else self._first
        metrics = "".join(
            f"  {_SHORT.get(name, name)} {float(value):.4g}"
            for name, value in (logs or {}).items()
            if _is_number(value)
        )
        self._last = now = time.perf_counter()
        timing = elapsed_and_left(now - self._start, epoch + 1 - first, (epochs - first) or None)
        of = f"/{epochs}" if epochs else ""
        self._print(f"epoch {epoch + 1}{of}{metrics}  {timing}")


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
