"""The rule reader's bounds (no root): reads in batches, drops the oldest
reports when far behind, and stops in bounded time whatever is waiting.
A Unix datagram socket pair stands in for the netlink socket: the reader
only recv()s datagrams from it."""

from __future__ import annotations

import socket
import struct
import threading
import time

from tests.unit.test_rules import _trace_msg
from tracer import rule_trace
from tracer.kernel import nft_trace
from tracer.render import Summary


def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock = nft_trace.TraceSocket.__new__(nft_trace.TraceSocket)
    sock.sock, sock.overruns, sock.empty = b, 0, False
    return a, sock


def test_read_is_bounded_and_says_when_the_socket_is_empty():
    writer, sock = _pair()
    for i in range(10):
        writer.send(_trace_msg(trace_id=i))
    first = sock.read(time.monotonic_ns, 4)
    assert [e.trace_id for e in first] == [0, 1, 2, 3] and not sock.empty
    rest = sock.read(time.monotonic_ns)
    assert [e.trace_id for e in rest] == list(range(4, 10)) and sock.empty


def test_skip_counts_trace_reports_not_generations():
    writer, sock = _pair()
    newgen = struct.pack("=IHHII", 20, nft_trace.MSG_NEWGEN, 0, 0, 0) + b"\0" * 4
    writer.send(_trace_msg() + newgen + _trace_msg())
    writer.send(_trace_msg())
    assert nft_trace.count_reports(_trace_msg() + newgen) == 1
    assert sock.skip(1) == 3 and sock.empty


def _tracer(sock) -> rule_trace.RuleTracer:
    rt = rule_trace.RuleTracer(match=None)
    rt.sock = sock
    return rt


def test_a_reader_far_behind_drops_the_oldest_and_catches_up():
    writer, sock = _pair()
    for i in range(200):  # a Unix datagram queue holds max_dgram_qlen (512 by default)
        writer.send(_trace_msg(trace_id=i))
    rt = _tracer(sock)
    rt._watermark = time.monotonic_ns() - rule_trace.MAX_LAG_NS - 1  # last found empty long ago
    rt._thread = threading.Thread(target=rt._run, daemon=True)
    rt._thread.start()
    deadline = time.monotonic() + 5
    while rt.dropped < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt.dropped == 200
    with rt._lock:
        assert rt._items == [nft_trace.OVERRUN]  # the resolver forgets the headers it held
        assert time.monotonic_ns() - rt._watermark < rule_trace.MAX_LAG_NS
    writer.send(_trace_msg(trace_id=9999))  # caught up: decoded again
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with rt._lock:
            if any(getattr(e, "trace_id", None) == 9999 for e in rt._items):
                break
        time.sleep(0.01)
    else:
        raise AssertionError("a report after the catch-up was not read")
    rt._stop.set()
    rt._thread.join(2)
    assert not rt._thread.is_alive()


def test_decoded_reports_waiting_are_bounded(monkeypatch):
    monkeypatch.setattr(rule_trace, "MAX_ITEMS", 50)
    writer, sock = _pair()
    for i in range(200):
        writer.send(_trace_msg(trace_id=i))
    rt = _tracer(sock)
    rt._thread = threading.Thread(target=rt._run, daemon=True)
    rt._thread.start()
    deadline = time.monotonic() + 5
    while rt.dropped < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    rt._stop.set()
    rt._thread.join(2)
    assert rt.dropped == 150
    assert rt._items[0] is nft_trace.OVERRUN and [e.trace_id for e in rt._items[1:]] == list(range(150, 200))


def test_stop_is_bounded_while_reports_keep_coming(monkeypatch):
    """Another tracer's marking can keep the socket from ever emptying: the
    stop reads a moment, counts what it throws away, and returns."""
    parse = nft_trace.parse_messages

    def slow_parse(*args):  # decoding slower than the reports come, as on a busy host
        time.sleep(0.002)
        return parse(*args)

    monkeypatch.setattr(nft_trace, "parse_messages", slow_parse)
    writer, sock = _pair()
    writer.setblocking(False)
    going = threading.Event()
    going.set()

    def flood() -> None:
        msg = _trace_msg()
        while going.is_set():
            try:
                writer.send(msg)
            except BlockingIOError:
                time.sleep(0.0005)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    rt = _tracer(sock)
    rt._thread = threading.Thread(target=rt._run, daemon=True)
    rt._thread.start()
    time.sleep(0.3)
    try:
        started = time.monotonic()
        assert rt.stop() == []  # no resolver: no hits, but bounded all the same
        took = time.monotonic() - started
    finally:
        going.clear()
        flooder.join(2)
    assert took < 2.0, took
    assert rt.unread > 0
    stats = rt.stats()
    assert stats["unread"] == rt.unread and "dropped" in stats


def test_summary_says_what_was_dropped_and_left_unread():
    s = Summary()
    s.rules = {"joined": 5, "unmatched": 1, "dropped": 1234, "unread": 56, "unread_more": True}
    text = s.render(False)
    assert "1,234 reports dropped unread" in text and "at least 56 reports left unread at the stop" in text
    s.rules = {"joined": 5, "unmatched": 1, "dropped": 0, "unread": 0}
    assert "unread" not in s.render(False)
