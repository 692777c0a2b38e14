"""tfquant._files: the one way tfquant writes files (moved here from test_converters'
test of the retired ``write_atomic``, with the same checks)."""

from __future__ import annotations

import os

import pytest

from tfquant._files import FileError, write_file


def test_write_file(tmp_path):
    target = tmp_path / "m.tflite"
    assert write_file(target, b"abc") == str(target)
    assert target.read_bytes() == b"abc"
    for umask in (0o022, 0o077, 0o002):
        old = os.umask(umask)
        try:
            write_file(target, "text")
        finally:
            os.umask(old)
        # the mode open() would give, not mkstemp's 0600
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask, oct(umask)
    assert target.read_text() == "text"
    with pytest.raises(FileError, match="Cannot write"):
        write_file(tmp_path / "no" / "m.tflite", b"abc")
    with pytest.raises(FileError, match="directory"):
        write_file(tmp_path, b"abc")
    with pytest.raises(FileError, match="already exists. Pass overwrite=True"):
        write_file(target, "new", overwrite=False)
    assert target.read_text() == "text"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]
