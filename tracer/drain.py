"""Drain the BPF ring buffer straight from its mmap, in batches.

BCC's per-record Python callback tops out around half a million events a
second here. The ring buffer is a pair of shared mappings (consumer page,
producer page + data area mapped twice so records never wrap); a run of
records is walked header by header in one call (tracer._native
ring_records, or its twin _copy_records) and copied out as one numpy
structured array.

Layout (kernel/bpf/ringbuf.c): each record starts with an 8-byte header,
``u32 len`` (bit 31 = BUSY, not yet committed; bit 30 = DISCARD) and
``u32 pg_off``, followed by the sample, padded to 8 bytes.

The sample is one numpy dtype per drain: ``struct journey`` in trace and
record mode (one record per packet), ``struct event`` for the per-sighting
build and the drain benchmark. A journey record is as long as the hops it
uses (events.JOURNEY_HEADER + 12 bytes a hop: bpf/journey.h journey_emit);
each is copied into a row of the whole struct, its tail zeroed.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import threading
import time
import logging

import numpy as np

from tracer import events, record_words
from tracer.native import native

log = logging.getLogger(__name__)

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE
# Parts of packets first seen before arm() arrive within milliseconds of it
# (a journey the kernel does not end goes out with the next sweeps): once
# this long has passed since arm() when records are released (whatever
# their own times), they are no longer checked for them (~0.7 ms a release).
EARLY_WINDOW_NS = 10_000_000_000
# Between two reads the drain thread looks at the ring (BackgroundDrain._pause,
# and its wait on an empty ring where reads are a pass apart) every
# PAUSE_STEP_S to MAX_PAUSE_STEP_S, to read early when a burst has filled a
# quarter of it: an eighth of the time a quarter takes to fill at the pace
# records came in since the ring was last seen empty. PAUSE_STEP_S is the
# shortest step, for a ring that fills fast (and after a read that brought
# an eighth of a quarter: its records may all have come in just before it);
# MAX_PAUSE_STEP_S the longest, however quiet the ring was (each look is a
# wake-up of the thread, ~40 µs of CPU; `record` at the lab's ~25k
# journeys/s fills a quarter in ~0.7 s: looked at every ~90 ms). A burst
# from nothing is read at most one longest step after it began, and looked
# at again one shortest step later. Only where reads are longer apart than
# PAUSE_STEP_S (`record`, a pass apart): `trace` reads every 25 ms anyway.
PAUSE_STEP_S = 0.025
MAX_PAUSE_STEP_S = 0.1
# The fewest rows BackgroundDrain makes room for at a time (its array of
# the reads between two takes).
MIN_PENDING_ROWS = 1024



def _copy_records(ring, start: int, avail: int, out: np.ndarray, row: int, max_rows: int) -> tuple[int, int, int]:
    """tracer._native ring_records' twin (the reference; its doc says what
    it does): each committed record from byte ``start`` of ``ring`` into the
    next ``row`` bytes of ``out`` (uint8), tail zeroed, discarded ones
    skipped; (rows, bytes walked, length of a record too long for a row or 0).
    Memoryview slices: each copy is one memcpy (~1 µs a record in all)."""
    zeros = bytes(row)
    off = n = bad = 0
    # Released on the way out: an mmap with a view still exported cannot close.
    with memoryview(ring) as whole, whole.cast("B") as src, memoryview(out) as flat, flat.cast("B") as dst:
        while off + HEADER_SIZE <= avail and n < max_rows:
            hdr = struct.unpack_from("<I", src, start + off)[0]
            if hdr & BUSY_BIT:
                break
            length = hdr & ~(BUSY_BIT | DISCARD_BIT)
            total = (length + HEADER_SIZE + 7) & ~7
            if length > row or off + total > avail:
                bad = length or 1
                break
            if not hdr & DISCARD_BIT:
                at, begin = n * row, start + off + HEADER_SIZE
                dst[at:at + length] = src[begin:begin + length]
                dst[at + length:at + row] = zeros[length:]
                n += 1
            off += total
    return n, off, bad


def record_dtype(sample: np.dtype) -> np.dtype:
    """Header + sample; the sample's size is a multiple of 8."""
    dtype = np.dtype([("len", "<u4"), ("pg_off", "<u4"), ("event", sample)])
    assert dtype.itemsize % 8 == 0
    return dtype


class RingBufferDrain:
    """Consumer of one BPF ring buffer whose records all have one dtype
    (``sample``: events.RAW_DTYPE or events.JOURNEY_DTYPE)."""

    def __init__(self, map_fd: int, size: int, max_batch: int = 65536, sample: np.dtype = events.RAW_DTYPE,
                 addresses=None) -> None:
        if size & (size - 1) or size % PAGE_SIZE:
            raise ValueError("ring buffer size must be a power-of-two number of pages")
        self.size = size
        self.mask = size - 1
        self.max_batch = max_batch
        self.sample = sample
        # Kernel addresses in the records (flow_id, skb) become keyed ids
        # here, where records leave the kernel, so no consumer sees one
        # (tracer/opaque_ids.py). None: raw (benchmarks, tests of the ring).
        self.addresses = addresses
        # Packets first seen before every sensor was attached miss hops:
        # their records are left out (and counted) once arm() was called.
        self.armed_ktime = 0
        self.before_start = 0  # packets left out
        self._early = None  # tracer.hold.RecentIds of the packets left out, once there are any
        self.record_size = record_dtype(sample).itemsize  # the largest record, header included
        # Bytes the last read took from the ring (journey records are 256-448
        # bytes each, header included): what the background drain paces by.
        self.walked = 0
        # The smallest: what a read may find at most of them in its bytes.
        self.smallest_record = -(-(HEADER_SIZE + events.smallest_sample(sample)) // 8) * 8
        module = native()
        self._copy = module.ring_records if module is not None else _copy_records
        self.consumer = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # The consumer position must change in one aligned 8-byte store:
        # struct.pack_into zeroes the bytes before writing them, and a
        # producer reading 0 in between sees a full ring and drops its event.
        self._consumer_word = np.frombuffer(self.consumer, dtype="<u8", count=1)
        # Producer page followed by the data area, mapped twice by the kernel.
        self.producer = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE_SIZE)
        self.poller = select.epoll()
        self.poller.register(map_fd, select.EPOLLIN)

    def _consumer_pos(self) -> int:
        return int(self._consumer_word[0])

    def _producer_pos(self) -> int:
        return struct.unpack_from("<Q", self.producer, 0)[0]

    def pending_bytes(self) -> int:
        return self._producer_pos() - self._consumer_pos()

    def read(self) -> np.ndarray:
        """All committed records available now (up to max_batch), released
        (release()), as one contiguous sample-dtype array: batches of these
        concatenate as plain bytes, and every later read of their fields
        and words is a plain one (a field view of the ring's records,
        header and all, would not be contiguous: numpy then copies it field
        by field, ~0.5 µs a journey record)."""
        n = self.readable()
        self.walked = 0
        if n <= 0:
            return np.zeros(0, self.sample)
        # Rows for as many records as the bytes could hold (np.empty: the
        # pages of rows not written are never touched).
        out = np.empty(n, self.sample)
        return self.release(out[:self.read_into(out, 0)])

    def readable(self) -> int:
        """At most how many records a read now could find: what the bytes
        pending would hold in the smallest records, up to max_batch."""
        return min(min(self.pending_bytes(), self.size) // self.smallest_record, self.max_batch)

    def read_into(self, out: np.ndarray, at: int) -> int:
        """The committed records now in the ring into rows ``at``... of
        ``out`` (sample dtype, contiguous), as many as fit, as the kernel
        wrote them (release() them later); how many rows were written.
        ``walked``: the bytes they took in the ring."""
        cons = self._consumer_pos()
        avail = min(self._producer_pos() - cons, self.size)
        room = len(out) - at
        self.walked = 0
        if avail <= 0 or room <= 0:
            return 0
        row = self.sample.itemsize
        rows, walked, bad = self._copy(self.producer, PAGE_SIZE + (cons & self.mask), avail,
                                       out.view(np.uint8)[at * row:], row, room)
        if bad:
            raise RuntimeError(f"ring buffer holds a record of {bad} bytes, more than the {row} "
                               "expected: is another program writing to it?")
        self._consumer_word[0] = cons + walked
        self.walked = walked
        return rows

    def release(self, records: np.ndarray) -> np.ndarray:
        """Records as they may leave the drain (the sample dtype, in the
        order read): packets first seen before arm() left out, kernel
        addresses replaced by ids. Early packets are looked for during
        EARLY_WINDOW_NS counted from arm() to when records are released, not
        to the records' own times: a later part of a packet left out as
        "before start" that is released after those 10 s stays in, and shows
        as a one-hop incomplete journey. Its cost is mostly per call (a few dozen
        numpy kernels, ~0.3 ms), so the background drain releases what it
        queued once per take, not per ring-buffer read every few ms."""
        if self.armed_ktime and len(records):
            if time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.armed_ktime > EARLY_WINDOW_NS:
                self.armed_ktime = 0  # no part of a packet seen before arm() can still come
            else:
                records = self._without_early(records)
        if self.addresses is not None and len(records):
            self.addresses.hide(records)
        return records

    def arm(self, ktime_ns: int) -> None:
        """Every sensor is attached since ``ktime_ns`` (CLOCK_MONOTONIC, the
        kernel's bpf_ktime_get_ns): records of packets first seen before it
        are left out from now on, with any later part of the same packet."""
        self.armed_ktime = ktime_ns

    def _without_early(self, records: np.ndarray) -> np.ndarray:
        first = records["first_ktime"] if "first_ktime" in records.dtype.names else records["ktime_ns"]
        early = first < self.armed_ktime
        if early.any():  # packets first seen before arming: remembered first, each counted once
            from tracer.hold import RecentIds

            if self._early is None:
                self._early = RecentIds(1 << 20)
            ids = np.unique(records["packet_id"][early])
            new = ids[~self._early.seen(ids)]
            self.before_start += len(new)
            self._early.add(new)
        if self._early is None:
            return records
        # Every part of those packets, their first or a later one (a drop
        # after delivery), read in this batch or before; ids above their
        # CPU's highest early one skip the set lookup.
        left_out = self._early.seen(records["packet_id"])
        return record_words.take(records, ~left_out) if left_out.any() else records

    def wait(self, timeout: float) -> bool:
        """Block until the kernel signals data (or timeout); True if data may be there."""
        if self.pending_bytes() > 0:
            return True
        return bool(self.poller.poll(timeout))

    def close(self) -> None:
        self.poller.close()
        del self._consumer_word  # the view must go before its mapping
        self.consumer.close()
        self.producer.close()


class BackgroundDrain:
    """Empties the ring buffer on its own thread, so a consumer that is busy
    decoding or printing never lets the kernel's buffer fill up: the kernel
    drops what does not fit, while this queue only costs memory."""

    def __init__(self, drain: RingBufferDrain, poll_s: float = 0.05, max_queued_bytes: int = 100_000_000,
                 batch_s: float = 0.025, tick=None, tick_s: float = 0.05) -> None:
        self.drain = drain
        self.poll_s = poll_s
        self.batch_s = batch_s
        # Called on this thread every tick_s (the journey sweep): kernel work
        # that must go on while the consumer is busy.
        self.tick = tick
        self.tick_s = tick_s
        self._last_tick = 0.0
        # When the ring was last seen empty (read, or looked at with nothing
        # in it): the next read's records came in since then, at most one
        # step of the waits ago, so a burst after a quiet spell is measured
        # as the burst it is, not spread over the quiet spell.
        self._empty_at = time.monotonic()
        self._rate = 0.0  # bytes/s the ring filled at lately (0: not known yet)
        # Memory stays bounded: past this many queued records we stop reading,
        # the ring fills, and the kernel counts what it drops as lost records.
        self.max_queued = max(1, max_queued_bytes // drain.record_size)
        self.queued = 0  # rows in _pending
        # Every read since the last take() goes into one array, each after
        # the last (_pending, its first `queued` rows), handed over whole by
        # take(): the consumer gets one batch a pass without copying the
        # reads' records together (a copy of records the other CPU wrote:
        # 0.15-0.2 µs a journey live). A read is done holding the lock, so
        # take() never hands over rows still being written.
        self._pending: np.ndarray | None = None
        self._taken = 0  # rows the last take() handed over: the next array's size
        self.lock = threading.Lock()
        # A Condition, not SimpleQueue: CPython 3.11's SimpleQueue.get(timeout)
        # waits forever when a signal interrupts it at its deadline (the
        # remaining time comes out negative, which its lock reads as "no
        # timeout"), and the main thread waits here when Ctrl-C comes:
        # a stop that never ended. A Condition waits through threading's
        # locks, which treat that case as a timeout.
        self._records_in = threading.Condition(self.lock)
        self.stopping = threading.Event()
        # The pause sleeps in epoll on an eventfd that stop() signals: a
        # C-level wait (~35 µs of CPU a wake-up here) where Event.wait with
        # a timeout runs threading's Condition in Python (~70 µs), and the
        # pause wakes up to 10 times a pass.
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._sleeper = select.epoll()
        self._sleeper.register(self._stop_fd, select.EPOLLIN)
        self.thread = threading.Thread(target=self._run, name="ringbuf-drain", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            if self.tick is not None and time.monotonic() - self._last_tick >= self.tick_s:
                self._last_tick = time.monotonic()
                try:
                    self.tick()
                except Exception as exc:  # keep draining; the sweep is retried next tick
                    log.warning("journey sweep failed: %s", exc)
            if self.queued >= self.max_queued:
                self._sleep(self.poll_s)
                continue
            looked = time.monotonic()
            if self.drain.pending_bytes() <= 0:
                self._empty_at = looked
                # An empty ring: journey records are emitted without a
                # wake-up (bpf/journey.h), so this wait is a sleep; where
                # reads are a pass apart (`record`) it is paced as the pause
                # is, not 20 times a second (each wake-up of the thread costs
                # ~0.1 ms here). It ends when the next sweep is due, so the
                # sweep keeps its own clock.
                wait = self._step(self.drain.size // 4) if self.batch_s > self.poll_s else self.poll_s
                if not self.drain.wait(min(wait, self._until_tick(looked))):
                    continue
            self._read()
            now = time.monotonic()
            nbytes = self.drain.walked  # not rows * the largest record: sizes vary
            # The pace records came in (bytes/s), for _pause: since the ring
            # was last seen empty, not since the last read, which may be a
            # quiet spell ago.
            self._rate = nbytes / max(now - self._empty_at, 1e-3)
            self._empty_at = now
            # Let records accumulate: a read costs ~0.15 ms of this thread's
            # CPU whatever it brings (the loop's Python and numpy calls, not
            # the copy), so one every 25 ms costs a fifth of one every 5 ms
            # (`trace`: ~0.65 -> ~0.3 us a packet), and the ring holds ~75k
            # journeys. Not longer: a record the sweep emits must be queued
            # before `trace`'s hold finds its packet quiet for IDLE_NS
            # (150 ms), or a packet's later part would come after the packet
            # was shown: 20 ms quiet + up to tick_s (50 ms) to the next sweep
            # (every wait and pause ends when it is due) + its records, read
            # at once after it (they are pending when it returns) leaves
            # ~80 ms to spare. The pace of passes (150 ms once packets are
            # shown) does not count: a pass takes what was queued before it
            # asks the hold what is complete (feeds.SHOW_EVERY_S). A read
            # that found the ring a quarter full is followed by another at
            # once, whatever batch_s says (`record` reads once a pass), and
            # a pause ends early when the ring fills to a quarter, so a burst
            # fills it no faster than it is read.
            if nbytes < self.drain.size // 4:
                self._pause(first_step=PAUSE_STEP_S if nbytes >= self.drain.size // 32 else None)

    def _until_tick(self, now: float) -> float:
        """Seconds until the next sweep is due (no bound without a sweep)."""
        if self.tick is None:
            return float("inf")
        return max(0.0, self._last_tick + self.tick_s - now)

    def _pause(self, first_step: float | None = None) -> None:
        """Wait batch_s before the next read, or until the next sweep is due
        if that comes first, but look at the ring every step (_step) and
        read at once when it is a quarter full: with `record`'s 250 ms reads
        a burst above ~300k journeys/s would otherwise overflow the ring
        between two reads (pending_bytes() is two loads from the mapping).
        ``first_step``: the first look's, if shorter than _step's."""
        start = time.monotonic()
        end = start + min(self.batch_s, self._until_tick(start))
        quarter = self.drain.size // 4
        step = self._step(quarter)
        if first_step is not None:
            step = min(step, first_step)
        while not self._sleep(min(step, max(end - time.monotonic(), 0.0))):
            pending = self.drain.pending_bytes()
            now = time.monotonic()
            if now >= end or pending >= quarter:
                return
            if pending <= 0:
                self._empty_at = now
            self._rate = pending / max(now - start, 1e-3)  # the pace since the read
            step = self._step(quarter)

    def _sleep(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s or until stop(); True once stopping."""
        if not self.stopping.is_set():
            self._sleeper.poll(timeout)
        return self.stopping.is_set()

    def _step(self, quarter: int) -> float:
        """How long to wait before looking at the ring again: an eighth of
        the time a quarter takes to fill at the pace records came in lately
        (_rate), within [PAUSE_STEP_S, MAX_PAUSE_STEP_S] and never past
        batch_s: a quiet ring is not looked at 40 times a second, and one
        that fills faster than expected is looked at sooner from its next
        look on. For `trace` (batch_s = PAUSE_STEP_S) it is always batch_s."""
        if self._rate <= 0:
            return min(MAX_PAUSE_STEP_S, self.batch_s)
        return min(MAX_PAUSE_STEP_S, self.batch_s, max(PAUSE_STEP_S, quarter / self._rate / 8))

    def _read(self) -> None:
        """One read of the ring into _pending, after its rows so far
        (released in take())."""
        with self.lock:
            self._make_room(self.drain.readable())
            rows = self.drain.read_into(self._pending, self.queued)
            if rows:
                self.queued += rows
                self._records_in.notify()

    def _make_room(self, wanted: int) -> None:
        """_pending with room for ``wanted`` more rows: a new array (np.empty:
        rows never written are pages never touched) sized for twice what the
        last take() handed over, so a pass's reads seldom outgrow it; one
        outgrown is copied into one twice its size."""
        have = 0 if self._pending is None else len(self._pending)
        if have - self.queued >= wanted:
            return
        grown = np.empty(max(self.queued + wanted, 2 * have, 2 * self._taken, MIN_PENDING_ROWS), self.drain.sample)
        if self.queued:
            grown[:self.queued] = self._pending[:self.queued]
        self._pending = grown

    def take(self, timeout: float) -> np.ndarray:
        """Everything drained so far, waiting up to `timeout` for a first
        record: the rows of one array, released (RingBufferDrain.release)."""
        with self.lock:
            if not self.queued and timeout > 0:
                self._records_in.wait(timeout)
            if not self.queued:
                return np.zeros(0, self.drain.sample)
            records, self._taken = self._pending[:self.queued], self.queued
            self._pending, self.queued = None, 0
        return self.drain.release(records)

    def stop(self) -> None:
        self.stopping.set()
        if self._stop_fd >= 0:  # not closed by an earlier stop
            os.eventfd_write(self._stop_fd, 1)
        self.thread.join(timeout=2)
        if not self.thread.is_alive() and self._stop_fd >= 0:
            self._sleeper.close()
            os.close(self._stop_fd)
            self._stop_fd = -1

    def finish(self) -> np.ndarray:
        """Stop the thread and return everything left, queued or in the ring."""
        self.stop()
        rest = [self.take(0)]
        while len(batch := self.drain.read()):
            rest.append(batch)
        return record_words.concat(rest)
