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


# The compile redirects fd 2 on a pool thread while the main thread reads
# Docker's inventory and may warn: a child process, so that its real fd 2 (a
# pipe here) is what is redirected and read.
_OTHER_THREAD = r"""
import logging, os, sys, tempfile, threading
from tracer.kernel.stderr_fd import stderr_to
logging.basicConfig(level=logging.WARNING, format="tracer: %(levelname)s: %(message)s")
handler = logging.getLogger().handlers[0]
stream_before, stderr_before = handler.stream, sys.stderr
inside, written = threading.Event(), threading.Event()

def compile_like():
    with tempfile.TemporaryFile() as f:
        with stderr_to(f.fileno()):
            os.write(2, b"clang: 3 warnings generated\n")
            print("bcc from python", file=sys.stderr)
            inside.set()
            written.wait(10)
        f.seek(0)
        os.write(1, b"FILE:" + f.read().replace(b"\n", b"|") + b"\n")

worker = threading.Thread(target=compile_like)
worker.start()
inside.wait(10)
logging.getLogger("tracer.session").warning("no Docker engine")
print("a main-thread print", file=sys.stderr)
written.set()
worker.join()
assert handler.stream is stream_before and sys.stderr is stderr_before
logging.getLogger("tracer").warning("after")
"""


def test_other_threads_python_writes_reach_the_terminal_during_the_block():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _OTHER_THREAD], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["tracer: WARNING: no Docker engine", "a main-thread print",
                                       "tracer: WARNING: after"]
    # The block's own thread (C and Python) still writes to the file only.
    assert run.stdout.strip() == "FILE:clang: 3 warnings generated|bcc from python|"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_redirect_that_fails_leaks_no_descriptor(monkeypatch):
    from tracer.kernel import stderr_fd

    def refuse(fd, fd2):
        raise OSError(24, "Too many open files")

    with tempfile.TemporaryFile() as f:
        before = _open_fds()
        monkeypatch.setattr(stderr_fd.os, "dup2", refuse)
        with pytest.raises(OSError):
            with stderr_to(f.fileno()):
                pass
        monkeypatch.undo()
        assert _open_fds() == before
