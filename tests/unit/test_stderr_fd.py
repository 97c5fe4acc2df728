"""kernel/stderr_fd.stderr_to: what C code writes on fd 2 inside the block
goes to the given file, and fd 2 is the old one again after it (also when
the block raises)."""

from __future__ import annotations

import os
import tempfile

import pytest

from tracer.kernel.stderr_fd import stderr_to


def test_fd2_goes_to_the_file_inside_the_block_and_back_after(capfd):
    with tempfile.TemporaryFile() as f:
        with stderr_to(f.fileno()):
            os.write(2, b"from C\n")
        os.write(2, b"after\n")
        f.seek(0)
        assert f.read() == b"from C\n"
    assert capfd.readouterr().err == "after\n"


def test_fd2_is_restored_when_the_block_raises(capfd):
    before = os.fstat(2)
    with tempfile.TemporaryFile() as f:
        with pytest.raises(RuntimeError):
            with stderr_to(f.fileno()):
                raise RuntimeError("refused")
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
