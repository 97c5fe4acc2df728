"""Link events of the host netns (rtnetlink's RTMGRP_LINK): interfaces
created, deleted, renamed, brought up or down. A thread listens and calls
back, at most once per ``settle_s`` however many events came in a burst
(`ip link add` alone sends several), so the caller re-reads the links once.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from typing import Callable

from tracer.kernel import rtnl
from tracer.kernel.rtnl import NETLINK_ROUTE, RTM_DELLINK, RTM_NEWLINK

log = logging.getLogger(__name__)

RTMGRP_LINK = 1
# How long the thread waits for an event before looking again (close()
# wakes it at once: a stop does not wait for this).
IDLE_WAIT_S = 0.5
# How long close() waits for the thread (its callback may be re-reading links).
JOIN_S = 2.0


def link_message_types(data: bytes) -> list[int]:
    """The nlmsg types in one datagram (several messages may share it)."""
    return [kind for kind, *_ in rtnl.messages(data)]


class LinkEvents:
    """Calls ``on_change()`` on its own thread after links change."""

    def __init__(self, on_change: Callable[[], None], settle_s: float = 0.2) -> None:
        self.on_change = on_change
        self.settle_s = settle_s
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, RTMGRP_LINK))
        self._stop = threading.Event()
        self._lock = threading.Lock()  # _closed, _exited and the fds' release
        self._closed = False  # close() was called
        self._exited = False  # the thread has ended
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)  # close() writes: the wait ends
        self.thread = threading.Thread(target=self._run, name="tracer-link-events", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._listen()
        finally:
            with self._lock:
                self._exited = True
                if self._closed:  # close() gave up waiting for this thread
                    self._release()

    def _listen(self) -> None:
        pending_since: float | None = None
        while not self._stop.is_set():
            timeout = IDLE_WAIT_S if pending_since is None else max(0.0, pending_since + self.settle_s - time.monotonic())
            ready, _, _ = select.select([self.sock, self._wake_r], [], [], timeout)
            if self._stop.is_set():
                break
            if self.sock in ready:
                try:
                    data = self.sock.recv(1 << 16)
                except OSError as exc:  # ENOBUFS: events were lost; a re-read catches up
                    log.debug("link events: %s", exc)
                    data = rtnl.request(RTM_NEWLINK, 0, 0, b"")
                if any(t in (RTM_NEWLINK, RTM_DELLINK) for t in link_message_types(data)) and pending_since is None:
                    pending_since = time.monotonic()
            if pending_since is not None and time.monotonic() - pending_since >= self.settle_s:
                pending_since = None
                try:
                    self.on_change()
                except Exception as exc:  # keep listening; the next change retries
                    log.warning("following host interfaces: %s", exc)

    def close(self) -> None:
        """Stop the thread and close the socket and the wake pipe; safe to
        call again (a teardown retried after an interrupt): each fd number
        is given up as it is closed, never written to or closed again once
        it may be another file's. A thread that has not ended within the
        join (its callback still running) closes them itself as it ends:
        never while it may still select on them."""
        if self._closed:
            return
        self._stop.set()
        with self._lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"x")
                except OSError:  # EAGAIN: the pipe already holds a wake
                    pass
        self.thread.join(timeout=JOIN_S)
        with self._lock:
            if self._exited:
                self._release()
            self._closed = True  # else the thread releases them as it ends (_run)

    def _release(self) -> None:
        """Close what this object owns, once (under _lock)."""
        self.sock.close()  # a socket object closes its fd once
        for name in ("_wake_r", "_wake_w"):
            fd = getattr(self, name)
            setattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
