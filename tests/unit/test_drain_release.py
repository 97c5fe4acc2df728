"""What leaves the ring-buffer drain (RingBufferDrain.release): packets first
seen before every sensor was attached are left out with every later part,
counted once each; kernel addresses become ids. No kernel needed: release
works on records already copied out of the ring."""

import time

import numpy as np
import pytest

from tracer import events
from tracer.drain import EARLY_WINDOW_NS, RingBufferDrain
from tracer.events import PACKET_ID_CPU_SHIFT
from tracer.opaque_ids import AddressHasher


# Times relative to the test's start on the monotonic clock (the kernel's):
# release() checks for early packets only within EARLY_WINDOW_NS of arming.
NOW = 0


@pytest.fixture(autouse=True)
def _now():
    global NOW
    NOW = time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _drain(armed_ktime: int, addresses=None) -> RingBufferDrain:
    d = object.__new__(RingBufferDrain)  # no ring buffer: release() alone
    d.armed_ktime, d.before_start, d._early, d.addresses = (NOW + armed_ktime if armed_ktime else 0), 0, None, addresses
    return d


def _records(ids, first_ktimes, flow_ids=None) -> np.ndarray:
    r = np.zeros(len(ids), events.JOURNEY_DTYPE)
    r["packet_id"] = ids
    r["first_ktime"] = [NOW + t for t in first_ktimes]
    if flow_ids is not None:
        r["flow_id"] = flow_ids
    return r


def _id(cpu: int, n: int) -> int:
    return (cpu << PACKET_ID_CPU_SHIFT) | n


def test_early_packets_and_their_later_parts_are_left_out_and_counted_once():
    d = _drain(armed_ktime=1000)
    out = d.release(_records([_id(0, 5), _id(1, 7), _id(0, 6), _id(0, 5)], [900, 950, 1100, 990]))
    assert out["packet_id"].tolist() == [_id(0, 6)]
    assert d.before_start == 2
    # Later parts of the packets left out (first seen after arming: a
    # continuation) go too; new packets, on any CPU, stay.
    out = d.release(_records([_id(1, 7), _id(0, 5), _id(1, 8), _id(0, 4), _id(2, 1)], [1200, 1300, 1400, 1500, 1600]))
    assert out["packet_id"].tolist() == [_id(1, 8), _id(0, 4), _id(2, 1)]
    assert d.before_start == 2


def test_a_later_part_read_with_its_early_packet_goes_with_it():
    """A packet first seen before arming and its continuation (a drop after
    delivery: first seen after arming) in one batch: both left out, not the
    drop shown as a journey of its own."""
    d = _drain(armed_ktime=1000)
    out = d.release(_records([_id(0, 5), _id(1, 9), _id(0, 5)], [900, 1100, 1200]))
    assert out["packet_id"].tolist() == [_id(1, 9)]
    assert d.before_start == 1


def test_release_stops_looking_for_early_packets_after_the_window():
    """Long after arming no part of an early packet can come: records are
    no longer checked (a record of an old first_ktime is kept)."""
    d = _drain(armed_ktime=1000)
    d.armed_ktime -= EARLY_WINDOW_NS + 1  # armed longer ago than the window
    out = d.release(_records([_id(0, 5), _id(1, 7)], [-EARLY_WINDOW_NS - 5, 1100]))
    assert out["packet_id"].tolist() == [_id(0, 5), _id(1, 7)]
    assert d.armed_ktime == 0 and d.before_start == 0


def test_release_without_arming_keeps_everything():
    d = _drain(armed_ktime=0)
    out = d.release(_records([1, 2], [5, 6]))
    assert out["packet_id"].tolist() == [1, 2] and d.before_start == 0


def test_release_hides_kernel_addresses():
    d = _drain(armed_ktime=0, addresses=AddressHasher(b"k" * 32))
    addr = 0xFFFF888012345678
    out = d.release(_records([1, 2, 3], [5, 6, 7], flow_ids=[addr, addr, 0]))
    flows = out["flow_id"].tolist()
    assert flows[0] == flows[1] != addr and 0 < flows[0] < 1 << 48 and flows[2] == 0


def test_a_read_that_finds_the_ring_a_quarter_full_is_followed_by_another_at_once():
    """`record` reads the ring once a pass; a burst that fills a quarter of
    it between two reads is read again without waiting the read interval."""
    from tests.unit.ring_fakes import ReadsInto
    from tracer.drain import BackgroundDrain

    class BusyRing(ReadsInto):  # three reads' worth of records queued, each over a quarter of the ring
        record_size, size, sample = 10, 1000, np.dtype([("x", "u8"), ("y", "u2")])

        def __init__(self):
            self.left = [np.zeros(30, self.sample) for _ in range(3)]

        def pending_bytes(self):
            return len(self.left[-1]) * self.record_size if self.left else 0

        def wait(self, timeout):
            return bool(self.left) or time.sleep(timeout)

        def read_records(self, release=False):
            out = self.left.pop() if self.left else np.zeros(0, self.sample)
            self.walked = len(out) * self.record_size
            return out

        def release(self, records):
            return records

    d = BackgroundDrain(BusyRing(), batch_s=30)
    try:
        got, deadline = 0, time.monotonic() + 5
        while got < 90 and time.monotonic() < deadline:
            got += len(d.take(0.1))
    finally:
        d.stopping.set()
    assert got == 90


def test_the_reads_between_two_takes_come_out_as_one_array_in_order():
    """BackgroundDrain writes each read after the last in one array and
    take() hands it over whole (no copy of the reads together); an array the
    reads outgrow is copied into a larger one, records and order kept."""
    import threading

    from tracer.drain import MIN_PENDING_ROWS, BackgroundDrain

    class CountingRing:  # reads of 700 records numbered on, each read only once allowed
        record_size, size, sample = 16, 1 << 20, np.dtype([("x", "u8"), ("y", "u8")])

        def __init__(self):
            self.next, self.reads_left, self.walked = 0, 0, 0
            self.lock = threading.Lock()

        def pending_bytes(self):
            return 700 * self.record_size if self.reads_left else 0

        def wait(self, timeout):
            return bool(self.reads_left) or time.sleep(timeout)

        def readable(self):  # exactly what is pending: the array grows when it is full
            return 700 if self.reads_left else 0

        def read_into(self, out, at):
            with self.lock:
                if not self.reads_left:
                    return 0
                self.reads_left -= 1
                out[at:at + 700]["x"] = np.arange(self.next, self.next + 700)
                self.next += 700
            self.walked = 700 * self.record_size
            return 700

        def release(self, records):
            return records

    ring = CountingRing()
    d = BackgroundDrain(ring, batch_s=0.001)
    try:
        with ring.lock:
            ring.reads_left = 4  # 2,800 records: past MIN_PENDING_ROWS, so the array grows
        deadline = time.monotonic() + 5
        while ring.reads_left and time.monotonic() < deadline:
            time.sleep(0.01)
        got = d.take(0.5)
        assert 4 * 700 > MIN_PENDING_ROWS
        assert list(got["x"]) == list(range(4 * 700)), "every record once, in the order read"
        assert got.base is not None and got.base.shape[0] >= len(got), "rows of one array"
        assert len(d.take(0)) == 0 and d.queued == 0
        with ring.lock:
            ring.reads_left = 1
        assert list(d.take(2.0)["x"]) == list(range(2800, 3500)), "a take waits for the first records"
    finally:
        d.stop()
