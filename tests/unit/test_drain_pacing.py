"""When the ring-buffer drain thread reads (BackgroundDrain): `record` waits
a whole pass between reads, but a burst that fills a quarter of the ring
meanwhile is read within a step of it, not at the end of the pass. No
kernel: a fake ring whose pending bytes grow on a schedule."""

import threading
import time

import numpy as np

from tracer.drain import MAX_PAUSE_STEP_S, PAUSE_STEP_S, BackgroundDrain


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


class SteadyRing:
    """Records arriving at a steady pace (bytes/s); counts how often the
    drain thread looks at the ring (pending_bytes) between reads."""

    record_size, sample = 10, np.dtype([("x", "u8"), ("y", "u2")])

    def __init__(self, rate: float, size: int = 1 << 20):
        self.rate, self.size = rate, size
        self.read_until = time.monotonic()
        self.looks = 0
        self.reads = 0

    def _pending(self) -> int:
        return int((time.monotonic() - self.read_until) * self.rate) // self.record_size * self.record_size

    def pending_bytes(self) -> int:
        self.looks += 1
        return self._pending()

    def wait(self, timeout):
        if self._pending() >= self.record_size:
            return True
        time.sleep(timeout)
        return self._pending() >= self.record_size

    def read_records(self, release=False):
        n = min(self._pending(), self.size) // self.record_size
        self.read_until = time.monotonic()
        self.reads += 1
        return np.zeros(n, self.sample)

    def release(self, records):
        return records


def _looks_per_pass(rate: float, batch_s: float = 0.5, passes: float = 3) -> float:
    ring = SteadyRing(rate)
    d = BackgroundDrain(ring, batch_s=batch_s)
    try:
        time.sleep(batch_s * passes)
    finally:
        d.stop()
    return ring.looks / max(ring.reads, 1)


def test_a_ring_that_fills_slowly_is_looked_at_a_few_times_a_pass_not_every_step():
    # a quarter of 1 MiB at 100 kB/s takes 2.6 s: looked at every MAX_PAUSE_STEP_S
    # (5 a 0.5 s pass), not every PAUSE_STEP_S (20); slack for a loaded machine
    looks = _looks_per_pass(100_000)
    assert looks <= 0.5 / MAX_PAUSE_STEP_S + 2, looks


def test_a_ring_that_fills_fast_is_still_read_each_time_a_quarter_fills():
    # a quarter in ~0.13 s at 2 MB/s: an eighth of it is below PAUSE_STEP_S, so looked at every step
    ring = SteadyRing(2_000_000)
    d = BackgroundDrain(ring, batch_s=0.5)
    try:
        time.sleep(1.0)
    finally:
        d.stop()
    # a read at least each time a quarter filled (every ~0.13 s), never a whole pass apart
    assert ring.reads >= 4, (ring.reads, ring.looks)


def test_stop_twice_and_finish_after_stop_are_fine():
    """final_records stops the thread, then finish() stops it again."""
    ring = SteadyRing(0)
    d = BackgroundDrain(ring, batch_s=0.25)
    t = time.monotonic()
    d.stop()
    d.stop()
    assert time.monotonic() - t < 0.5 and not d.thread.is_alive()
