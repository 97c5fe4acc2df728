"""A regular file's output kept out of the page cache as it streams.

(`trace` and `latency` write a regular file with O_DIRECT where they can,
tracer/direct_output.py; this is `show`'s way, and theirs where O_DIRECT
cannot be exact: `>>`, `2>&1`, a file system without it.)

`trace --json > FILE` writes ~2.2 KB a packet, 100 MB/s and more under
load. Left alone, every byte sits in a page of the page cache until memory
runs short, so each write copies into a page the kernel has not touched
for a long time: on a VM with virtio-balloon free page reporting (this
project's) such a page is not backed by the host, and its first touch
costs a host fault (`trace --json`'s system time a packet was 3-4 µs of its
~5 writing to ext4, 0.15 writing to /dev/null; docs/benchmarks.md,
"Session 13: output writes"). So, as streaming writers do (`dd
oflag=nocache`), the written file is written back a stretch at a time and
each stretch, once on disk, is dropped from the cache: its pages are freed
while still hot and the next writes reuse them, and the tracer's output no
longer fills the machine's memory. The bytes written are the same; only
what the cache keeps of them changes.

The writeback and the drops run on a thread of their own (they wait for
the disk), never on the thread that writes: a slow disk slows this thread
only, which then covers more at once. Its calls go a step at a time and it
waits on at most ~2 steps a wake-up (when it falls further behind, the
backlog's writeback is started but not waited for or dropped): a wait on
writeback is uninterruptible, and stopping or exiting must not sit behind a
slow disk for longer than a step takes. Pipes, terminals, /dev/null and
anything else that is not a regular file are left alone, as is a file
whose file system refuses the calls (tmpfs takes them and does nothing).
The first error ends it: quietly when the file system lacks the calls, with
a line on stderr when it is the disk's (EIO, ENOSPC, EDQUOT: the output did
not all reach the disk, and the tracer may be the one process told, as the
wait marks the error seen); the command then exits with status 1 once it
has finished (tracer/cli: ``output_failed``), as a writer whose output
failed should, so a script that ran `tracer trace > FILE` knows.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import threading

# Written back a stretch of at least this much at a time, and dropped one
# stretch later: while the disk keeps up, at most ~2-3 stretches of the
# output stay in the cache. Each call covers at most a step.
STEP = 8 << 20
# At most this many steps are waited for and dropped a wake-up: the rest of
# a longer stretch (the disk fell behind) is left to the kernel's flusher.
MOST_DROPPED = 2
# Stretch ends fall on this boundary (the page cache's largest folios are
# 2 MiB: one cut in two by a stretch's end would be kept by the drop).
ALIGN = 2 << 20

SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4

# Errors of the calls that say this file (system) does not take them, not
# that its data failed to reach the disk: left without a word.
NOT_SUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESPIPE, errno.EBADF})

# Set once a disk's error was told (failure_line): the process's output is
# incomplete, whichever command wrote it; its exit status says so
# (output_failed).
told_failure = threading.Event()


def output_failed() -> bool:
    """Whether writing a regular file's output back failed in this process
    (the line was told on stderr)."""
    return told_failure.is_set()


def failure_line(error: OSError, name: str) -> str | None:
    """The line for stderr when writing ``name`` back failed, None when the
    error only says the calls are not supported there."""
    if error.errno in NOT_SUPPORTED:
        return None
    return f"tracer: writing the output file {name} failed: {error.strerror}; the output may be incomplete"


class WritebackPlan:
    """Which stretches of the file to write back and which to drop, given
    how far it has been written (pure: the thread does the calls).
    ``written_back``: the end of what writeback was started for;
    ``dropped``: the end of what was dropped."""

    def __init__(self, start: int = 0, step: int = STEP, align: int = ALIGN,
                 most_dropped: int = MOST_DROPPED) -> None:
        self.step, self.align, self.most_dropped = step, align, most_dropped
        self.written_back = self.dropped = start - start % align

    def advance(self, written: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(offset, length) to start writeback for and (offset, length) to
        wait for and drop, each None when there is none: the stretch
        written since the last writeback, once a step long, and the stretch
        whose writeback the call before started (its first
        ``most_dropped`` steps only: waiting on more could keep a stop
        waiting on a slow disk)."""
        end = written - written % self.align
        if end < self.dropped:  # truncated, or another writer moved the offset back: start over there
            self.written_back = self.dropped = end
            return None, None
        if end - self.written_back < self.step:
            return None, None
        write = (self.written_back, end - self.written_back)
        drop = (self.dropped, min(self.written_back - self.dropped, self.most_dropped * self.step)) \
            if self.written_back > self.dropped else None
        self.dropped, self.written_back = self.written_back, end
        return write, drop


def in_steps(stretch: tuple[int, int], step: int) -> list[tuple[int, int]]:
    """(offset, length) cut into pieces of at most ``step``, in order."""
    offset, length = stretch
    return [(at, min(step, offset + length - at)) for at in range(offset, offset + length, step)]


def stream_fd(stream) -> int:
    """A stream's file descriptor, -1 when it has none (a test's StringIO)."""
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return -1


def _sync_file_range():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.sync_file_range
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int

    def sync_file_range(fd: int, offset: int, length: int, flags: int) -> None:
        if call(fd, offset, length, flags) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return sync_file_range


class WrittenPages:
    """Call ``wrote()`` after each write to ``fd``; ``close()`` at the end
    (it does not wait for the disk). Does nothing unless ``fd`` is a
    regular file."""

    def __init__(self, fd: int, step: int = STEP) -> None:
        self.fd, self.step = fd, step
        self.active = False
        try:
            self.active = stat.S_ISREG(os.fstat(fd).st_mode)
            position = os.lseek(fd, 0, os.SEEK_CUR) if self.active else 0
            if self.active and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
                # the shell's `>>` does not seek: its offset is 0 until the first write, and what
                # the file held before is not the tracer's to write back or drop
                position = max(position, os.fstat(fd).st_size)
        except OSError:
            self.active = False
        if not self.active:
            return
        self.plan = WritebackPlan(position, step)
        self.noted = position  # the offset the thread was last told of
        self.position = position
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.error: OSError | None = None  # the calls' error that ended the thread

    @classmethod
    def of(cls, stream) -> "WrittenPages":
        """For a stream (sys.stdout): inactive when it has no file descriptor."""
        return cls(stream_fd(stream))

    def wrote(self) -> None:
        if not self.active:
            return
        try:
            position = os.lseek(self.fd, 0, os.SEEK_CUR)  # after O_APPEND too: the end just written
        except OSError:
            self.active = False
            return
        if abs(position - self.noted) < self.step:  # the thread wakes a step at a time, not a write
            return
        self.position = self.noted = position
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="written-pages", daemon=True)
            self.thread.start()
        self.wake.set()

    def close(self) -> None:
        if self.active:
            self.active = False
            self.stopping = True
            self.wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end after ``close()`` (for tests: the
        tracer itself does not wait)."""
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.join(timeout)

    def _name(self) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            return f"(descriptor {self.fd})"

    def _run(self) -> None:
        try:
            sync_file_range = _sync_file_range()
            while True:
                self.wake.wait()
                self.wake.clear()
                if self.stopping:
                    return
                write, drop = self.plan.advance(self.position)
                # a step a call, `stopping` looked at between calls: a stop waits for one step at most
                for piece in in_steps(write, self.step) if write is not None else ():
                    if self.stopping:
                        return
                    sync_file_range(self.fd, *piece, SYNC_FILE_RANGE_WRITE)
                for piece in in_steps(drop, self.step) if drop is not None else ():  # started a stretch ago: mostly on disk
                    if self.stopping:
                        return
                    sync_file_range(self.fd, *piece, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE
                                    | SYNC_FILE_RANGE_WAIT_AFTER)
                    os.posix_fadvise(self.fd, *piece, os.POSIX_FADV_DONTNEED)
        except AttributeError:  # a libc without sync_file_range: leave the cache be
            self.active = False
        except OSError as error:  # a file system without these calls, the fd closed; or the disk's error
            self.active = False
            self.error = error
            line = failure_line(error, self._name())
            if line is not None:
                told_failure.set()
                try:
                    print(line, file=sys.stderr, flush=True)
                except (OSError, ValueError):  # stderr gone too
                    pass
