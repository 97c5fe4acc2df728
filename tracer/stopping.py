"""Stopping a command that runs until told to: SIGINT (Ctrl-C) and SIGTERM.

While setting up (compile, attach), SIGTERM raises KeyboardInterrupt like
SIGINT, so the `finally` blocks detach whatever is attached. Once running, a
signal only sets a flag the loop checks: an exception raised in the middle of
a write would tear a capture's batch or lose output.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Installs the setup-time handlers on creation; `restore()` in a finally."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        signal.signal(signal.SIGTERM, _interrupt)

    def running(self) -> None:
        """From now on a signal asks the loop to stop."""
        for sig in SIGNALS:
            signal.signal(sig, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
