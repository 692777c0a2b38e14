"""The signals that end a ``tfquant`` command, defined once: which, how, and the line it prints.

SIGINT (Ctrl-C), SIGTERM and SIGHUP end a command the same way: one line on stderr naming
what had already been written, exit status 128 + the signal number, no traceback. Three
places use them: the ``tfquant`` launcher during TensorFlow's import, the command line
while a subcommand runs (:func:`raising`), and :class:`tfquant._files.Outputs` while it
moves a run's files into place (:func:`held`, so a run's files land all or none).

This module imports only the standard library and nothing from tfquant: the launcher loads
it before TensorFlow is imported, and every layer of the package may use it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator

__all__ = ["HELD", "Interrupted", "held", "ignore", "interrupted_line", "raising"]

HELD: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupted_line(command: str | None, written: Iterable[str]) -> str:
    """The line an interrupted command prints, e.g. ``tfquant convert: interrupted; nothing
    written`` (``command`` None: during the import, before a subcommand ran)."""
    written = list(written)
    name = f"tfquant {command}" if command else "tfquant"
    kept = "; wrote " + ", ".join(written) + " before it" if written else "; nothing written"
    return f"{name}: interrupted{kept}"


class Interrupted(KeyboardInterrupt):
    """One of :data:`HELD` arrived; ``signum`` says which. A KeyboardInterrupt, so
    ``except Exception`` clauses in libraries let it through to the command line."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def ignore() -> None:
    """Ignore :data:`HELD` from now on (a finished command must not turn into a failed one,
    nor a clean-up under way be cut short)."""
    for s in HELD:
        signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def _handled(handler) -> Iterator[None]:
    """``handler`` for each of :data:`HELD` within the block, the previous ones restored after
    it; outside the main thread (where Python cannot set handlers), nothing changes."""
    try:
        previous = {s: signal.signal(s, handler) for s in HELD}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def raising(received: list[int]) -> Iterator[None]:
    """Within the block, the first of :data:`HELD` raises :class:`Interrupted` and is
    recorded in ``received``; later ones (during the clean-up the first one starts) are
    ignored. Outside the main thread, signals are left alone."""

    def handler(signum, frame):
        ignore()
        received.append(signum)
        raise Interrupted(signum)

    with _handled(handler):
        yield


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold :data:`HELD` back within the block; the first that arrives meanwhile is raised
    again right after it, to whatever handler was there before.

    Held by Python-level handlers rather than a signal mask: ``pthread_sigmask`` blocks a
    signal for the calling thread only, and the kernel hands a signal sent to the process
    to any thread that does not block it (TensorFlow starts many), whose C handler then has
    the main thread run the Python one at once. Outside the main thread, nothing is held.
    """
    pending: list[int] = []

    def defer(signum, frame):
        pending.append(signum)

    try:
        with _handled(defer):
            yield
    finally:
        if pending:  # after the previous handlers are back
            signal.raise_signal(pending[0])
