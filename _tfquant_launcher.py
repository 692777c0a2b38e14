"""The ``tfquant`` command's entry point: what must happen before TensorFlow is imported.

Importing ``tfquant`` imports TensorFlow, which takes seconds and logs to stderr: TensorFlow
2.21 writes its C++ start-up lines (oneDNN, CUDA drivers) before absl's logging is set up, so
``TF_CPP_MIN_LOG_LEVEL`` does not hold them back. The command line sets
``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it) for later logs and sends file descriptor 2
to a temporary file during the import, shown only if the import fails; it handles Ctrl-C, SIGTERM
and SIGHUP during the import like any later moment: one line, exit 128 + the signal number,
no traceback (:func:`tfquant.cli.main` takes over once it runs). The library itself sets no
environment variable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_STDERR_FD: int | None = None  # the user's stderr while file descriptor 2 is held


def _interrupted(signum, frame) -> None:
    files = sys.modules.get("tfquant._files")
    written = list(getattr(files, "COMMITTED", ()))
    kept = "; wrote " + ", ".join(written) + " before it" if written else "; nothing written"
    message = f"tfquant: interrupted{kept}\n".encode()
    os.write(_STDERR_FD if _STDERR_FD is not None else 2, message)
    os._exit(128 + signum)  # mid-import: unwinding could run half-imported code


def main(argv: list[str] | None = None) -> int:
    """Run ``tfquant`` (see :func:`tfquant.cli.main`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for s in _SIGNALS:
        signal.signal(s, _interrupted)
    with _stderr_held():
        from tfquant.cli import main as cli_main

    status = cli_main(argv)
    for s in _SIGNALS:  # done: a signal now would only turn a finished run into a failed one
        signal.signal(s, signal.SIG_IGN)
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
