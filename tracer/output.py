"""Writing results to stdout so that none are lost when a signal arrives.

Python's buffered stdout can drop the rest of a large write to a full pipe
when a signal handler runs in the middle of it (seen here: `trace --json |
reader` lost exactly what did not fit in the 64 KiB pipe when SIGINT
arrived). We stop on SIGINT/SIGTERM by setting a flag, so signals do arrive
mid-write: write to the file descriptor ourselves, resuming partial writes.
"""

from __future__ import annotations

import io
import os
import select
import sys
from typing import TextIO


def write_out(text: str | bytes | memoryview, stream: TextIO | None = None) -> None:
    """Write text, or text already encoded as UTF-8 (e.g. the --json block,
    straight from Arrow's buffer, without a copy)."""
    stream = stream or sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, io.UnsupportedOperation):
        stream.write(text if isinstance(text, str) else bytes(text).decode())  # not a file (a test's StringIO, say)
        stream.flush()
        return
    stream.flush()  # anything written the ordinary way goes first
    view = memoryview(text.encode() if isinstance(text, str) else text)
    global writing
    writing = True  # a stop signal now raises WriteInterrupted (tracer/stopping.py)
    try:
        while view:
            view = view[os.write(fd, view[:WRITE_PIECE]):]  # os.write retries on EINTR itself (PEP 475)
    finally:
        writing = False
        _end_deadline()


def _end_deadline() -> None:
    """The write that a stop signal gave a deadline to is over: cancel it
    (it must not cut a later write short)."""
    global deadline_armed
    if deadline_armed:
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        deadline_armed = False


# The most one write() hands the kernel. A write that covers a whole 2 MiB
# aligned stretch of a file makes the page cache take a 2 MiB folio for it,
# which comes from a free block of 2 MiB or more: on this project's VMs
# (virtio-balloon free page reporting) exactly the blocks handed back to the
# host, so every page of it faults in the host on the copy (~1.3 µs a KB).
# Smaller folios are served from smaller free blocks first, which the guest
# kept, while it has any: `trace --json`'s system time a packet went 2.2 ->
# 1.25 µs (median of 10 rounds; 3.3 -> 0.75 in the best) writing its ~14 MB
# shows in 1 MiB pieces (docs/benchmarks.md, "Session 10: `trace --json`
# CPU"). Elsewhere the pieces cost only their syscalls (~14 a show).
WRITE_PIECE = 1 << 20

# True while write_out writes: a reader that stopped reading (but did not
# close the pipe) blocks the write forever, and a stop signal whose handler
# only set a flag would be lost in os.write's retries: the tracer would go
# on tracing. The handler raises WriteInterrupted instead.
writing = False
# True while a capture streams to stdout (`-w -`) and its pipe takes the
# bytes: like `writing`, time the reader sets the pace of (the stop
# watchdog in tracer/stopping.py does not count it: a slow reader is not a
# hang).
pipe_writing = False
deadline_armed = False  # set by tracer/stopping.py with its SIGALRM deadline


class WriteInterrupted(Exception):
    """A stop signal came while a write to stdout was blocked (or under way)."""


class Reader:
    """Whoever reads our stdout. It may go away (`tracer trace --json | head
    -1`): then ``gone`` is set and nothing more is written, so the command
    stops as if told to (its capture finished, exit 0), not with an error."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.gone = False
        self.pages = None  # tracer/written_pages.py: a regular file's output written back and dropped as it grows
        self.direct = None  # tracer/direct_output.py: a regular file's output written with O_DIRECT (False: not used)

    def _written(self) -> None:
        if self.pages is None:
            from tracer.written_pages import WrittenPages

            self.pages = WrittenPages.of(self.stream or sys.stdout)
        self.pages.wrote()

    def close(self) -> None:
        if self.pages is not None:
            self.pages.close()
        if self.direct:
            self.direct.close()
            self.direct = False

    def stage(self):
        """The direct output (tracer/direct_output.py) where stdout is a
        file written that way, for a writer that puts its text in its stage;
        else None."""
        if self.direct is None and not self.gone:
            from tracer.direct_output import DirectOutput
            from tracer.written_pages import stream_fd

            stream = self.stream or sys.stdout
            try:
                stream.flush()  # anything written the ordinary way goes first
            except (AttributeError, ValueError, OSError):
                pass
            fd = stream_fd(stream)
            self.direct = (DirectOutput.for_fd(fd) if fd >= 0 else None) or False
        return self.direct or None

    def idle(self) -> None:
        """A pass that wrote nothing (a burst's stage may go: DirectOutput.idle)."""
        if self.direct:
            self.direct.idle()

    def _write_direct(self, text: str | bytes | memoryview) -> bool:
        """Written with O_DIRECT where stdout is a file that takes it (True)."""
        direct = self.stage()
        if direct is None:
            return False
        written = direct.write(text.encode() if isinstance(text, str) else text)
        if not direct.active:  # the ordinary way from now on
            direct.close()
            self.direct = False
        return written

    def check(self) -> bool:
        """Whether the reader has gone, found without writing: a pipe whose
        reading end closed polls as an error (so `| head -1` stops a quiet
        trace too, not only at its next journey)."""
        if not self.gone:
            try:
                fd = (self.stream or sys.stdout).fileno()
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                if any(ev & select.POLLERR for _, ev in poller.poll(0)):
                    self.gone = True
                    quiet_stdout()
            except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
                pass
        return self.gone

    def write(self, text: str | bytes | memoryview) -> bool:
        if self.gone:
            return False
        try:
            if not self._write_direct(text):
                write_out(text, self.stream)
                self._written()
        except BrokenPipeError:
            self.gone = True
            quiet_stdout()
        except WriteInterrupted:  # told to stop while the reader was not reading: write no more
            self.gone = True
        return not self.gone


def quiet_stdout() -> None:
    """stdout's reader is gone: point fd 1 at /dev/null so nothing later (an
    interpreter-exit flush) fails on it with 'Exception ignored ...'."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def say(text: str, nl: bool = True) -> None:
    """A line for the user on stderr; a terminal that hung up (SIGHUP: EIO)
    or a closed pipe must not turn a clean stop into a traceback."""
    import click

    try:
        click.echo(text, err=True, nl=nl)
    except OSError:
        pass
