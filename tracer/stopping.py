"""Stopping a command that runs until told to: SIGINT (Ctrl-C), SIGTERM,
SIGHUP (the terminal went away) and SIGPIPE (a reader went away) all stop
it the same way: summary, the capture's statistics row, its end-of-stream
marker. A SIGHUP the command was started with ignored (`nohup tracer record
-w f &`) stays ignored: the user asked it to outlive the terminal.

A SIGINT it was started with ignored is handled all the same, on purpose. A
shell without job control (a script) starts every background command so,
`nohup ... &` included, only to keep the terminal's Ctrl-C off it: nobody
asked for that tracer to be unstoppable by SIGINT, and a SIGINT that reaches
it is someone stopping it as a user would with Ctrl-C (`kill -INT`, a test,
a supervisor, the script's own Ctrl-C). Stopping it cleanly (summary,
capture finished) is what they want; ignoring it would leave a tracer
attached that only SIGTERM or SIGKILL ends.

While setting up (compile, attach), a signal raises KeyboardInterrupt, so the
`finally` blocks detach whatever is attached; it also sets the flag, so a
KeyboardInterrupt swallowed by library code on the way cannot let the start
go on into tracing. Once running, a signal only sets a flag the loop checks:
an exception raised in the middle of a write would tear a capture's batch or
lose output. Only a write to stdout still blocked a second after the signal
(a reader that stopped reading) is given up, so the stop is never lost.

Stopping itself is bounded too: from the first stop signal, or from the
moment the loop ends by itself (`finishing`), the command has STOP_GRACE_S
to detach and finish (time blocked writing to a reader that reads slowly,
a pager, does not count). Past that, whatever is stuck (a library call that
never returns), it prints where every thread is and exits 1: a tracer told
to stop never goes on tracing. Its BPF links are held by file descriptors,
so the exit detaches them.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

from tracer.render_commands import gave_up_line  # imported now: the stop that gives up must not wait on an import

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)


_early: dict[str, int] = {}
# How long a write to stdout under way when a stop signal came may go on.
WRITE_GRACE_S = 1.0
# How long detaching, draining and writing the last output may take.
STOP_GRACE_S = float(os.environ.get("TRACER_STOP_GRACE_S", "20"))


def stop_signals() -> tuple[int, ...]:
    """The signals that stop the command: SIGNALS, less SIGHUP when it is
    ignored now (inherited so from nohup; Python itself leaves SIGHUP as it
    found it). SIGINT stays even when inherited ignored (see above)."""
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return tuple(sig for sig in SIGNALS if sig != signal.SIGHUP)
    return SIGNALS


def _write_deadline(signum, frame) -> None:
    from tracer import output

    if output.writing:
        raise output.WriteInterrupted


def watch_from_start() -> None:
    """Python ignores SIGPIPE from its start, so one that comes before a
    command installs its handlers would be lost: note it, and let StopSignals
    act on it. (SIGTERM, SIGHUP and SIGINT already end a process that has
    not installed its handlers yet: nothing is attached then.)

    SIGUSR1 prints every thread's stack to stderr and goes on (README:
    Stopping): a tracer that seems stuck says where."""
    import faulthandler

    signal.signal(signal.SIGPIPE, _note_early)
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    except (AttributeError, ValueError, OSError):  # stderr without a file descriptor (an embedding, a test runner)
        pass


def _note_early(signum, frame) -> None:
    _early.setdefault("signal", signum)


class StopSignals:
    """Installs the setup-time handlers on creation; `restore()` in a finally."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = _early.get("signal")  # the first signal that asked to stop
        self.requested = self.signal is not None
        # A thread started here that looks at plain flags: a signal handler
        # must not start threads or take locks (the code it interrupted may
        # hold them).
        self._finishing = False
        self._restored = False
        # The watchdog sleeps on this until a stop, the loop's own end or
        # restore() writes it: no wake-up while tracing (it looked at the
        # flags 5 times a second, ~35 µs of CPU each on a VM). Writing an
        # eventfd is one syscall, no lock: a signal handler may do it.
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
        self._watchdog = threading.Thread(target=self._watch, name="tracer-stop-watchdog", daemon=True)
        self._watchdog.start()
        self._signals = stop_signals()
        self._previous = {sig: signal.getsignal(sig) for sig in self._signals}
        # A setup-time signal raises KeyboardInterrupt wherever the main
        # thread is; inside a callback Python cannot propagate from (an
        # import lock's weakref callback, a __del__) it would be printed as
        # "Exception ignored ... Traceback". The stop is not lost (requested
        # is set: running() raises again), so that print is only noise.
        self._previous_unraisable = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        for sig in self._signals:
            signal.signal(sig, self._interrupt)

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def running(self) -> None:
        """From now on a signal asks the loop to stop. A signal that came
        while setting up stops the start here, even if its KeyboardInterrupt
        was lost."""
        if self.requested:
            raise KeyboardInterrupt
        for sig in self._signals:
            signal.signal(sig, self._request)

    def _request(self, signum, frame) -> None:
        from tracer import output

        self.requested = True
        if self.signal is None:
            self.signal = signum
        self._wake()
        if output.writing:
            # A write to stdout is under way: let it finish (a torn line
            # is lost output), but a reader that stopped reading blocks it
            # forever and os.write retries after this handler: give it a
            # second, then give up the write, not the stop.
            signal.signal(signal.SIGALRM, _write_deadline)
            output.deadline_armed = True
            signal.setitimer(signal.ITIMER_REAL, WRITE_GRACE_S)

    def _interrupt(self, signum, frame):
        self._request(signum, frame)
        raise KeyboardInterrupt

    def _unraisable(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.requested:
            return  # our own stop, raised where it could not propagate: see __init__
        self._previous_unraisable(unraisable)

    def finishing(self) -> None:
        """From now on the command has STOP_GRACE_S to end (see above)."""
        self._finishing = True
        self._wake()

    def _watch(self) -> None:
        from tracer import output

        poller = select.poll()
        poller.register(self._wake_fd, select.POLLIN)

        def sleep(timeout_ms: int | None) -> None:
            if poller.poll(timeout_ms):
                os.eventfd_read(self._wake_fd)

        while not (self._restored or self.requested or self._finishing):
            sleep(None)  # until one of them writes the eventfd
        deadline = time.monotonic() + STOP_GRACE_S
        while not self._restored:
            if output.writing or output.pipe_writing:  # our reader sets the pace: not stuck
                deadline = time.monotonic() + STOP_GRACE_S
            elif time.monotonic() >= deadline:
                _give_up()
            sleep(200)

    def restore(self) -> None:
        """Last, once everything is detached and closed."""
        self._restored = True
        if self._wake_fd >= 0:
            self._wake()
            self._watchdog.join(timeout=1)  # woken: it ends at once
            if not self._watchdog.is_alive():  # else left open: the thread may still poll it
                os.close(self._wake_fd)
                self._wake_fd = -1
        signal.setitimer(signal.ITIMER_REAL, 0)
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._previous_unraisable
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _give_up() -> None:
    import faulthandler

    err = sys.__stderr__
    try:
        err.write(gave_up_line(STOP_GRACE_S) + "\n")
        err.flush()
        faulthandler.dump_traceback(file=err, all_threads=True)
    finally:
        os._exit(1)
