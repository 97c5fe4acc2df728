"""Work done on a thread of its own, in order, beside the caller's.

`tracer report` makes two passes' worth of numbers from one read of a
capture: the analysis `stats` prints (tracer/analysis.py) and the path pass
(tracer/paths.py). Each chunk's path work needs only what the analysis has
already read off it, and most of it is numpy and Arrow, which release the
GIL: on a second core it runs beside the analysis of the next chunk instead
of after it. Calls run one at a time in the order given (the path pass
depends on it: its time bins start at the first chunk's first packet), at
most ``depth`` wait (each holds a chunk's arrays: memory stays bounded), and
an error in one is raised in the caller at its next ``submit`` or at
``close``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_STOP = object()


class SideThread:
    """``submit(fn, *args)`` runs ``fn(*args)`` on the thread; ``close()``
    waits for everything submitted (use as a context manager)."""

    def __init__(self, depth: int = 2, name: str = "tracer-side") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._error: BaseException | None = None  # the first error, until raised in the caller
        self._stopped = False  # after an error or a failing caller: queued calls are skipped
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._raise()
        self._queue.put((fn, args))

    def close(self) -> None:
        """Wait for what was submitted; raise its first error, if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._stopped:
                continue  # after an error: drain what is queued, run none of it
            fn, args = item
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._stopped = True
                self._error = e

    def __enter__(self) -> "SideThread":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:  # the caller failed: what is queued is not run, the caller's error stands
            self._stopped = True
            self._queue.put(_STOP)  # room soon: queued calls are skipped, a running one finishes
            self._thread.join()
            self._error = None
