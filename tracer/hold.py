"""Holding the kernel's journey records until each packet is whole.

The kernel emits a packet's journey when it ends, but a packet can come back
as a continuation record with the same id: freed after delivery (a drop hop,
e.g. QUEUE_PURGE when the receiving socket closes unread: about one packet in
twenty on the lab's HTTP traffic) or more hops than a slot holds. So `trace`
shows a packet once nothing more has come of it for a short while. That is
done per record (one per packet), not per sighting: the records are a few
hundred bytes each, kept as numpy arrays, and what is complete is found with
one sort of the held records' packet ids.
"""

from __future__ import annotations

import numpy as np

from tracer import events, record_words
from tracer.events import PACKET_ID_CPU_SHIFT


class RecentIds:
    """Ids of the last ``size`` packets let go, to tell a straggling part of
    one from a new packet. Ids grow per CPU (bpf/common.h new_packet_id):
    only an id at or below its CPU's highest one can be a straggler, and the
    set lookup runs on those few."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.size = size
        self._ids = np.zeros(0, np.uint64)
        self._highest = np.zeros(1025, np.uint64)  # per CPU

    def __len__(self) -> int:
        return len(self._ids)

    def _cpu(self, ids: np.ndarray) -> np.ndarray:
        return np.minimum(ids >> np.uint64(PACKET_ID_CPU_SHIFT), np.uint64(len(self._highest) - 1)).astype(np.intp)

    def seen(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` were let go already."""
        ids = ids.astype(np.uint64)
        maybe = ids <= self._highest[self._cpu(ids)]
        out = np.zeros(len(ids), bool)
        if maybe.any():
            out[maybe] = np.isin(ids[maybe], self._ids)
        return out

    def add(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        ids = ids.astype(np.uint64)
        self._ids = np.concatenate((self._ids, ids))[-self.size :]
        np.maximum.at(self._highest, self._cpu(ids), ids)


def sort_records(records: np.ndarray) -> np.ndarray:
    """Records by (packet id, first sighting): a packet's parts adjacent and
    in order, so their sighting rows come out sorted by (packet_id, ktime)."""
    if len(records) < 2:
        return records
    return record_words.take(records, np.lexsort((records["first_ktime"], records["packet_id"])))


class RecordHold:
    """Journey records waiting until their packet has been quiet for
    ``idle_ns``. Ids of the last ``recent_ids`` packets let go are kept, so a
    part that arrives after its packet was shown is counted (``late``) and
    returned apart, rather than shown as a journey of its own.

    Records stay in the batches they came in, with a mask of the ones still
    held; only their packet ids and times are combined to decide what is
    complete, and a record is copied once, when it is let go (records are
    320 bytes: moving every held one on every pass cost more than everything
    else in `trace`)."""

    def __init__(self, recent_ids: int = 1 << 16) -> None:
        self.late = 0
        self._batches: list[np.ndarray] = []
        self._held: list[np.ndarray | None] = []  # per batch: which records are still held (None: all)
        self._let_go = RecentIds(recent_ids)

    def __len__(self) -> int:
        return sum(len(b) if m is None else int(m.sum()) for b, m in zip(self._batches, self._held))

    def _field(self, name: str) -> np.ndarray:
        """A field of every held record, batch by batch."""
        return np.concatenate([b[name] if m is None else b[name][m] for b, m in zip(self._batches, self._held)])

    def add(self, records: np.ndarray) -> np.ndarray:
        """Hold ``records``; returns the late parts among them (not held)."""
        if not len(records):
            return records
        late = self._let_go.seen(records["packet_id"])
        if late.any():
            self.late += int(late.sum())
            out, records = record_words.take(records, late), record_words.take(records, ~late)
        else:
            out = records[:0]
        if len(records):
            self._batches.append(records)
            self._held.append(None)
        return out

    def pop_complete(self, idle_ns: int, now_ktime: int) -> np.ndarray:
        """Records of packets whose last sighting is at least ``idle_ns``
        before ``now_ktime`` (CLOCK_MONOTONIC) and that were first seen
        before every packet still held, in the order they came (a packet's
        parts all together in one pop)."""
        if not self._batches:
            return events.empty_journeys()
        pid = self._field("packet_id")
        last = self._field("last_ktime").astype(np.int64)
        # A packet's latest sighting over all its parts, spread back to each part.
        uniq, inverse = np.unique(pid, return_inverse=True)
        latest = np.full(len(uniq), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(latest, inverse, last)
        quiet = latest <= now_ktime - idle_ns
        if quiet.any() and not quiet.all():
            # Let go in order of first sighting, as `show` orders a capture: a
            # quiet packet first seen after one still held waits for it (the
            # cut fell between two packets that overlap in time: it would be
            # shown before a packet seen earlier, in a later pass).
            earliest = np.full(len(uniq), np.iinfo(np.int64).max, np.int64)
            np.minimum.at(earliest, inverse, self._field("first_ktime").astype(np.int64))
            quiet &= earliest < earliest[~quiet].min()
        if not quiet.any():
            return events.empty_journeys()
        done = quiet[inverse]
        out, batches, held, at = [], [], [], 0
        for b, m in zip(self._batches, self._held):
            rows = np.arange(len(b)) if m is None else np.flatnonzero(m)
            d = done[at : at + len(rows)]
            at += len(rows)
            if d.all() and m is None:
                out.append((b, None))  # the whole batch
                continue
            if d.any():
                out.append((b, rows[d]))
            if not d.all():
                still = np.zeros(len(b), bool)
                still[rows[~d]] = True
                batches.append(b)
                held.append(still)
        self._batches, self._held = batches, held
        self._let_go.add(uniq[quiet])
        return record_words.gather(out)

    def flush(self) -> np.ndarray:
        """Everything held (tracing stops)."""
        return self.pop_complete(0, np.iinfo(np.int64).max)
