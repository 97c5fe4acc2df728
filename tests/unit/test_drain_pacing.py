"""When the ring-buffer drain thread reads (BackgroundDrain): `record` waits
a whole pass between reads, but a burst that fills a quarter of the ring
meanwhile is read within a step of it, not at the end of the pass. No
kernel: a fake ring whose pending bytes grow on a schedule."""

import threading
import time

import numpy as np

from tracer.drain import PAUSE_STEP_S, BackgroundDrain


class FillingRing:
    """One small read at once; then, `fill_after` seconds later, a quarter of
    the ring pending. Records when each non-empty read happened."""

    record_size, size, sample = 10, 1000, np.dtype([("x", "u8"), ("y", "u2")])

    def __init__(self, fill_after: float):
        self.t0 = time.monotonic()
        self.fill_after = fill_after
        self.small_read = False
        self.big_read = False
        self.read_at: list[float] = []
        self.lock = threading.Lock()

    def pending_bytes(self) -> int:
        with self.lock:
            if not self.small_read:
                return self.record_size
            if not self.big_read and time.monotonic() - self.t0 >= self.fill_after:
                return self.size // 4
            return 0

    def wait(self, timeout):
        if self.pending_bytes() >= self.record_size:
            return True
        time.sleep(timeout)
        return self.pending_bytes() >= self.record_size

    def read_records(self, release=False):
        n = self.pending_bytes() // self.record_size
        with self.lock:
            if n:
                self.read_at.append(time.monotonic() - self.t0)
                if self.small_read:
                    self.big_read = True
                self.small_read = True
        return np.zeros(n, self.sample)

    def release(self, records):
        return records


def test_a_ring_a_quarter_full_during_the_pause_is_read_within_a_step():
    ring = FillingRing(fill_after=0.2)
    d = BackgroundDrain(ring, batch_s=3.0)  # a pass far longer than the test waits
    try:
        got, deadline = 0, time.monotonic() + 2.0
        while got < 26 and time.monotonic() < deadline:
            got += len(d.take(0.05))
    finally:
        d.stop()
    assert got == 1 + 25, ring.read_at
    lag = ring.read_at[1] - 0.2
    # read one step after the ring filled (plenty of slack for a loaded machine), not after batch_s
    assert 0 <= lag < PAUSE_STEP_S + 0.3, ring.read_at


def test_without_a_burst_the_thread_waits_the_whole_pass_and_stops_promptly():
    ring = FillingRing(fill_after=1e9)  # never fills
    d = BackgroundDrain(ring, batch_s=0.4)
    time.sleep(0.3)
    assert len(ring.read_at) == 1  # the first small read only: no read until the pass ends
    t = time.monotonic()
    d.stop()
    assert time.monotonic() - t < 0.5 and not d.thread.is_alive()
