"""The kernel verifier's log of a refused program, for the one-line error
that names it: with TRACER_DEBUG, what BCC prints of it goes to a file
(verifier_log), and tracer's own loader's whole logs are written to one
(keep_verifier_logs); where_the_log_is ends the error."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tracer.kernel.stderr_fd import stderr_to


def where_the_log_is(log_file: str | None) -> str:
    """The end of a refusal's message: where the verifier's full log is, or
    how to get it and how to tell a shared body's refusal."""
    if log_file:
        return f" (the verifier's full log: {log_file})"
    return ("; TRACER_DEBUG=1 writes the verifier's full log to a file, TRACER_SHARED_ENTRIES=0 builds a function "
            "per program (a refusal that goes away with it is the shared bodies')")


def keep_verifier_logs(logs: dict[str, str]) -> str | None:
    """The refused programs' whole verifier logs in one file (its path), or
    None when there are none."""
    if not logs:
        return None
    fd, path = tempfile.mkstemp(prefix="tracer-verifier-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        for name, text in sorted(logs.items()):
            f.write(f"--- {name}: the kernel's verifier log ---\n{text.rstrip()}\n")
    return path


class verifier_log:
    """With TRACER_DEBUG, what BCC prints on fd 2 while the kernel verifies
    (libbcc prints a refused program's full verifier log there) goes to a
    file, kept (``path``) when the block sets ``keep``, else copied back to
    stderr and removed (``path`` None)."""

    def __enter__(self):
        self.path: str | None = None
        self.redirect: stderr_to | None = None
        self.keep = False
        if not os.environ.get("TRACER_DEBUG"):
            return self
        fd, self.path = tempfile.mkstemp(prefix="tracer-verifier-", suffix=".log")
        try:
            self.redirect = stderr_to(fd).__enter__()
        except BaseException:  # fd 2 not redirected (e.g. EMFILE): nothing of this block stays
            os.unlink(self.path)
            self.path = None
            raise
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        if self.redirect is None:
            return False
        self.redirect.__exit__()
        if self.keep:
            return False  # the refusal's message names it
        sys.stderr.write(Path(self.path).read_text(errors="replace"))
        sys.stderr.flush()
        os.unlink(self.path)
        self.path = None
        return False
