"""When the ring-buffer drain thread reads (BackgroundDrain): `record` waits
a whole pass between reads, but a burst that fills a quarter of the ring
meanwhile is read within a step of it, not at the end of the pass. No
kernel: a fake ring whose pending bytes grow on a schedule."""

import threading
import time

import numpy as np

from tests.unit.ring_fakes import ReadsInto
from tracer.drain import MAX_PAUSE_STEP_S, PAUSE_STEP_S, BackgroundDrain


class FillingRing(ReadsInto):
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
        self.walked = n * self.record_size
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
    # read at the first look after the ring filled: a ring quiet since the
    # first read is looked at every MAX_PAUSE_STEP_S (plus slack for a loaded
    # machine), not only when batch_s has passed
    assert 0 <= lag < MAX_PAUSE_STEP_S + 0.15, ring.read_at


def test_without_a_burst_the_thread_waits_the_whole_pass_and_stops_promptly():
    ring = FillingRing(fill_after=1e9)  # never fills
    d = BackgroundDrain(ring, batch_s=0.4)
    time.sleep(0.3)
    assert len(ring.read_at) == 1  # the first small read only: no read until the pass ends
    t = time.monotonic()
    d.stop()
    assert time.monotonic() - t < 0.5 and not d.thread.is_alive()


class SteadyRing(ReadsInto):
    """Records arriving at a steady pace (bytes/s); counts how often the
    drain thread looks at the ring (pending_bytes) between reads: looks
    within a millisecond of the last are one wake-up of the thread."""

    record_size, sample = 10, np.dtype([("x", "u8"), ("y", "u2")])

    def __init__(self, rate: float, size: int = 1 << 20):
        self.rate, self.size = rate, size
        self.read_until = time.monotonic()
        self.looks = 0
        self.looked_at = 0.0
        self.reads = 0

    def _pending(self) -> int:
        return int((time.monotonic() - self.read_until) * self.rate) // self.record_size * self.record_size

    def pending_bytes(self) -> int:
        now = time.monotonic()
        if now - self.looked_at > 0.001:
            self.looks += 1
        self.looked_at = now
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
        self.walked = n * self.record_size
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


class QuietRing(ReadsInto):
    """No records but what ``add`` puts there; a wait that finds the ring
    empty sleeps its whole timeout (journey records come without a kernel
    wake-up). Records when each look (pending_bytes), read and wait was."""

    record_size, size, sample = 10, 1 << 20, np.dtype([("x", "u8"), ("y", "u2")])

    def __init__(self):
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.pending = 0
        self.looks: list[float] = []
        self.reads: list[tuple[float, int]] = []  # (when, bytes)
        self.waits: list[float] = []  # when each wait on an empty ring began

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.pending += nbytes

    def pending_bytes(self) -> int:
        self.looks.append(time.monotonic() - self.t0)
        return self.pending

    def wait(self, timeout):
        if self.pending >= self.record_size:
            return True
        self.waits.append(time.monotonic() - self.t0)
        time.sleep(timeout)
        return self.pending >= self.record_size

    def read_records(self, release=False):
        with self.lock:
            n, self.pending = self.pending // self.record_size, 0
        if n:
            self.reads.append((time.monotonic() - self.t0, n * self.record_size))
        self.walked = n * self.record_size
        return np.zeros(n, self.sample)

    def release(self, records):
        return records


def test_sweeps_keep_their_own_clock_when_each_emits_a_record():
    """`trace`'s drain (reads 25 ms apart, sweeps every 50 ms): each sweep
    emits a record, read at once, then the pause and the wait on the empty
    ring must both end when the next sweep is due. Before, the wait slept
    its whole 50 ms after the 25 ms pause: a sweep every ~75 ms, and the
    hold's 150 ms budget (drain.py) 25 ms shorter than its comment said."""
    ring = QuietRing()
    ticks: list[float] = []

    def sweep():
        ticks.append(time.monotonic() - ring.t0)
        ring.add(ring.record_size)  # a quiet journey the sweep emitted

    d = BackgroundDrain(ring, poll_s=0.05, batch_s=0.025, tick=sweep, tick_s=0.05)
    try:
        time.sleep(1.2)
    finally:
        d.stop()
    gaps = np.diff(ticks)
    assert len(gaps) >= 10, ticks
    assert np.median(gaps) < 0.05 + 0.015, gaps  # was >= 0.075 (a 25 ms pause, then a 50 ms wait), whatever the load
    # each sweep's record is read right after it, not a pause later
    lags = [min(t for t, _ in ring.reads if t >= tick) - tick for tick in ticks[:-1]]
    assert np.median(lags) < 0.01, lags


def test_a_burst_after_a_quiet_spell_is_looked_at_again_within_the_shortest_step():
    """`record` (a pass of 0.5 s here, no sweep): the ring is quiet for half
    a second after a first small read, then a burst comes. Its first read
    brings more than an eighth of a quarter of the ring; the next look must
    come one PAUSE_STEP_S later, not MAX_PAUSE_STEP_S (the burst's pace was
    taken over the whole quiet spell: a fourth of the slowest look rate)."""
    ring = QuietRing()
    ring.add(ring.record_size)
    d = BackgroundDrain(ring, batch_s=0.5)
    try:
        time.sleep(0.6)  # first read, then quiet: looked at MAX_PAUSE_STEP_S apart
        burst_at = time.monotonic() - ring.t0
        ring.add(ring.size // 16)  # 64 KiB at once (a sixteenth of the ring)
        deadline = time.monotonic() + 2
        while not any(t >= burst_at for t, _ in ring.reads) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        d.stop()
    read_at = min(t for t, _ in ring.reads if t >= burst_at)
    # read within one idle step of the burst (plenty of slack for a loaded machine)
    assert read_at - burst_at < MAX_PAUSE_STEP_S + 0.1, (burst_at, ring.reads)
    next_look = min(t for t in ring.looks if t > read_at)
    assert next_look - read_at < PAUSE_STEP_S + 0.025, (read_at, next_look)  # was MAX_PAUSE_STEP_S



class SmallRecordsRing(ReadsInto):
    """Always records pending, a fifth of the ring each read: journey records
    smaller than the largest (record_size), so a fifth in bytes is more
    than a quarter counted as records x record_size."""

    record_size, size, sample = 448, 1 << 20, np.dtype([("x", "u8")])
    per_record = 256
    n = (1 << 20) // 5 // 256

    def __init__(self):
        self.reads = 0
        self.walked = 0

    def pending_bytes(self) -> int:
        return self.n * self.per_record

    def wait(self, timeout):
        return True

    def read_records(self, release=False):
        self.reads += 1
        self.walked = self.n * self.per_record
        return np.zeros(self.n, self.sample)

    def release(self, records):
        return records


def test_pacing_counts_the_bytes_read_not_records_at_the_largest_size():
    # a read that took a fifth of the ring is followed by the pause (until
    # batch_s, or the ring a quarter full), not by another read at once
    ring = SmallRecordsRing()
    d = BackgroundDrain(ring, batch_s=1.0)
    try:
        time.sleep(0.4)
    finally:
        d.stop()
    assert ring.reads <= 2, ring.reads
