"""The ``tfquant`` command's entry point: what must happen before TensorFlow is imported.

Importing anything in ``tfquant`` imports TensorFlow, which takes seconds and logs to stderr:
TensorFlow 2.21 writes its C++ start-up lines (oneDNN, CUDA drivers) before absl's logging is
set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not hold them back. This module sets
``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it) for later logs and sends file descriptor 2
to a temporary file during the import, shown only if the import fails; it handles Ctrl-C,
SIGTERM and SIGHUP during the import like any later moment: one line, exit 128 + the signal
number, no traceback (:func:`tfquant.cli.main` takes over once it runs). The library itself
sets no environment variable.

Why a module outside the package: it is the shortest way to hold signals before TensorFlow's
import, since the package's ``__init__`` imports TensorFlow before any code of a subpackage
could run. The signals and the line are those of ``tfquant/_signals.py``, loaded here from its
file (that module imports only the standard library) without importing the package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import tempfile

_STDERR_FD: int | None = None  # the user's stderr while file descriptor 2 is held


def _load_signals():
    """``tfquant/_signals.py`` as a module of its own, without importing ``tfquant``."""
    package = importlib.util.find_spec("tfquant")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("tfquant is not installed", name="tfquant")
    path = os.path.join(list(package.submodule_search_locations)[0], "_signals.py")
    spec = importlib.util.spec_from_file_location("_tfquant_signals", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_signals = _load_signals()


def _interrupted(signum, frame) -> None:
    files = sys.modules.get("tfquant._files")
    line = _signals.interrupted_line(None, getattr(files, "COMMITTED", ()))
    os.write(_STDERR_FD if _STDERR_FD is not None else 2, (line + "\n").encode())
    os._exit(128 + signum)  # mid-import: unwinding could run half-imported code


def main(argv: list[str] | None = None) -> int:
    """Run ``tfquant`` (see :func:`tfquant.cli.main`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for s in _signals.HELD:
        signal.signal(s, _interrupted)
    with _stderr_held():
        from tfquant.cli import main as cli_main

    status = cli_main(argv)
    _signals.ignore()  # done: a signal now would only turn a finished run into a failed one
    return status


@contextlib.contextmanager
def _stderr_held():
    """File descriptor 2 to a temporary file; replayed on stderr if the block raises."""
    global _STDERR_FD
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    _STDERR_FD = saved
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            _STDERR_FD = None
            os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
