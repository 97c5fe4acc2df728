"""The analysis's first step, shared with tracer.paths, tracer.pcapng and
tracer.journey_analysis: a capture's columns read as numpy (nulls as 0 or
-1, dictionary codes read from their buffers), wall-clock times, and the
sighting rows of each packet sorted into journey order (``_Sorted``), one
array per column, as tracer.analysis reduces them, and the facts of each
packet it takes from sighting rows or journey rows alike (``PacketFacts``:
journey_analysis makes them below the analysis, which only reads them)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.capture_clock import ktime_offset
from tracer.events import CONTAINER, FLAG_IN_CONTAINER_NS, META_PREFIX
from tracer.interning import Interner
from tracer.journey_rows import _factorize
from tracer.untimed import in_place, timed
from tracer.journeys import ends_journey, hop_label


# --- column helpers ------------------------------------------------------------


def _ints(table: pa.Table, name: str, dtype=np.int64) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=dtype)
    col = table[name]
    if col.null_count:
        col = pc.fill_null(col, 0)
    return col.to_numpy().astype(dtype, copy=False)  # chunks concatenated, no Arrow copy


def _codes(table: pa.Table, name: str) -> tuple[np.ndarray, list]:
    """A string column as (dictionary indices with -1 for null, values)."""
    if name not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64), []
    col = table[name]
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    if chunks and all(pa.types.is_dictionary(c.type) for c in chunks):
        # A capture's dictionaries only grow (deltas): each chunk's is a
        # prefix of the longest, whose codes then hold for every chunk.
        longest = max(chunks, key=lambda c: len(c.dictionary)).dictionary
        if all(c.dictionary.equals(longest.slice(0, len(c.dictionary))) for c in chunks):
            idx = np.concatenate([_indices(c) for c in chunks]) if len(chunks) > 1 else _indices(chunks[0])
            return idx, longest.to_pylist()
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    return _indices(col), col.dictionary.to_pylist()


def _indices(arr: pa.DictionaryArray) -> np.ndarray:
    """Dictionary codes, -1 for null (read from the buffers: fill_null
    would copy the column first)."""
    ind = arr.indices
    n = len(ind)
    width = ind.type.bit_width // 8
    if ind.null_count == 0 or width not in (1, 2, 4, 8):
        return (pc.fill_null(ind, -1) if ind.null_count else ind).to_numpy().astype(np.int64)
    validity, data = ind.buffers()[0], ind.buffers()[1]
    out = np.frombuffer(data, dtype=f"i{width}", count=n, offset=ind.offset * width).astype(np.int64)
    bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[ind.offset: ind.offset + n]
    out[bits == 0] = -1
    return out


def _lut(values: list, default: Any = None) -> np.ndarray:
    """values as an object array with one extra slot at [-1] for null codes."""
    out = np.empty(len(values) + 1, dtype=object)
    out[:-1] = values
    out[-1] = default
    return out


def wall_ns(table: pa.Table, metadata: Mapping[str, str] | None = None) -> np.ndarray:
    """Wall clock ns per row: the ``time`` column, or ktime plus the
    capture's ktime-to-wall offset where a row has a ktime_ns but no time
    (0 where it has neither). The readers already computed every such
    row's time from its own file's offset (capture_clock.with_missing_time,
    refusing a bad one in a line naming the file), so rows read from files
    never need ``metadata`` here (the first file's): it serves tables built
    otherwise, and is checked only where a row needs it (BadClock: one
    line, never a traceback)."""
    kt = _ints(table, "ktime_ns")
    if "time" not in table.column_names:
        return kt + _offset(metadata)
    tcol = table["time"].cast(pa.int64())
    t = pc.fill_null(tcol, 0).to_numpy().astype(np.int64)
    if tcol.null_count:
        missing = pc.and_(pc.is_null(tcol), pc.is_valid(table["ktime_ns"])).to_numpy(zero_copy_only=False) \
            if "ktime_ns" in table.column_names else np.zeros(len(t), bool)
        if missing.any():
            t[missing] = kt[missing] + _offset(metadata)
    return t


def clocked(table: pa.Table) -> np.ndarray | None:
    """Which rows have a moment (a time or a ktime_ns; wall_ns reads one
    without either as 0): None when every row has one (the usual case)."""
    cols = [table[c] for c in ("time", "ktime_ns") if c in table.column_names]
    if not cols or any(not c.null_count for c in cols):
        return None
    mask = np.zeros(table.num_rows, bool)
    for c in cols:
        mask |= c.is_valid().to_numpy()
    return mask


def _offset(metadata: Mapping[str, str] | None) -> int:
    """The metadata's ktime_offset_ns, checked; 0 where it has none."""
    text = (metadata or {}).get("ktime_offset_ns")
    return 0 if text is None else ktime_offset(text)


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    sec, rem = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem:09d}Z"


def clean_metadata(metadata: Mapping | None) -> dict[str, str]:
    """Schema metadata with bytes decoded and the 'tracer.' prefix dropped."""
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        k = k.decode() if isinstance(k, bytes) else str(k)
        v = v.decode(errors="replace") if isinstance(v, bytes) else ("" if v is None else v)
        out[k[len(META_PREFIX):] if k.startswith(META_PREFIX) else k] = v if isinstance(v, str) else json.dumps(v)
    return out


def event_rows(table: pa.Table) -> pa.Table:
    """Packet sightings only (a capture also holds container/stats rows)."""
    if "kind" not in table.column_names:
        return table
    return table.filter(pc.fill_null(pc.equal(table["kind"].cast(pa.string()), "event"), False))


# --- sighting rows in journey order -------------------------------------------


_ANALYSIS_COLUMNS = ("time", "ktime_ns", "hook", "nat_stage", "if_role", "flags", "packet_id", "flow_id", "direction",
                     "length", "container_name", "container_id", "protocol", "src_ip", "src_port", "dst_ip", "dst_port",
                     "drop_reason")


def place_codes(table: pa.Table) -> tuple[np.ndarray, list, np.ndarray, list, np.ndarray, list]:
    """(hook, stage, role) of sighting rows as codes and their values. A tc
    program inside a container's netns is a container sighting (as in journeys)."""
    hook, hooks = _codes(table, "hook")
    stage, stages = _codes(table, "nat_stage")
    role, roles = _codes(table, "if_role")
    in_ns = (_ints(table, "flags") & FLAG_IN_CONTAINER_NS) != 0
    if in_ns.any():
        if CONTAINER not in roles:
            roles = roles + [CONTAINER]
        role = np.where(in_ns & (role < 0), roles.index(CONTAINER), role)
    return hook, hooks, stage, stages, role, roles


def journey_order(pid: np.ndarray, kt: np.ndarray, is_drop: np.ndarray) -> np.ndarray:
    """Row order by packet, then drop rows last, then time. A capture lays a
    packet's rows out together and in that order already: then the rows
    stay where they are (packets in the order they came) and nothing is
    sorted. Rows in time order (the usual other case): a stable sort by
    packet keeps each packet's rows in time order (checked); else the full sort."""
    n = len(pid)
    if n < 2:
        return np.arange(n)

    def in_order(p, k, d) -> np.ndarray:  # per adjacent pair: not the same packet, or drop last then time
        return (p[1:] != p[:-1]) | (d[1:] > d[:-1]) | ((d[1:] == d[:-1]) & (k[1:] >= k[:-1]))

    if in_order(pid, kt, is_drop).all():
        runs = pid[np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])]
        if len(np.unique(runs)) == len(runs):
            return np.arange(n)
    order = np.argsort(pid, kind="stable")
    if in_order(pid[order], kt[order], is_drop[order]).all():
        return order
    return np.lexsort((kt, is_drop, pid))


class _Sorted:
    """Event rows of identified packets, sorted by (packet_id, drop last, ktime),
    plus per-packet arrays. The shared first step of every analysis."""

    def __init__(self, table: pa.Table, metadata: Mapping[str, str]) -> None:
        table = event_rows(table)
        # Only the columns the analysis reads are combined into one chunk.
        table = table.select([c for c in _ANALYSIS_COLUMNS if c in table.column_names])
        if table.num_rows:
            pid = table["packet_id"]
            if pid.null_count or not pc.all(pc.not_equal(pid, 0)).as_py():
                table = table.filter(pc.fill_null(pc.not_equal(pid, 0), False))
        # Chunks stay as they are: columns are read chunk by chunk (_ints,
        # _codes), which saves copying every column into one.
        self.table = table
        n = table.num_rows

        hook, hooks, stage, stages, role, roles = place_codes(table)

        # Label each distinct (hook, stage, role) once with Hop.label / is_terminal.
        ns_, nr = len(stages) + 1, len(roles) + 1
        combo = (hook + 1) * ns_ * nr + (stage + 1) * nr + (role + 1)
        ucombo, inverse = _factorize(combo)
        labels: Interner[str] = Interner()
        combo_label = np.empty(len(ucombo), dtype=np.int64)
        combo_terminal = np.zeros(len(ucombo), dtype=bool)
        for i, c in enumerate(ucombo.tolist()):
            h, rest = divmod(c, ns_ * nr)
            s, r = divmod(rest, nr)
            parts = (hooks[h - 1] if h else "?", stages[s - 1] if s else None, roles[r - 1] if r else None)
            combo_label[i] = labels.id_of(hop_label(*parts))
            combo_terminal[i] = ends_journey(*parts)
        self.labels = labels.values
        label = combo_label[inverse] if n else np.zeros(0, dtype=np.int64)
        terminal = combo_terminal[inverse] if n else np.zeros(0, dtype=bool)
        is_drop = hook == (hooks.index("drop") if "drop" in hooks else -2)

        pid = _ints(table, "packet_id", np.uint64)
        kt = _ints(table, "ktime_ns")
        has_kt = timed(table)
        order = journey_order(pid, in_place(pid, kt, has_kt), is_drop)
        # Only the first drop row of a packet counts (journeys do the same).
        pid_o, drop_o = pid[order], is_drop[order]
        dup = np.zeros(n, dtype=bool)
        if n > 1:
            dup[1:] = drop_o[1:] & drop_o[:-1] & (pid_o[1:] == pid_o[:-1])
        self.order = order[~dup]
        o = self.order
        self.pid, self.kt, self.label = pid[o], kt[o], label[o]
        self.is_drop, self.terminal = is_drop[o], terminal[o]
        self.wall = wall_ns(table, metadata)[o]
        has_clock = clocked(table)
        self.clocked = None if has_clock is None else has_clock[o]  # None: every row has a moment
        self.timed = None if has_kt is None else has_kt[o]  # None: every row has a ktime_ns

        m = len(o)
        self.pstart = np.flatnonzero(np.r_[True, self.pid[1:] != self.pid[:-1]]) if m else np.zeros(0, np.int64)
        self.pend = np.append(self.pstart[1:], m)
        self.psize = self.pend - self.pstart


def _reduce(func: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return func.reduceat(values, starts) if len(starts) else values[:0]


@dataclass
class PacketFacts:
    """One value per packet of a chunk (codes are the analysis's ``Strings``),
    what CaptureAnalysis takes from sighting rows or journey rows alike."""
    direction: np.ndarray  # int64: 0 unknown, 1 original, 2 reply
    flow: np.ndarray  # uint64
    length: np.ndarray  # int32, the first sighting's
    protocol: np.ndarray  # int32 codes
    src_ip: np.ndarray  # first sighting's endpoints: int32 codes and ports
    src_port: np.ndarray
    dst_ip: np.ndarray
    dst_port: np.ndarray
    container: np.ndarray  # int32 codes
    reasons: Callable[[np.ndarray], list[str]]  # drop reason of each of these packets (indices)
    rows_of: Callable[[np.ndarray], pa.Table]  # sighting rows (_ANALYSIS_COLUMNS) of these packet ids
