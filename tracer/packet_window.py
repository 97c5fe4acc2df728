"""A capture's sightings grouped into whole packets, over a bounded window.

`show`, `stats`, `report` and `export` read a capture of any size batch by
batch (``capture.reader.open_capture``). What they compute is per packet (a journey,
its hop segments, its verdict), and a packet's rows sit close together in a
capture: the writer lays out each journey record at once, and a part that
comes later (a continuation, a drop after delivery) comes within seconds of
capture time. So rows are held until the capture's clock (the highest
``ktime_ns`` read so far) has moved ``window_ns`` past a packet's last
sighting; then the packet is whole and its rows are handed on. Memory is the
capture's rate times the window, never its size; ``max_held_rows`` caps it
for captures recorded faster than that allows (the oldest packets are handed
on early, and ``forced`` counts the cuts that did so).

Packets leave in order of first sighting (a complete packet waits while an
earlier one is still open), so journeys replayed chunk by chunk come out in
the same order as from the whole table at once.

Files read together may be different recordings (or the same file twice),
whose packet ids are the same numbers for other packets: the reader puts
``NEW_RECORDING`` between two files unless the second is the next part of
the first's recording (``CaptureStream.sightings(boundaries=True)``), and
the window hands on everything it holds there. A change of the rows' wall
clock minus ktime (another boot or session) does the same for rows that
come without it.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Half a second of capture time: a later part of a packet reaches the capture
# within the kernel's 20 ms joining window plus the wait for the next sweep
# that emits it (50 ms; `record` sweeps once a 250 ms pass: up to ~270 ms
# after the packet's other records, which its reads may bring at once) or
# the writer's delay (`trace -w` holds a packet 150 ms, then shows complete
# ones at most every 150 ms: up to ~350 ms). A later part (a drop long after
# delivery) is read as a packet of its own, as `trace` leaves it out.
WINDOW_NS = 500_000_000
# Rows handed on at a time: big enough that per-chunk work is vectorised.
MIN_CHUNK_ROWS = 1 << 17
# At most this many rows held (about 100 B each in Arrow plus 16 B of keys).
MAX_HELD_ROWS = 1 << 22


def journey_window() -> "PacketWindow":
    """The window over journey rows (schema 2): the one every reader of a
    journey-row capture cuts its packets with, whether it reads their hops
    off the list columns or lays them out as sightings (CaptureAnalysis'
    two paths). A cut forced by ``max_held_rows`` hands on a packet whose
    later part is still to come, which then reads as two packets: paths
    cutting at different rows would differ there, so they share the cut.
    About 9 sightings a journey row: twice the sightings a chunk (each cut
    sorts what is held), and about the same held at most."""
    return PacketWindow(min_chunk_rows=MIN_CHUNK_ROWS // 4, max_held_rows=MAX_HELD_ROWS // 8,
                        last_column="last_ktime_ns")


class _NewRecording:
    """The mark between two files that are not parts of one recording."""

    def __repr__(self) -> str:
        return "NEW_RECORDING"


NEW_RECORDING = _NewRecording()


class PacketWindow:
    """Sighting batches in (``add``), tables of whole packets' rows out."""

    def __init__(self, window_ns: int = WINDOW_NS, min_chunk_rows: int | None = None,
                 max_held_rows: int | None = None, last_column: str | None = None) -> None:
        self.window_ns = window_ns
        # Journey rows (schema 2) end at `last_ktime_ns`; a sighting row at its `ktime_ns`.
        self.last_column = last_column
        # (None: the module's sizes, read when the window is made)
        self.min_chunk_rows = MIN_CHUNK_ROWS if min_chunk_rows is None else min_chunk_rows
        self.max_held_rows = MAX_HELD_ROWS if max_held_rows is None else max_held_rows
        self.forced = 0  # cuts that handed packets on early (max_held_rows)
        self.now: int | None = None  # highest ktime_ns read
        self.clock: int | None = None  # the recording's wall clock minus ktime (its rows' time - ktime_ns)
        self._tables: list[pa.Table] = []
        # Per held table, its runs (rows of one packet in a row): packet id,
        # first and last ktime, length. A capture lays each packet's rows
        # out together, so there are about a ninth as many runs as rows, and
        # deciding what is whole works on runs, not rows.
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._held = 0
        self._since_cut = 0
        self._after_cut = 0  # rows held right after the last cut

    def add(self, batch: pa.RecordBatch | pa.Table | _NewRecording) -> Iterator[pa.Table]:
        """Hold ``batch`` (EVENT_SCHEMA columns); yield the rows of packets
        that are now whole, a chunk at a time. ``NEW_RECORDING``: what is
        held is whole (another recording follows)."""
        if batch is NEW_RECORDING:
            yield from self.flush()
            self.now = self.clock = None
            return
        if batch.num_rows == 0:
            return
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        pid = _numpy(table["packet_id"]).astype(np.uint64, copy=False)
        kt = _numpy(table["ktime_ns"]).astype(np.int64, copy=False)
        last = _numpy(table[self.last_column]).astype(np.int64, copy=False) if self.last_column else kt
        top = int(last.max())
        clock = _clock(table)
        if self.now is not None and (top < self.now - self.window_ns
                                     or (clock is not None and self.clock is not None and clock != self.clock)):
            # The clock went back, or the rows' wall clock is another's:
            # another capture (or boot) follows, whose packet ids may be the
            # same numbers. What is held belongs to the one before.
            yield from self.flush()
            self.now = None
        if clock is not None:
            self.clock = clock
        self.now = top if self.now is None else max(self.now, top)
        self._tables.append(table)
        self._runs.append(_runs(pid, kt, last))
        self._held += table.num_rows
        self._since_cut += table.num_rows
        # Cut when a chunk is new (each cut sorts the held runs' keys).
        if self._since_cut >= self.min_chunk_rows or self._held > self.max_held_rows:
            out = self._cut(self.now - self.window_ns)
            if out is not None:
                yield out

    def flush(self) -> Iterator[pa.Table]:
        """Everything still held (at the end of the capture)."""
        if self._held:
            out = self._cut(None)
            if out is not None:
                yield out

    def packets(self, batches: Iterable[pa.RecordBatch | pa.Table | _NewRecording]) -> Iterator[pa.Table]:
        """Every batch (and ``NEW_RECORDING`` mark) through ``add``, then ``flush``."""
        for batch in batches:
            yield from self.add(batch)
        yield from self.flush()

    def _cut(self, cutoff: int | None) -> pa.Table | None:
        self._since_cut = 0
        run_pid = np.concatenate([r[0] for r in self._runs])
        if cutoff is None:
            release = np.ones(len(run_pid), bool)
        else:
            order = np.argsort(run_pid, kind="stable")
            spid = run_pid[order]
            starts = np.flatnonzero(np.r_[True, spid[1:] != spid[:-1]])
            first = np.minimum.reduceat(np.concatenate([r[1] for r in self._runs])[order], starts)
            last = np.maximum.reduceat(np.concatenate([r[2] for r in self._runs])[order], starts)
            if self._held > self.max_held_rows:
                # Too much held: the oldest packets go now, whole or not.
                cutoff = max(cutoff, int(np.median(last)))
                self.forced += 1
            whole = last <= cutoff
            whole |= spid[starts] == 0  # rows without a packet id are no packet's: they go at once
            open_first = first[~whole]
            if len(open_first):
                whole &= first < open_first.min()  # keep first-sighting order
            release = np.empty(len(run_pid), bool)
            release[order] = np.repeat(whole, np.diff(np.append(starts, len(spid))))
        if not release.any():
            self._after_cut = self._held
            return None
        out, tables, runs, at = [], [], [], 0
        for t, r in zip(self._tables, self._runs):
            m = release[at: at + len(r[0])]
            at += len(r[0])
            if m.all():
                out.append(t)
            elif m.any():
                # What goes is mostly a prefix, what stays a suffix, with a
                # few runs mixed around the cut: slices (no copy) and a
                # filter of just the mixed part.
                a, b = int(np.argmin(m)), len(m) - int(np.argmax(m[::-1]))  # first kept run, past the last released
                offsets = np.concatenate(([0], np.cumsum(r[3])))
                ra, rb = int(offsets[a]), int(offsets[b]) if b > a else int(offsets[a])
                mixed = t.slice(ra, rb - ra)
                rows = np.repeat(m[a:b], r[3][a:b]) if b > a else np.zeros(0, bool)
                out.append(pa.concat_tables([t.slice(0, ra), mixed.filter(pa.array(rows))]) if b > a else t.slice(0, ra))
                tables.append(pa.concat_tables([mixed.filter(pa.array(~rows)), t.slice(rb)]) if b > a else t.slice(ra))
                runs.append(tuple(x[~m] for x in r))
            else:
                tables.append(t)
                runs.append(r)
        self._tables, self._runs = tables, runs
        self._held = sum(t.num_rows for t in tables)
        self._after_cut = self._held
        return pa.concat_tables(out) if len(out) > 1 else out[0]


def _runs(pid: np.ndarray, kt: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(packet id, first ktime, last ktime, rows) of each run of equal ids."""
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    return (pid[starts], np.minimum.reduceat(kt, starts), np.maximum.reduceat(last, starts),
            np.diff(np.append(starts, len(pid))))


def _clock(table: pa.Table) -> int | None:
    """The batch's wall clock minus ktime (its first row with both: one
    recording's rows share it, written as ktime + the recording's offset);
    None where it has no such row."""
    if "time" not in table.column_names:
        return None
    time, ktime = table["time"], table["ktime_ns"]
    at = 0 if not time.null_count and not ktime.null_count else pc.index(pc.and_(time.is_valid(), ktime.is_valid()), True).as_py()
    if at < 0:
        return None
    return (time[at].cast(pa.int64()).as_py() - ktime[at].as_py()) & 0xFFFF_FFFF_FFFF_FFFF  # as the 64-bit sum wrapped


def _numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if col.null_count:
        col = pc.fill_null(col, 0)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col.to_numpy()
