"""``JourneyAssembler``: a live stream's sighting rows held until each
packet is quiet (whole), then given out as rows for tracer/journey_rows.py
or as Journey objects."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tracer.hold import RecentIds
from tracer.journey_rows import journeys_of_table
from tracer.journeys import Journey, _WORK_SCHEMA, _normalise, _numpy, _sort_order


class JourneyAssembler:
    """Builds journeys from a live stream of event batches.

    A packet is complete once nothing has been seen of it for ``idle_ns``: a
    forwarded packet crosses the host in tens of microseconds, so a quiet
    period of a few hundred milliseconds (several drain batches) is safe.
    Only rows of incomplete packets are held, so memory is bounded by the event
    rate times the idle time. Ids of recently emitted packets are remembered
    (a bounded window) so a straggling sighting of an emitted packet is counted
    in ``late_rows`` rather than shown as a bogus one-hop journey.
    """

    def __init__(self, recent_ids: int = 1 << 16) -> None:
        self.late_rows = 0
        # Held tables stay as they came (each with its own dictionaries);
        # their packet_id/ktime_ns columns are kept as numpy arrays, so a
        # poll decides what is complete without combining the held rows.
        self._pending: list[pa.Table] = []
        self._keys: list[tuple[np.ndarray, np.ndarray]] = []  # (packet_id, ktime_ns) per pending table
        # Per pending table, which rows are still held (None: all). Emitted
        # rows are marked here instead of copying the held ones out.
        self._held: list[np.ndarray | None] = []
        self._emitted = RecentIds(recent_ids)

    def add(self, table: pa.Table) -> None:
        work = _normalise(table).combine_chunks()
        if work.num_rows and len(self._emitted):
            late = self._emitted.seen(_numpy(work["packet_id"]))
            if late.any():
                self.late_rows += int(late.sum())
                work = work.filter(pa.array(~late))
        if work.num_rows:
            self._pending.append(work)
            self._keys.append((_numpy(work["packet_id"]), _numpy(work["ktime_ns"])))
            self._held.append(None)

    @property
    def pending_rows(self) -> int:
        return sum(t.num_rows if m is None else int(m.sum()) for t, m in zip(self._pending, self._held))

    def pop_complete(self, idle_ns: int, now_ktime: int) -> list[Journey]:
        """Journeys of packets not seen for at least ``idle_ns`` before
        ``now_ktime`` (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns)."""
        return journeys_of_table(self.pop_complete_table(idle_ns, now_ktime))

    def pop_complete_table(self, idle_ns: int, now_ktime: int) -> pa.Table:
        """The complete packets as rows rather than Journey objects: the complete
        packets' rows (normalised columns, sorted by packet_id, ktime_ns) for
        journey_json_lines / Summary.add_table."""
        cutoff = now_ktime - idle_ns
        if not self._pending or cutoff < 0:
            return _WORK_SCHEMA.empty_table()
        held = np.concatenate([np.ones(t.num_rows, bool) if m is None else m for t, m in zip(self._pending, self._held)])
        rows = np.flatnonzero(held)
        pid = np.concatenate([k[0] for k in self._keys])[rows]
        ktime = np.concatenate([k[1] for k in self._keys])[rows]
        # One sort permutation of the held rows: quiet packets are whole runs
        # of it, and only their rows are copied out.
        order = _sort_order(pid, ktime)
        spid, skt = pid[order], ktime[order]
        starts = np.concatenate(([0], np.flatnonzero(spid[1:] != spid[:-1]) + 1))
        ends = np.append(starts[1:], len(spid))
        quiet = skt[ends - 1] <= cutoff  # sorted by time within a packet: the last is the latest
        if not quiet.any():
            return _WORK_SCHEMA.empty_table()
        done = rows[order[np.repeat(quiet, ends - starts)]]
        out = self._take_rows(done)
        held[done] = False
        self._keep_held(held)
        self._emitted.add(spid[starts[quiet]])
        return out

    def _take_rows(self, done: np.ndarray) -> pa.Table:
        """Rows ``done`` (indices over the pending tables back to back), in
        that order. Each table gives up only its own rows before they are
        combined: combining every held row on each poll costs far more."""
        asc = np.sort(done)
        bounds = np.cumsum([0] + [t.num_rows for t in self._pending])
        cut = np.searchsorted(asc, bounds)
        pieces = []
        for t, lo, hi, base in zip(self._pending, cut[:-1], cut[1:], bounds[:-1]):
            if hi - lo == t.num_rows:
                pieces.append(t)  # every row of it: no copy
            elif hi > lo:
                pieces.append(t.take(pa.array(asc[lo:hi] - base)))
        picked = pa.concat_tables(pieces).combine_chunks() if len(pieces) > 1 else pieces[0]
        return picked.take(pa.array(np.searchsorted(asc, done)))

    def _keep_held(self, held: np.ndarray) -> None:
        """Store the held-row mask back per table; drop tables fully emitted."""
        pending, keys, masks, at = [], [], [], 0
        for t, k in zip(self._pending, self._keys):
            m = held[at : at + t.num_rows]
            at += t.num_rows
            if m.any():
                pending.append(t)
                keys.append(k)
                masks.append(None if m.all() else m)
        self._pending, self._keys, self._held = pending, keys, masks

    def flush_table(self) -> pa.Table:
        """Everything still held (at exit), complete or not, as pop_complete_table rows."""
        return self.pop_complete_table(0, np.iinfo(np.int64).max)

    def flush(self) -> list[Journey]:
        """Everything still held (at exit), complete or not."""
        return journeys_of_table(self.flush_table())
