"""Captures on disk: Arrow IPC stream files (``.arrows``) in CAPTURE_SCHEMA.

``writer``: ``CaptureWriter`` buffers decoded event tables and writes one
record batch at least once a second (so a SIGKILL loses at most that second),
keeps one growing dictionary per dictionary column so the stream only carries
dictionary *deltas*, compresses with zstd, creates files with mode 0600 and
rotates into numbered files (``cap.0000.arrows``, ``cap.0001.arrows``...), each
a complete stream with the full schema and metadata.

``recorder``: ``Recorder`` wires a writer to a live ``TraceSession``:
metadata, container start/stop rows, the closing statistics row, progress
figures.

``reader``: ``open_capture(paths)`` streams files batch by batch in bounded
memory (every batch through ``_conform``, the one place a stored batch
becomes rows of CAPTURE_SCHEMA); ``read_capture(paths)`` collects that into
one table for captures that fit in memory. Both tolerate a torn tail (a
writer killed mid-batch) and report what they recovered; anything they
cannot read raises ``CaptureReadError`` with a one-line message.

This module holds what the three share: the errors and the name of
standard input/output.
"""

from __future__ import annotations

from tracer.errors import TracerError

SUFFIX = ".arrows"
STDIN = "-"  # as a capture path: standard input (reading) or output (writing)


class CaptureReadError(TracerError):
    """A capture file that cannot be read (missing, empty, not Arrow, wrong version)."""


class CaptureWriteError(TracerError):
    """A capture file that cannot be created or written."""


class CaptureReaderGone(CaptureWriteError):
    """`-w -`: whoever read the capture from our stdout closed the pipe.
    Not an error (as `| head` is not): the command stops, exit 0."""

    exit_code = 0


# The documented Python API (README, docs/capture-format.md) reads captures
# by the package's name; inside tracer, import from the module that owns a name.
from tracer.capture.reader import open_capture, read_capture  # noqa: E402

__all__ = ["STDIN", "CaptureReadError", "CaptureReaderGone", "CaptureWriteError", "open_capture", "read_capture"]
