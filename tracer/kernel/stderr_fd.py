"""fd 2 pointed at another file for a block: libbcc and clang print there
from C (header warnings, a refused program's verifier log), past
sys.stderr, so only the descriptor itself can be redirected.

fd 2 is the whole process's, but the block is one thread's (the compile
runs on a pool thread while the main thread reads Docker's inventory and
may warn): what *other* threads write through Python (sys.stderr, logging
handlers on it) meanwhile goes to the terminal fd 2 pointed at before, not
into the block's file. C-level writes of other threads cannot be told apart
and do go to the file (tracer makes none)."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading


# A clang diagnostic that is an error: "<file>:<line>:<col>: error: ...",
# "fatal error: ...", or the driver's "error: ..." (e.g. an unknown flag).
_CLANG_ERROR = re.compile(r"^(?:\S.*?:\d+:\d+: )?(?:fatal )?error: ")


def first_clang_error(text: str) -> str | None:
    """Clang's first error diagnostic in captured text (not just any line
    that says "error"), stripped; None when there is none."""
    return next((line.strip() for line in text.splitlines() if _CLANG_ERROR.search(line)), None)


class captured_stderr:
    """BCC/clang print header warnings on fd 2: keep them out of the user's
    terminal (unless TRACER_DEBUG), but keep them to explain a failure."""

    def __enter__(self) -> captured_stderr:
        self.file = tempfile.TemporaryFile(mode="w+")
        try:
            self.redirect = None if os.environ.get("TRACER_DEBUG") else stderr_to(self.file.fileno()).__enter__()
        except BaseException:
            self.file.close()
            raise
        return self

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read()

    def __exit__(self, *exc) -> bool:
        if self.redirect is not None:
            self.redirect.__exit__()
        self.file.close()
        return False


class stderr_to:
    """fd 2 writes to ``fd`` inside the block, and to what it wrote to before after it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: int | None = None
        self.routed: _OtherThreadsToTerminal | None = None
        self.handlers: list[logging.StreamHandler] = []

    def __enter__(self) -> stderr_to:
        _flush(sys.stderr)
        self.saved = os.dup(2)
        try:
            os.dup2(self.fd, 2)
        except BaseException:
            os.close(self.saved)
            self.saved = None
            raise
        self._route_other_threads()
        return self

    def __exit__(self, *exc) -> bool:
        if self.saved is None:
            return False
        _flush(sys.stderr)  # the block's own Python writes belong in the file
        os.dup2(self.saved, 2)
        self._unroute()
        os.close(self.saved)
        self.saved = None
        return False

    def _route_other_threads(self) -> None:
        """sys.stderr and the logging handlers writing to it: other threads'
        text to a dup of the old fd 2 (best effort: a failure only leaves
        them captured, as C writes are)."""
        original = sys.stderr
        try:
            terminal_fd = os.dup(self.saved)
        except OSError:
            return
        try:
            self.routed = _OtherThreadsToTerminal(original, terminal_fd)
        except (OSError, ValueError, LookupError):
            os.close(terminal_fd)
            return
        sys.stderr = self.routed
        for handler in _stream_handlers():
            if handler.stream is original:
                handler.setStream(self.routed)
                self.handlers.append(handler)

    def _unroute(self) -> None:
        routed, self.routed = self.routed, None
        if routed is None:
            return
        for handler in self.handlers:
            if handler.stream is routed:
                handler.setStream(routed.original)
        self.handlers = []
        if sys.stderr is routed:
            sys.stderr = routed.original
        routed.close()  # a late writer still holding it falls back to the original


class _OtherThreadsToTerminal:
    """A stand-in for sys.stderr while fd 2 is redirected: the redirecting
    thread's writes go on to fd 2 (the file), every other thread's straight
    to the terminal."""

    def __init__(self, original, terminal_fd: int) -> None:
        self.original = original
        self.owner = threading.get_ident()
        self.lock = threading.Lock()
        encoding = getattr(original, "encoding", None) or "utf-8"
        self.terminal = open(terminal_fd, "w", encoding=encoding, errors="backslashreplace", closefd=True)

    def write(self, text: str) -> int:
        if threading.get_ident() != self.owner:
            with self.lock:
                if self.terminal is not None:
                    n = self.terminal.write(text)
                    self.terminal.flush()
                    return n
        return self.original.write(text)

    def flush(self) -> None:
        if threading.get_ident() != self.owner:
            with self.lock:
                if self.terminal is not None:
                    self.terminal.flush()
                    return
        self.original.flush()

    def close(self) -> None:
        """Done with the terminal's dup (sys.stderr itself is never closed)."""
        with self.lock:
            terminal, self.terminal = self.terminal, None
        if terminal is not None:
            terminal.close()

    def __getattr__(self, name):  # encoding, isatty, fileno, ...: the real stream's
        return getattr(self.original, name)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _flush(stream) -> None:
    try:
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass
