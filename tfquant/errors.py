"""The errors tfquant raises for input that is the user's to fix.

Every such error says what was expected and what was received. The command line maps them
to exit status 2 by their type (:class:`TfquantError`), never by where they were raised: a
``ValueError`` raised inside TensorFlow or Keras is a bug to report, with its traceback.

This module imports nothing from tfquant, so every layer of the package may use it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "TfquantError"]


class TfquantError(Exception):
    """Base of the errors that refuse the user's input (an argument, a file, a device)."""


class ConfigError(TfquantError, ValueError):
    """An argument, an option or a file's content that tfquant refuses.

    A ``ValueError``, so code that catches ``ValueError`` around tfquant's checks keeps
    working.
    """
