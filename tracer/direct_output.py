"""A regular file's output written with O_DIRECT: straight from our memory
to the disk, never through the page cache.

`trace --json > FILE` writes ~2.2 KB a packet. Written the ordinary way,
each byte is copied into a page-cache page the kernel allocates and tracks
(on this project's VMs often a page the host must fault in first), then
written back and dropped by tracer/written_pages.py: system time that was
most of the cost of a byte. With O_DIRECT the disk reads the bytes from a
page-aligned buffer of ours that stays mapped from one pass to the next:
one copy into it, no page-cache work (docs/benchmarks.md, "Session 21").

O_DIRECT wants whole blocks at block-aligned offsets, so only whole blocks
go that way; the partial block at the end of what has been written goes
the ordinary way through stdout's own descriptor too, so a reader (`tail
-f FILE`) sees every line as soon as it was written, and is written again
as part of the next whole block (the kernel writes the cached page back and
drops it before a direct write over it). The direct writes use a second
open file description of the same file (/proc/self/fd): stdout's own keeps
its flags (a shell's later writes to it must not inherit O_DIRECT) and is
moved to the end after each write, as a write of its own would have.

Used only where that is safe and exact: a regular file, stdout's offset at
a block boundary (`>`, not `>>`: O_APPEND), stderr not the same file (its
lines go at stdout's offset: direct writes at our own offsets would
overwrite them), and a file system that takes O_DIRECT. A file system that
refuses the first direct write (EINVAL) gets everything through stdout
from then on, as before; a disk's error (ENOSPC, EIO) is raised as a write
of stdout would raise it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import stat

from tracer.allocator import KeepWhileNeeded

BLOCK = 4096  # alignment of the buffer, offsets and lengths: any device's logical block up to a page
STAGE = 8 << 20  # the buffer's first size; grown (to a multiple of STAGE) for a larger write
# A grown buffer is kept while the passes keep needing it, its pages
# mapped from one pass to the next (allocator.KeepWhileNeeded): a stream
# traced at ~60k packets/s writes ~20 MB of JSON a pass (a 40-48 MB stage,
# the writer's bound being about twice its text), and going back to STAGE
# after each such write faulted the grown one in again every pass (0.2-0.3
# page faults a packet, a third of `trace --json`'s system time).


class DirectOutput:
    """``write(data)`` appends to the file; ``close()`` at the end. Build
    with ``for_fd``, which returns None where O_DIRECT is not to be used."""

    def __init__(self, fd: int, direct_fd: int, offset: int) -> None:
        self.fd = fd  # stdout's: the partial block, and its offset kept at the end
        self.direct_fd = direct_fd
        self.start = offset  # file offset of the buffer's first byte (block-aligned)
        # The stage: the next text goes at `at`, after the bytes not yet
        # written as whole blocks (< BLOCK between writes); a writer that puts
        # it there itself (journey_json_text) saves write() the copy.
        self.buffer = mmap.mmap(-1, STAGE)
        self.view = memoryview(self.buffer)
        self.base = _address(self.view)  # where write() recognises its own stage
        self.at = 0
        self.keep = KeepWhileNeeded()  # when a grown stage goes back to STAGE

    def ensure(self, size: int) -> None:
        """The stage at least ``size`` bytes long (what it holds kept)."""
        if size > len(self.buffer):
            self._grow(size)

    @classmethod
    def for_fd(cls, fd: int) -> "DirectOutput | None":
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
                return None
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            if offset % BLOCK:
                return None
            try:
                err = os.fstat(2)
                if (err.st_dev, err.st_ino) == (st.st_dev, st.st_ino):
                    return None
            except OSError:
                pass
            direct_fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            opened = os.fstat(direct_fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.ESTALE, "not the same file")
        except OSError:
            os.close(direct_fd)
            return None
        return cls(fd, direct_fd, offset)

    def write(self, data) -> bool:
        """Append ``data``: its whole blocks written directly, the rest
        through stdout (and kept for the next write's first block). False:
        not written, write it the ordinary way. Direct writes stop for good
        (``active`` False; a write then done is done whole, stdout's offset
        at its end) where the file system refuses them, or where something
        else moved stdout's offset since the last write (a write of its
        own: ours would land over it)."""
        data = memoryview(data).cast("B")
        if self.direct_fd < 0:
            return False
        if os.lseek(self.fd, 0, os.SEEK_CUR) != self.start + self.at:
            self._give_up()
            return False
        if not len(data):
            return True
        need = self.at + len(data)
        if data.obj is not self.buffer or _address(data) != self.base + self.at:  # else written there already
            if need > len(self.buffer):
                self._grow(need)
            self.view[self.at:need] = data
        del data
        self.at = need
        whole = need - need % BLOCK
        if whole:
            try:
                self._pwrite_all(self.direct_fd, self.view[:whole], self.start)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._give_up()  # this file system takes no O_DIRECT of this shape: stdout from here on
        if self.direct_fd < 0:
            self._pwrite_all(self.fd, self.view[:need], self.start)
            os.lseek(self.fd, self.start + need, os.SEEK_SET)
            self.start, self.at = self.start + need, 0
            return True
        rest = need - whole
        if whole:
            self.view[:rest] = self.view[whole:need]
            self.start += whole
            self.at = rest
        if rest:
            self._pwrite_all(self.fd, self.view[:rest], self.start)
        os.lseek(self.fd, self.start + rest, os.SEEK_SET)
        self._keep_or_let_go(need)
        return True

    def idle(self) -> None:
        """A pass that wrote nothing: a quiet one."""
        self._keep_or_let_go(0)

    def _keep_or_let_go(self, need: int) -> None:
        """After a pass that needed ``need`` bytes of stage."""
        if len(self.buffer) > STAGE and self.keep.let_go(need, len(self.buffer)):
            self._resize(STAGE)

    @property
    def active(self) -> bool:
        return self.direct_fd >= 0

    @staticmethod
    def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
        while len(view):
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def _grow(self, need: int) -> None:
        self._resize(-(-need // STAGE) * STAGE)
        self.keep.grew(need)

    def _resize(self, size: int) -> None:
        buffer = mmap.mmap(-1, size)
        buffer[:self.at] = self.buffer[:self.at]
        # the old one is not closed: a view of it may still be held (unmapped once none is)
        self.buffer, self.view = buffer, memoryview(buffer)
        self.base = _address(self.view)

    def _give_up(self) -> None:
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1

    def close(self) -> None:
        """The last partial block is on disk already (written through
        stdout); only the second descriptor and the buffer go."""
        self._give_up()
        try:
            self.view.release()
            self.buffer.close()
        except BufferError:  # a view of it still held: unmapped once none is
            pass


def written_in(stage, fill) -> memoryview:
    """The text a compiled writer puts in ``stage`` (a DirectOutput, or
    anything with its ``buffer``, ``at`` and ``ensure``) at ``at``, where
    write() takes it from: ``fill(buffer, at)`` returns its length, or
    minus the size the stage must have (a writer never grows it: it is
    grown here and ``fill`` called again). A view of the stage, good until
    its next use."""
    size = fill(stage.buffer, stage.at)
    if size < 0:
        stage.ensure(-size)
        size = fill(stage.buffer, stage.at)
    return memoryview(stage.buffer)[stage.at:stage.at + size]


def _address(view: memoryview) -> int | None:
    """Where a writable view's bytes start in memory (None: read-only or empty)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None
