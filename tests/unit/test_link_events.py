"""tracer/kernel/link_events.py: close() wakes the listening thread, so a
stop never waits out the thread's idle wait (it was up to 0.5 s of every
stop), and the netlink message parsing."""

from __future__ import annotations

import os
import struct
import threading
import time

from tracer.kernel import link_events


def test_close_wakes_the_thread_instead_of_waiting(monkeypatch):
    monkeypatch.setattr(link_events, "IDLE_WAIT_S", 3600.0)  # only the wake can end the wait now
    events = link_events.LinkEvents(lambda: None)
    time.sleep(0.1)  # in its select
    events.close()  # joins for at most 2 s
    assert not events.thread.is_alive(), "close() left the thread waiting for an event"


def test_message_types_of_one_datagram():
    hdr = struct.Struct("=IHHII")
    data = hdr.pack(20, link_events.RTM_NEWLINK, 0, 0, 0) + b"\0" * 4 + hdr.pack(16, link_events.RTM_DELLINK, 0, 0, 0)
    assert link_events.link_message_types(data) == [link_events.RTM_NEWLINK, link_events.RTM_DELLINK]
    assert link_events.link_message_types(hdr.pack(4, 16, 0, 0, 0)) == []  # a length shorter than a header: stop


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_close_twice_leaves_fds_that_reused_the_numbers_alone():
    events = link_events.LinkEvents(lambda: None)
    numbers = {events._wake_r, events._wake_w}
    events.close()
    r, w = os.pipe()  # the lowest free numbers: most likely the wake pipe's
    try:
        events.close()  # was: wrote "x" to and closed whatever held the old numbers
        assert _is_open(r) and _is_open(w), (numbers, r, w)
        os.set_blocking(r, False)
        try:
            got = os.read(r, 1)
        except BlockingIOError:
            got = b""
        assert got == b"", "close() again wrote into a pipe it does not own"
    finally:
        os.close(r)
        os.close(w)


class _StuckThread(link_events.LinkEvents):
    """A thread whose callback outlives close()'s join."""

    def __init__(self, *args) -> None:
        self.gate = threading.Event()
        super().__init__(*args)

    def _listen(self) -> None:
        self.gate.wait(10)


def test_a_thread_still_running_after_close_keeps_its_pipe_until_it_ends(monkeypatch):
    monkeypatch.setattr(link_events, "JOIN_S", 0.1)
    events = _StuckThread(lambda: None)
    r, w = events._wake_r, events._wake_w
    try:
        events.close()
        assert events.thread.is_alive()
        # it may still select on them: not closed under it
        assert events._wake_r == r and events._wake_w == w and _is_open(r) and _is_open(w)
        events.close()  # again: nothing written, nothing closed
        assert events._wake_r == r and _is_open(r)
    finally:
        events.gate.set()
    events.thread.join(5)
    assert not events.thread.is_alive()
    assert events._wake_r == events._wake_w == -1 and events.sock.fileno() == -1  # the thread closed them as it ended
    events.close()  # and once more: a no-op


def test_a_wake_that_finds_the_pipe_full_is_not_an_error(monkeypatch):
    monkeypatch.setattr(link_events, "JOIN_S", 0.1)
    events = _StuckThread(lambda: None)
    try:
        while True:  # fill the non-blocking pipe: the next write gets EAGAIN
            try:
                os.write(events._wake_w, b"x" * 65536)
            except BlockingIOError:
                break
        events.close()  # must not raise
    finally:
        events.gate.set()
    events.thread.join(5)
    assert events._wake_r == -1
