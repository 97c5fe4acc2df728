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
    while view:
        view = view[os.write(fd, view):]  # os.write retries on EINTR itself (PEP 475)
