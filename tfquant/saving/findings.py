"""What the scan reports: a :class:`Finding` per place in a file that would run code, and
:class:`UnsafeModelError`, the refusal that lists them.

May import: ``tfquant._files``, ``tfquant.saving.errors`` and the standard library.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable

from tfquant._files import describe
from tfquant.saving.errors import ConversionError

__all__ = ["ALLOW_HINT", "Finding", "UnsafeModelError", "open_regular", "unsafe_message"]

ALLOW_HINT = "Load it only if you trust its source: `--unsafe` on the command line, or unsafe=True"


class UnsafeModelError(ConversionError):
    """The model file carries code that loading or running it would execute (a ``Lambda``
    layer's serialized function, graph ops that read or write files or call Python).

    Attributes:
        findings: the :class:`Finding` objects, one per place.
    """

    def __init__(self, message: str, findings: Iterable[Finding] = ()) -> None:
        super().__init__(message)
        self.findings = list(findings)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One place in a model file that would run code.

    Attributes:
        where: the layer (``"layer 'name' (Class)"``) or graph node
            (``"node 'name' (op WriteFile) in function 'f'"``).
        what: what it carries or does.
    """

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def unsafe_message(path: str, findings: list[Finding], what: str) -> str:
    """The :class:`UnsafeModelError` message: the file, each place (five at most) and how
    to allow it."""
    shown = "; ".join(map(str, findings[:5]))
    more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
    return f"Refusing to load {path!r}: {what}: {shown}{more}. {ALLOW_HINT}"


def open_regular(path: str, what: str):
    """Open ``path`` for reading without blocking on a FIFO, and only if it is a regular
    file (checked on the open descriptor, so a file swapped after a check is caught too)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ConversionError(f"Cannot read {path!r}: {e.strerror or e}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConversionError(f"Expected {what}. Received: {path!r}, {describe(mode)}")
    return os.fdopen(fd, "rb")
