"""Files tracer writes (captures, pcapng, HTML reports, exports): created
with mode 0600 whatever the umask, because they hold addresses, container
names and commands, and never through a symlink (tracer runs as root,
often in directories other users can write to).

``TRACER_FILE_MODE`` (octal, e.g. ``0640``) asks for another mode.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from tracer.errors import TracerError

DEFAULT_MODE = 0o600


def file_mode() -> int:
    """The mode new output files get: 0600, or TRACER_FILE_MODE."""
    text = os.environ.get("TRACER_FILE_MODE", "").strip()
    if not text:
        return DEFAULT_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise TracerError(f"TRACER_FILE_MODE={text!r} is not a file mode (octal, e.g. 0640)")
    return mode


def create_fd(path: str | os.PathLike) -> int:
    """Open ``path`` for writing (truncated) with ``file_mode()``; raises OSError.

    The mode is set on regular files only: ``-w /dev/full`` or a FIFO must
    not have its own permissions changed."""
    mode = file_mode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, mode)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, mode)  # an existing file keeps its old mode otherwise; the umask is ignored too
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_output(path: str | os.PathLike, text: bool = False) -> BinaryIO:
    """``create_fd`` as a file object (binary, or UTF-8 text)."""
    fd = create_fd(path)
    return os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb")
