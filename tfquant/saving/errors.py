"""The error of a model that cannot be loaded or converted.

:class:`ConversionError` is defined here, below the loader and the converter that both
raise it, and re-exported as ``tfquant.converters.ConversionError`` (its documented name).

May import: ``tfquant.errors`` only.
"""

from __future__ import annotations

from tfquant.errors import TfquantError

__all__ = ["ConversionError"]


class ConversionError(TfquantError, ValueError):
    """The model cannot be converted: bad input, a model LCE cannot take, or a layer that
    did not get the kernel its quantizers ask for. The message says which and why.

    A ``ValueError`` (as it always was) and a :class:`tfquant.errors.TfquantError`, the
    user's to fix.
    """
