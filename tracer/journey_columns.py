"""A capture's `journey` rows gathered pass by pass: ``JourneyColumns``.

`record` takes the drain's records a few times a second and writes a
record batch about once a second. Each pass's records are laid out at once
(journey_layout, compiled where it can be) straight into columns kept for
the next batch, and their hops' places resolved; ``take`` hands the
columns over as one table (events.JOURNEY_FILE_SCHEMA). A record is thus
read once, while it is still in cache, and never held as a record: before,
records were copied into a held buffer (~14-18 MB touched a run) and laid
out a second later (docs/benchmarks.md, "Session 10: record CPU").

The columns of the next batch keep the last one's capacity (as it grew), so
a steady run, or one whose batches vary or grow slowly, lays out into memory
of the right size and seldom grows it (growing copies what is there, once
per doubling); a batch that used under a quarter of it gives a burst's
memory back: the next starts a quarter larger than that batch used (never
under the first size).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from tracer import events, hop_paths, journey_layout, record_words
from tracer.arrow_columns import numeric_array
from tracer.decode import code_column, drop_reason_column, protocol_column, resolve_place_keys
from tracer.ragged import positions, ranges

_JOURNEY_KIND = pa.array(["journey"])
HEADER = ("packet_id", "flow_id", "skb", "drop_netns", "fwd_out_ifindex", "ip_id", "length", "cpu",
           "tcp_flags", "tcp_doff", "tcp_seq", "tcp_ack")  # record fields stored as they are (columns of the same name)
# hop columns a pass needs to resolve places but the file does not store hop
# by hop (since version 5 a file stores a hop's time there, the rest in the
# batch's paths: journey_layout lays out no more)
_SCRATCH_HOPS = ("place_index",)
# every record column the layout fills is stored (a row's wall time is not
# one: since version 4 readers compute it, ktime_ns + the metadata's
# ktime_offset_ns)
_STORED_RECORDS = journey_layout.RECORD_COLUMNS
_STORED_HOPS = tuple((name, dt) for name, dt in journey_layout.HOP_COLUMNS if name not in _SCRATCH_HOPS)
_HOP_DTYPES = dict(journey_layout.HOP_COLUMNS)
# First sizes (records; hops and tuples per record), before a batch has shown
# the run's: a writer's batch at the lab's rates (writer.JOURNEY_BATCH and a
# pass more) without growing. Memory never written costs nothing, and a
# batch's columns reuse the memory the last batch's freed (the heap is kept:
# tracer/allocator.py), so the huge pages numpy asks for from 4 MB on (the
# hops' 8-byte place index, 7.5 MiB here) fault in once.
_START_RECORDS = 81920
_HOPS_PER_RECORD = 12
_TUPLES_PER_RECORD = 3


class JourneyColumns:
    """Journey rows added record batch by record batch (``add``), taken as
    one table (``take``). Not thread-safe: the writer's thread only."""

    def __init__(self, records: int = _START_RECORDS) -> None:
        self._first_sizes = (records, _HOPS_PER_RECORD * records, _TUPLES_PER_RECORD * records)
        self._sizes = self._first_sizes
        self.n = self.n_hops = self.n_tuples = self.n_lists = 0
        self._tuples_room = 0  # the most tuple room an add of this batch asked for (each its records' all)
        self._rec: dict | None = None  # allocated by the first add after a take (see take)
        self._drop_reasons_ctx = None
        self._paths = hop_paths.BatchPaths()

    def _fresh(self, n_records: int, n_hops: int, n_tuples: int) -> None:
        # all allocated before any is replaced: a MemoryError keeps the rows held
        rec = {name: np.empty(n_records + 1 if name.endswith("_offsets") else n_records, dt)
               for name, dt in _STORED_RECORDS}
        rec["hop_offsets"][0] = rec["tuple_offsets"][0] = 0
        hop = {name: np.empty(n_hops, dt) for name, dt in _STORED_HOPS}
        tup = {name: np.empty(16 * n_tuples if name.endswith("addr") else n_tuples, dt)
               for name, dt in journey_layout.TUPLE_COLUMNS}
        self._rec, self._hop, self._tup = rec, hop, tup
        self.n = self.n_hops = self.n_tuples = self.n_lists = self._tuples_room = 0

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        """Bytes of the columns held (0 before the first add after a take)."""
        if self._rec is None:
            return 0
        return sum(column.nbytes for part in (self._rec, self._hop, self._tup) for column in part.values())

    def _reserve(self, k: int, h: int, t: int) -> None:
        """Room for k more records, h hops, t tuples (grown by doubling, the
        used part copied)."""
        if self._rec is None:
            self._fresh(*(max(size, 2 * need) if need > size else size for size, need in zip(self._sizes, (k, h, t))))
        cap_r, cap_h, cap_t = len(self._rec["packet_id"]), len(self._hop["dt_ns_b0"]), len(self._tup["sport"])
        if self.n + k <= cap_r and self.n_hops + h <= cap_h and self.n_tuples + t <= cap_t:
            return
        old = (self._rec, self._hop, self._tup)
        used = (self.n, self.n_hops, self.n_tuples)
        n_lists, room = self.n_lists, self._tuples_room
        self._fresh(max(cap_r, 2 * (used[0] + k)) if used[0] + k > cap_r else cap_r,
                    max(cap_h, 2 * (used[1] + h)) if used[1] + h > cap_h else cap_h,
                    max(cap_t, 2 * (used[2] + t)) if used[2] + t > cap_t else cap_t)
        self.n, self.n_hops, self.n_tuples = used
        self.n_lists, self._tuples_room = n_lists, room
        for new, was, size in zip((self._rec, self._hop, self._tup), old, used):
            for name, column in was.items():
                width = size + 1 if name.endswith("_offsets") else (16 * size if name.endswith("addr") else size)
                new[name][:width] = column[:width]

    def add(self, records: np.ndarray, ctx, place_ids) -> Stored:
        """Lay ``records`` (events.JOURNEY_DTYPE, any byte order) out after
        the rows held; ``ctx`` (decode.DecodeContext, read under the
        caller's lock) names their hops' places, numbered by ``place_ids``
        (journey_capture.PlaceIds). Records without hops are not kept.
        Returns what the rows stored hold (their flows, their new packets),
        read from the columns just written: another pass over the records
        themselves (440 bytes each, out of the cache by then) cost a live
        `record` ~0.08 µs a packet per field."""
        kept, nh, nt = journey_layout.counts(records)
        k, h, t = len(kept), int(nh.sum()), int(nt.sum())
        if not k:
            return NOTHING_STORED
        self._reserve(k, h, t)
        r0, h0, t0, l0 = self.n, self.n_hops, self.n_tuples, self.n_lists
        self._tuples_room = max(self._tuples_room, t0 + t)
        out = journey_layout.Columns(
            {name: column[r0:r0 + k + 1] if name == "hop_offsets" else
             column[l0:l0 + k + 1] if name == "tuple_offsets" else column[r0:r0 + k]
             for name, column in self._rec.items()},
            {**{name: self._hop[name][h0:h0 + h] for name, _ in _STORED_HOPS},
             **{name: np.empty(h, _HOP_DTYPES[name]) for name in _SCRATCH_HOPS}},
            {name: column[16 * t0:16 * (t0 + t)] if name.endswith("addr") else column[t0:t0 + t]
             for name, column in self._tup.items()},
            kept)
        # The layout writes its first offsets (0) over the held rows' last
        # ones: given back if it fails, or the held rows' lists end at 0.
        held_ends = out.records["hop_offsets"][0], out.records["tuple_offsets"][0]
        try:
            journey_layout.layout_into(records, out, nh, nt)
        except BaseException:
            out.records["hop_offsets"][0], out.records["tuple_offsets"][0] = held_ends
            raise
        new_packets = self._number_paths(records, ctx, place_ids, out)
        # each pass's offsets and tuple lists start at 0: after the rows before it
        out.records["hop_offsets"] += np.int32(h0)
        n_lists = out.n_lists
        list_ends = out.records["tuple_offsets"][:n_lists + 1]
        list_ends += np.int32(t0)
        out.records["tuple_list"] += np.int32(l0)
        self.n, self.n_hops, self.n_tuples, self.n_lists = r0 + k, h0 + h, int(list_ends[-1]), l0 + n_lists
        self._drop_reasons_ctx = ctx
        return Stored(new_packets, self._rec["flow_id"][r0:r0 + k])

    def _number_paths(self, records: np.ndarray, ctx, place_ids, out: journey_layout.Columns) -> int:
        """The laid-out records' paths (out.records["path"]: the layout's
        numbers) as the batch's (self._paths), once their hops' places have
        ids: resolved as live decoding does, once per distinct place (a drop
        hop's netns is the record's; the others' the host's). ``out``'s
        offsets are still the pass's own (from 0). Returns how many of the
        records began a packet (their first hop gave the packet its id)."""
        fields = journey_layout.path_fields(out.path_words)

        def addresses():  # (rare) each hop's tuple is its path's
            hop_tuple = journey_layout.path_fields(out.hop_words(np.arange(len(out))))["tuple"]
            return record_words.tuples_at(records, out.hop_record(), hop_tuple)[:2]

        keys, origins = out.place_keys, []
        places, inverse = resolve_place_keys(ctx, keys, out.hops["place_index"], addresses, origins)
        # each place's ifindex (one: a place index comes from one key), kept with it: the key's
        # low bits (decode.place_keys); a place told apart by addresses is its key's
        ifindex = np.array(keys, np.uint64) & np.uint64(0x7FFFFFFF)
        if origins:
            ifindex = ifindex[np.concatenate((np.arange(len(keys)), origins))]
        ids = place_ids.ids_of(places, ifindex)
        path, starts = out.records["path"], out.path_starts
        new_packet = (fields["flags"][starts[:-1]] & events.HOP_FLAG_NEW_PACKET) != 0  # by the first hop, a path's
        new_packets = int(np.count_nonzero(new_packet[path]))
        places = ids[fields["place_index"]]
        if not origins:
            numbers = self._paths.ids(fields, places, starts[:-1], starts[1:])
            np.take(numbers, path, out=path)
            return new_packets
        rows, told = self._told_apart(out, inverse, len(keys), ids)
        others = np.ones(len(path), bool)
        others[rows] = False
        # (a path only told-apart records have is not theirs: not stored; np.unique imports numpy.ma)
        wanted = np.flatnonzero(np.bincount(path[others], minlength=len(starts) - 1))
        numbers = np.zeros(len(starts) - 1, np.int32)
        numbers[wanted] = self._paths.ids(fields, places, starts[wanted], starts[wanted + 1])
        np.take(numbers, path, out=path)
        path[rows] = told
        return new_packets

    def _told_apart(self, out: journey_layout.Columns, inverse: np.ndarray, n_keys: int, ids: np.ndarray):
        """The records through a place told apart by addresses (``inverse``
        past the keys), whose layout's path (by place index) is not theirs
        alone: their rows and their batch numbers, each keyed by its own."""
        offsets = out.records["hop_offsets"]
        told = np.zeros(len(out), bool)
        told[positions(np.diff(offsets))[0][inverse >= n_keys]] = True
        rows = np.flatnonzero(told)
        sizes = np.diff(offsets)[rows]
        ends = np.cumsum(sizes)
        places = ids[inverse[ranges(offsets[rows], sizes)]]
        return rows, self._paths.ids(journey_layout.path_fields(out.hop_words(rows)), places, ends - sizes, ends)

    def take(self) -> pa.Table:
        """The rows added since the last take, as written
        (events.JOURNEY_FILE_SCHEMA); the columns are the table's from now
        on, and the next rows go to new ones sized from what these used."""
        n, nh, nt, n_lists = self.n, self.n_hops, self.n_tuples, self.n_lists
        if self._rec is None:
            self._fresh(0, 0, 0)
        r = {name: column[:n + 1] if name == "hop_offsets" else column[:n_lists + 1] if name == "tuple_offsets"
             else column[:n] for name, column in self._rec.items()}
        h = {name: column[:nh] for name, column in self._hop.items()}
        t = {name: column[:16 * nt] if name.endswith("addr") else column[:nt] for name, column in self._tup.items()}
        ctx = self._drop_reasons_ctx
        if n:  # the next batch: this one's capacity (no growing copies while batches vary or grow
            # slowly), unless it used under a quarter of it (a burst's capacity not kept past a
            # quiet batch): then a quarter more than it used, never under the first sizes
            caps = len(self._rec["packet_id"]), len(self._hop["dt_ns_b0"]), len(self._tup["sport"])
            self._sizes = tuple(max(first, used + used // 4) if used < cap // 4 else cap
                                for first, used, cap in zip(self._first_sizes, (n, nh, self._tuples_room), caps))
        # The next columns are allocated when rows come: by then this table
        # was written and freed, and its memory is theirs (no fresh pages).
        self._rec = self._hop = self._tup = None
        self.n = self.n_hops = self.n_tuples = self.n_lists = self._tuples_room = 0
        paths, self._paths = self._paths.array(), hop_paths.BatchPaths()
        return _table(r, h, t, n, ctx, paths)


class Stored(NamedTuple):
    """What one ``JourneyColumns.add`` stored: how many of its rows began a
    packet (their first hop gave the packet its id; a continuation's does
    not), and the rows' flow ids (a view of the held column, which is
    never written over, not even after a take)."""

    new_packets: int
    flow_ids: np.ndarray


NOTHING_STORED = Stored(0, np.zeros(0, np.uint64))


def _table(r: dict, h: dict, t: dict, n: int, ctx, paths: pa.Array) -> pa.Table:
    hop_values = pa.StructArray.from_arrays([numeric_array(h[name]) for name in events.DT_PLANES],
                                            fields=list(events.DT_HOP_TYPE))
    tuple_values = pa.StructArray.from_arrays(
        [_flat_binary16(t["saddr"]), _flat_binary16(t["daddr"]), numeric_array(t["sport"]), numeric_array(t["dport"])],
        fields=list(events.TUPLE_ROW_TYPE))
    columns = {
        "ktime_ns": numeric_array(r["ktime"]),
        "kind": pa.DictionaryArray.from_arrays(numeric_array(np.zeros(n, np.int32)), _JOURNEY_KIND),
        "last_gap_ns": numeric_array(r["last_gap"]),
        "end": code_column(r["end"], events.JOURNEY_ENDS),
        "direction": code_column(r["direction"], events.DIRECTIONS),
        "protocol": protocol_column(r["protocol"]),
        "drop_reason": (drop_reason_column(r["drop_reason"], ctx) if ctx is not None
                        else pa.nulls(n, events.JOURNEY_FILE_SCHEMA.field("drop_reason").type)),
        "tuples": pa.DictionaryArray.from_arrays(
            numeric_array(r["tuple_list"]), pa.ListArray.from_arrays(numeric_array(r["tuple_offsets"]), tuple_values),
            safe=False),
        "hops": pa.ListArray.from_arrays(numeric_array(r["hop_offsets"]), hop_values),
        "path": pa.DictionaryArray.from_arrays(numeric_array(r["path"]), paths, safe=False),
    }
    for name in HEADER:
        columns[name] = numeric_array(r[name])
    schema = events.JOURNEY_FILE_SCHEMA
    return pa.Table.from_arrays(
        [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema], schema=schema)


def _flat_binary16(data: np.ndarray) -> pa.Array:
    """16 bytes a value, back to back (a contiguous u8 array) ->
    fixed_size_binary(16), without a copy."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(data) // 16, [None, pa.py_buffer(data)])
