"""Rows without a ktime_ns, possible in a damaged or hand-made capture.

A sighting row's ktime_ns is its place on its packet's clock: the readers
order a packet's rows by it and tell hop latencies and durations from it.
A row without one has no such place. It keeps its written place among its
packet's rows (``in_place``), and no latency, duration or start is told
from it: the outputs say none ('-', null) rather than reading it as ktime
0, which sorted it first and made its hops' dt and its packet's duration
reach back to the boot.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def timed(table: pa.Table) -> np.ndarray | None:
    """Which rows have a ktime_ns (a place on their packet's clock: hop
    latencies and a packet's duration are told in it): None when every row
    has one (the usual case)."""
    if "ktime_ns" not in table.column_names:
        return np.zeros(table.num_rows, bool)
    col = table["ktime_ns"]
    return col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None


def untimed_last(kt: np.ndarray, has_kt: np.ndarray | None) -> np.ndarray:
    """``kt`` as a sort key in which a row without a ktime_ns (``has_kt``
    False; its kt reads 0) comes after every row with one."""
    return kt if has_kt is None else np.where(has_kt, kt, np.iinfo(np.int64).max)


def in_place(pid: np.ndarray, kt: np.ndarray, has_kt: np.ndarray | None) -> np.ndarray:
    """``kt`` as the key a packet's rows are sorted by (stably, with the
    packet id first): a row without a ktime_ns keeps its written place, just
    after the row of its packet written before it (it takes that row's key;
    the writer lays a journey's hops out in order), or comes last in its
    packet where no row of it with a ktime_ns was written before it, so a
    packet's first hop has a time if any of its hops has. Before, its kt
    read 0 and sorted it first."""
    if has_kt is None:
        return kt
    n = len(kt)
    o = np.argsort(pid, kind="stable")  # each packet's rows together, in written order
    spid, skt, shas = pid[o], kt[o], has_kt[o]
    start = np.maximum.accumulate(np.where(np.r_[True, spid[1:] != spid[:-1]], np.arange(n), 0))
    last_timed = np.maximum.accumulate(np.where(shas, np.arange(n), -1))  # the latest row with one, at or before
    key = np.where(last_timed >= start, skt[np.maximum(last_timed, 0)], np.iinfo(np.int64).max)
    out = np.empty(n, np.int64)
    out[o] = key
    return out


def times_or_none(ktime: np.ndarray, dt: np.ndarray, has_kt: np.ndarray | None) -> tuple[list, list]:
    """Each row's ktime and dt as Hop takes them: None for a row without a
    ktime_ns (``has_kt`` False)."""
    ktimes, dts = ktime.tolist(), dt.tolist()
    if has_kt is not None:
        for i in np.flatnonzero(~has_kt).tolist():
            ktimes[i] = dts[i] = None
    return ktimes, dts
