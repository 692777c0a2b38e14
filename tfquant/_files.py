"""Input and output files of the command line: one policy, checked before any work.

Every command names its inputs and outputs here first. An input must be a regular file (or
a directory where one is allowed): a FIFO, a device or a socket is refused before anything
opens it, because opening a FIFO blocks and reading ``/dev/zero`` never ends. An output is
resolved and checked before the command loads or trains anything:

* its directory exists and a file can be created in it (probed by creating one, which is
  true for root and read-only mounts too, unlike ``os.access``);
* it is not an existing directory or special file;
* it is not any input, nor another output (after resolving symlinks; hard links too);
* an existing regular file there is replaced only when the user asked (``--overwrite``).

:class:`Outputs` then stages each artifact as a hidden temporary file beside its target and
:meth:`Outputs.commit` moves them all into place with SIGINT / SIGTERM held back, so a run
that fails or is interrupted leaves the user's files as they were and no temporary file. The
artifacts get the mode an ordinary ``open(path, "w")`` gives (``0o666`` less the umask).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator

from tfquant import _signals
from tfquant.errors import ConfigError

__all__ = [
    "FileError",
    "Outputs",
    "check_input",
    "created_directory",
    "describe",
    "umask",
    "write_file",
]

_TEMP_PREFIX = ".tfquant-"


# Every file an Outputs.commit moved into place in this process, in order: the command line
# reads it to say what an interrupted command had already written.
COMMITTED: list[str] = []


class FileError(ConfigError):
    """An input or output path that cannot be used; the message says what was expected.

    A :class:`tfquant.errors.ConfigError` (so a ``ValueError``): the command line reports
    it in one line with exit status 2."""


def umask() -> int:
    """The process umask, read without changing it where Linux reports it (``Umask:`` in
    /proc/self/status); elsewhere set and restored at once."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def describe(mode: int) -> str:
    """``'a FIFO'``, ``'a directory'``, ... for an ``st_mode``."""
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def check_input(path: str | os.PathLike, what: str, *, directory: bool = False) -> str:
    """Check that ``path`` exists and is a regular file (or, with ``directory=True``, a
    directory) without opening it; return it as a string.

    Raises:
        FileError: the path is missing, or a FIFO, device, socket (or an unwanted directory).
    """
    path = os.fspath(path)
    if not path:
        raise FileError(f"Expected a path for the {what}. Received: an empty string")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileError(f"{what} not found: {path!r} (no such file or directory)") from None
    except OSError as e:
        raise FileError(f"Cannot read the {what} {path!r}: {e.strerror or e}") from None
    if stat.S_ISREG(mode) or (directory and stat.S_ISDIR(mode)):
        return path
    expected = "a regular file or a directory" if directory else "a regular file"
    raise FileError(f"Expected the {what} to be {expected}. Received: {path!r}, {describe(mode)}")


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _probe(directory: str) -> None:
    """Create and remove a file in ``directory``: the only check that is true for root,
    read-only mounts, ACLs and full disks alike."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".probe", dir=directory)
    os.close(fd)
    os.unlink(tmp)


class Outputs:
    """The files one command writes: checked up front, staged, then committed together.

    Example:

    >>> outputs = Outputs(inputs=["model.keras"], overwrite=False)      # doctest: +SKIP
    >>> outputs.add("model.tflite", "output")                          # doctest: +SKIP
    >>> outputs.write("model.tflite", flatbuffer)                      # doctest: +SKIP
    >>> outputs.commit()                                               # doctest: +SKIP
    ['model.tflite']

    Args:
        inputs: the command's input paths; no output may be one of them.
        overwrite: replace existing regular files at output paths; otherwise they are an
            error naming ``overwrite_flag``.
        overwrite_flag: how the user asks for ``overwrite`` (named in the error).
    """

    def __init__(
        self,
        inputs: Iterable[str | os.PathLike] = (),
        *,
        overwrite: bool = False,
        overwrite_flag: str = "--overwrite",
    ) -> None:
        self.inputs = [os.fspath(p) for p in inputs if p is not None]
        self.overwrite = overwrite
        self.overwrite_flag = overwrite_flag
        self._targets: dict[str, str] = {}  # path -> what
        self._staged: dict[str, str] = {}  # path -> temporary file
        self._remove: list[str] = []
        self._probed: set[str] = set()  # directories where a file was created
        self.written: list[str] = []
        self.removed: list[str] = []

    # -- checks ------------------------------------------------------------------------------

    def add(self, path: str | os.PathLike, what: str) -> str:
        """Check that ``path`` can be written as the ``what`` (see the module docstring).

        Returns:
            The path, as a string.

        Raises:
            FileError: the message names the path, what was expected and what was found.
        """
        path = os.fspath(path)
        if not path:
            raise FileError(f"Expected a path for the {what}. Received: an empty string")
        for other in self.inputs:
            if os.path.lexists(other) and _same(path, other):
                raise FileError(
                    f"The {what} {path!r} is the input {other!r}: writing it would destroy "
                    "the input. Choose another path"
                )
        for other, other_what in self._targets.items():
            if _same(path, other) or os.path.abspath(path) == os.path.abspath(other):
                raise FileError(
                    f"The {what} and the {other_what} are the same file ({path!r}). Give each "
                    "its own path"
                )
        if os.path.lexists(path):
            try:
                mode = os.stat(path).st_mode
            except OSError:  # a dangling symlink: writing replaces the link
                mode = stat.S_IFREG
            if stat.S_ISDIR(mode):
                raise FileError(
                    f"Cannot write the {what} {path!r}: it is a directory. Expected a file path"
                )
            if not stat.S_ISREG(mode):
                raise FileError(
                    f"Cannot write the {what} {path!r}: it is {describe(mode)}. Expected a "
                    "regular file or a new path"
                )
            if not self.overwrite:
                raise FileError(
                    f"The {what} {path!r} already exists. Pass {self.overwrite_flag} to "
                    "replace it, or choose another path"
                )
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            reason = "does not exist" if not os.path.lexists(directory) else "is not a directory"
            raise FileError(f"Cannot write the {what} {path!r}: directory {directory!r} {reason}")
        try:
            if directory not in self._probed:
                _probe(directory)
                self._probed.add(directory)
        except OSError as e:
            raise FileError(
                f"Cannot write the {what} {path!r}: cannot create files in {directory!r} "
                f"({e.strerror or e})"
            ) from None
        self._targets[path] = what
        return path

    def remove_on_commit(self, path: str | os.PathLike) -> None:
        """Delete ``path`` (if it exists) when committing: a previous artifact this run does
        not replace, so a directory never holds a mix of two runs."""
        self._remove.append(os.fspath(path))

    # -- staging -----------------------------------------------------------------------------

    def stage_path(self, path: str | os.PathLike) -> str:
        """A temporary file beside ``path`` (same name ending, so writers that look at the
        extension work) to write the artifact to; :meth:`commit` moves it to ``path``."""
        path = os.fspath(path)
        if path not in self._targets:
            raise KeyError(f"{path!r} was not added to the outputs")
        if path in self._staged:
            return self._staged[path]
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(
            prefix=_TEMP_PREFIX, suffix="-" + os.path.basename(path), dir=directory
        )
        os.close(fd)
        self._staged[path] = tmp
        return tmp

    def unstage(self, path: str | os.PathLike) -> None:
        """Drop the staged file of ``path``: this run will not write it after all."""
        tmp = self._staged.pop(os.fspath(path), None)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def write(self, path: str | os.PathLike, data: bytes | str) -> None:
        """Stage ``data`` (bytes as they are, or text) for ``path``."""
        tmp = self.stage_path(path)
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)

    @property
    def staged(self) -> list[str]:
        """The paths with a staged file, in the order they were added."""
        return [p for p in self._targets if p in self._staged]

    def commit(self) -> list[str]:
        """Move every staged file into place and delete the files of
        :meth:`remove_on_commit`, with SIGINT, SIGTERM and SIGHUP held back until done (a
        signal that arrives meanwhile is delivered right after).

        Returns:
            The paths written, in the order they were added.

        Raises:
            FileError: a move failed; staged files not yet moved are deleted.
        """
        with _signals.held():
            try:
                mode = 0o666 & ~umask()
                for path in self._targets:
                    tmp = self._staged.get(path)
                    if tmp is None:
                        continue
                    try:
                        os.chmod(tmp, mode)
                        os.replace(tmp, path)
                    except OSError as e:
                        raise FileError(f"Cannot write {path!r}: {e.strerror or e}") from None
                    del self._staged[path]
                    self.written.append(path)
                    COMMITTED.append(path)
                for path in self._remove:
                    if path not in self.written and os.path.lexists(path):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                            self.removed.append(path)
            finally:
                self.discard()
        return list(self.written)

    def discard(self) -> None:
        """Delete every staged file not yet committed."""
        for tmp in self._staged.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged.clear()

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def write_file(
    path: str | os.PathLike, data: bytes | str, *, what: str = "output", overwrite: bool = True
) -> str:
    """Write one file by the same policy as a command's outputs: checked (its directory
    exists and takes files, it is no directory or special file), staged beside it and moved
    into place, so ``path`` is either as it was or complete, with the mode ``open()`` gives.

    Args:
        path: the file to write.
        data: bytes (written as they are) or text.
        what: what the file is, for the error message.
        overwrite: replace an existing regular file (default); False refuses it.

    Returns:
        The path, as a string.

    Raises:
        FileError: the path cannot be written; the message says why.
    """
    with Outputs(overwrite=overwrite, overwrite_flag="overwrite=True") as outputs:
        path = outputs.add(path, what)
        outputs.write(path, data)
        outputs.commit()
    return path


@contextlib.contextmanager
def created_directory(path: str | os.PathLike) -> Iterator[list[str]]:
    """Create ``path`` (and missing parents); on an exception remove the directories this
    created if they are empty, so a failed run leaves no empty ``--out`` behind."""
    path = os.path.abspath(os.fspath(path))
    created: list[str] = []
    probe = path
    while not os.path.isdir(probe):
        created.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    os.makedirs(path, exist_ok=True)
    try:
        yield created
    except BaseException:
        for directory in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
