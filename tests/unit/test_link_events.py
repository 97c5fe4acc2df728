"""tracer/kernel/link_events.py: close() wakes the listening thread, so a
stop never waits out the thread's idle wait (it was up to 0.5 s of every
stop), and the netlink message parsing."""

from __future__ import annotations

import struct
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
