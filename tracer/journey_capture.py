"""Journey records <-> the rows of a capture on disk (schema versions 2 to 5).

A capture stores what the kernel emitted: one `journey` row per record, its
hops and address tuples as list columns, in events.JOURNEY_FILE_SCHEMA
(read back as events.JOURNEY_CAPTURE_SCHEMA: ``conform``). What only the live host knows (a hop's interface name, role and container)
is resolved while recording into `place` rows, each written once per file
before the rows that point at it. Readers get the sighting rows every
analysis reads (events.CAPTURE_SCHEMA) from ``JourneyRowReader``, laid out
by the same code that lays out live records (tracer/expand.py, decode).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.events import OTHER
from tracer.arrow_columns import numbers_of, with_column
from tracer.capture_clock import ktime_offset, with_missing_time, with_time
from tracer.decode import DecodeContext, decode
from tracer.expand import Sightings, empty, lay_out
from tracer.interning import Interner
from tracer.journey_columns import HEADER as _HEADER, JourneyColumns
from tracer.journey_v5 import as_version_4, dt_ns_of, has_dt_planes
from tracer.places import UNKNOWN_PLACE, Place
from tracer.ragged import positions

_NEW_PACKET_BIT = 0x80  # HOP_NEW_PACKET_BIT in bpf/journey.h


class PlaceIds:
    """Capture-wide ids of the places hops happened at, each of one ifindex
    (a place and the device's ifindex: version 4 stores a hop's place id and
    not its ifindex). Ids only grow; each file of a rotated capture starts by
    writing every place known so far, so any file reads on its own."""

    def __init__(self) -> None:
        self._places: Interner[tuple[Place, int]] = Interner()
        self._unwritten: list[int] = []

    def ids_of(self, places: list[Place], ifindex) -> np.ndarray:
        """Ids of ``places``, the i-th at device ``ifindex[i]``."""
        out = np.empty(len(places), np.uint32)
        for i, place in enumerate(places):
            known = len(self._places)
            out[i] = pid = self._places.id_of((place, int(ifindex[i])))
            if pid == known:  # new: the current file still lacks its row
                self._unwritten.append(pid)
        return out

    def new_file(self) -> None:
        self._unwritten = list(range(len(self._places)))

    def take_unwritten(self) -> list[dict]:
        """The `place` rows' info objects the current file still lacks."""
        taken, self._unwritten = self._unwritten, []
        return [place_info(pid, *self._places.values[pid]) for pid in taken]


def place_info(pid: int, place: Place, ifindex: int | None = None) -> dict:
    info = {"id": pid, "ifname": place.ifname, "role": place.role, "netns": place.netns,
            "container_id": place.container_id, "container_name": place.container_name}
    if ifindex is not None:
        info["ifindex"] = ifindex
    return info


def place_of_info(info: dict) -> Place:
    return Place(info.get("ifname"), info.get("role") or OTHER, int(info.get("netns") or 0),
                 info.get("container_id"), info.get("container_name"))


# --- writing ------------------------------------------------------------------


def journey_rows(records: np.ndarray, ctx: DecodeContext, place_ids: PlaceIds) -> pa.Table:
    """Kernel journey records -> `journey` rows as written (JOURNEY_FILE_SCHEMA).
    Records without hops (copied mid-restart) are not kept, as expand.
    (The writer gathers several passes' records into one table:
    tracer/journey_columns.py.)"""
    columns = JourneyColumns(max(len(records), 1))
    columns.add(records, ctx, place_ids)
    return columns.take()


# --- reading ------------------------------------------------------------------


class BadJourneyRows(events.ColumnError):
    """A journey-row batch (version 2 to 5) whose columns, place rows or
    metadata are not what the format says."""


_REQUIRED = ("time", "ktime_ns", "kind", "hops", "tuples")


def conform(batch: pa.RecordBatch, ktime_offset_ns: int | None = None,
            place_ifindex: np.ndarray | None = None) -> pa.RecordBatch:
    """A version 2 to 5 batch in JOURNEY_CAPTURE_SCHEMA (events.conform;
    the columns without which nothing can be laid out are required): a
    version 5 file's paths, tuple lists and last gaps read back as version
    4's hops, tuples and last_ktime_ns (``as_version_4``); a
    version 3 to 5 file's dt_ns bytes joined into dt_ns; since version 4, the
    `time` column computed (ktime_ns + ``ktime_offset_ns``, the file's
    metadata) and each hop's ifindex put back from its place id
    (``place_ifindex[place]``, the file's `place` rows; 0 for an id no row
    names)."""
    batch = as_version_4(batch)
    names = batch.schema.names
    if "time" not in names and "ktime_ns" in names and ktime_offset_ns is not None:
        batch = with_time(batch, ktime_offset_ns, events.JOURNEY_CAPTURE_SCHEMA.field("time"))
    if "hops" in names and has_dt_planes(batch.schema.field("hops").type):
        lut = None if _hop_type(batch).get_field_index("ifindex") >= 0 else \
            (place_ifindex if place_ifindex is not None else np.zeros(0, np.uint32))
        batch = with_column(batch, "hops", lambda hops: _joined_dt(hops, lut))
    if "tuples" in batch.schema.names and batch.schema.field("tuples").type != events.JOURNEY_CAPTURE_SCHEMA.field("tuples").type:
        batch = with_column(batch, "tuples", _widened_tuples)
    try:
        return events.conform(batch, events.JOURNEY_CAPTURE_SCHEMA, _REQUIRED)
    except events.ColumnError as exc:
        raise BadJourneyRows(str(exc)) from None


def _binary16(rows: np.ndarray) -> pa.Array:
    """(n, 16) bytes (or (n, 4) u32 words) -> fixed_size_binary(16), byte for byte."""
    data = np.ascontiguousarray(rows).tobytes()
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(rows), [None, pa.py_buffer(data)])


def _hop_type(batch) -> pa.StructType:
    return batch.schema.field("hops").type.value_type


def _hops_need_ifindex(batch) -> bool:
    """Version 4 hops: dt_ns as its bytes and no ifindex (their place's)."""
    if "hops" not in batch.schema.names or not has_dt_planes(batch.schema.field("hops").type):
        return False
    return _hop_type(batch).get_field_index("ifindex") < 0


def _joined_dt(hops: pa.Array, place_ifindex: np.ndarray | None = None) -> pa.Array:
    """Hops with dt_ns stored as its bytes (events.DT_PLANES) -> the same
    hops with dt_ns (uint32) first, in place of the bytes; nulls kept. With
    ``place_ifindex`` (version 4: hops without ifindex), each hop's ifindex
    from its place id, after flags (as version 3 stored it)."""
    values = hops.values  # all of them, as the list's offsets index them
    dt = dt_ns_of(values)
    names = [name for name in values.type.names if name not in events.DT_PLANES]
    arrays = [values.field(name) for name in names]
    if place_ifindex is not None and "place" in names:
        place = numbers_of(values.field("place")).astype(np.int64)
        lut = np.append(np.asarray(place_ifindex, np.uint32), np.uint32(0))  # the last: an id past the rows'
        ifindex = lut[np.minimum(place, len(lut) - 1)]
        at = names.index("flags") + 1 if "flags" in names else len(names)
        names.insert(at, "ifindex")
        arrays.insert(at, pa.array(ifindex, pa.uint32()))
    struct = pa.StructArray.from_arrays([pa.array(dt)] + arrays,
                                        names=["dt_ns"] + names, mask=values.is_null() if values.null_count else None)
    # the list's own validity and offsets (a slice's offset too) around the new values
    return pa.Array.from_buffers(pa.list_(struct.type), len(hops), hops.buffers()[:2], null_count=hops.null_count,
                                 offset=hops.offset, children=[struct])


def _address_rows(column: pa.Array) -> np.ndarray:
    """A tuple's address column -> (n, 16) recorded bytes: fixed_size_binary
    as written since IPv6, or (captures from before) IPv4 as uint32."""
    if pa.types.is_integer(column.type):
        v4 = numbers_of(column).astype(">u4").view(np.uint8).reshape(-1, 4)
        out = np.zeros((len(v4), 16), np.uint8)
        out[:, 10:12] = 0xFF
        out[:, 12:] = v4
        return out
    column = column.cast(pa.binary(16)) if column.type != pa.binary(16) else column
    if column.null_count:
        column = pc.fill_null(column, pa.scalar(bytes(16), pa.binary(16)))
    return np.frombuffer(column.buffers()[1], np.uint8, count=16 * len(column), offset=16 * column.offset).reshape(-1, 16)


def _widened_tuples(col: pa.Array) -> pa.Array:
    """Tuples of a capture written before IPv6 (addresses as uint32) with
    16-byte addresses, as written now; anything else as it is (the cast
    then says what is wrong)."""
    try:
        values = col.flatten()
        if not all(pa.types.is_integer(values.type.field(n).type) for n in ("saddr", "daddr")):
            return col
        fields = [_binary16(_address_rows(values.field(n))) if n in ("saddr", "daddr")
                  else values.field(n) for n in ("saddr", "daddr", "sport", "dport")]
        struct = pa.StructArray.from_arrays(fields, names=["saddr", "daddr", "sport", "dport"])
        offsets = pc.subtract(col.offsets, col.offsets[0])  # flatten() starts at the first used value
        return pa.ListArray.from_arrays(offsets, struct)
    except (KeyError, pa.ArrowException, ValueError, TypeError, AttributeError):
        return col


class PlaceRegistry(Interner[Place]):
    """Places of every file a reader has read, in one id space: each file
    numbers its own (a rotated capture's parts alike, another recording
    not), so journey rows from several files can be worked on together."""

    @property
    def places(self) -> list[Place]:
        return self.values

    def lookup(self, ids: list[int]) -> list[Place]:
        return [self.places[i] if 0 <= i < len(self.places) else UNKNOWN_PLACE for i in ids]

    def remap(self, local: dict[int, Place], hops: pa.Array) -> pa.Array:
        """A `hops` list column with its file's place ids as ids of this
        registry (an id no place row names: UNKNOWN_PLACE, as laying out
        reads it). Unchanged where they already are (a capture's first file,
        and every part of a rotated one)."""
        top = max(local) if local else -1
        lut = np.full(top + 2, -1, np.int64)  # the last slot: any id past the file's
        for i, place in sorted(local.items()):
            lut[i] = self.id_of(place)
        if hops.null_count:
            hops = pc.fill_null(hops, pa.scalar([], hops.type))
        start, stop = (hops.offsets[0].as_py(), hops.offsets[-1].as_py()) if len(hops) else (0, 0)
        values = hops.values.slice(start, stop - start)
        place = numbers_of(values.field("place")).astype(np.int64)
        if not len(place):
            return hops
        place = np.minimum(place, len(lut) - 1)
        used = np.flatnonzero(np.bincount(place))
        if (lut[used] == used).all():
            return hops
        lut[lut < 0] = self.id_of(UNKNOWN_PLACE)
        mapped = lut[place]
        children = [pa.array(mapped.astype(np.uint32)) if f.name == "place" else values.field(f.name)
                    for f in values.type]
        struct = pa.StructArray.from_arrays(children, fields=list(values.type))
        offsets = pc.subtract(hops.offsets, hops.offsets[0])
        return pa.ListArray.from_arrays(offsets, struct, type=hops.type)


class JourneyBatch:
    """`journey` rows of one file, not laid out: their hops' places are
    ids of a PlaceRegistry (tracer/journey_analysis.py reads them as they
    are; ``sightings`` lays them out)."""

    def __init__(self, rows: pa.RecordBatch, registry: PlaceRegistry) -> None:
        self.rows = rows
        self.registry = registry

    @property
    def num_rows(self) -> int:
        return self.rows.num_rows


class JourneyRowReader:
    """One capture stream's rows -> CAPTURE_SCHEMA tables: `journey` rows as
    their sighting rows, `place` rows remembered (not shown), the other kinds
    as they are. Batches must come in file order. With a ``registry``,
    ``parts`` hands journey rows on as JourneyBatch instead of laying them out."""

    def __init__(self, registry: PlaceRegistry | None = None, ktime_offset_ns: int | str | None = None) -> None:
        self.places: dict[int, Place] = {}
        self.registry = registry
        # version 4: rows' time from ktime_ns and this (the file's metadata,
        # as written: checked only by a file that needs it, ``ktime_offset``);
        # hops' ifindex from their place rows
        self.ktime_offset_ns = ktime_offset_ns
        self._ifindex: dict[int, int] = {}
        self._ifindex_lut: np.ndarray | None = None

    def convert(self, batch: pa.RecordBatch) -> pa.Table:
        parts = [self._sightings(rows, self._known) if journey else rows for journey, rows in self._runs(batch)]
        if not parts:
            return events.CAPTURE_SCHEMA.empty_table()
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def parts(self, batch: pa.RecordBatch) -> list:
        """The batch as CAPTURE_SCHEMA tables (other kinds) and JourneyBatch
        (journey rows, places as the registry's ids), in file order."""
        out = []
        for journey, rows in self._runs(batch):
            if journey:
                i = rows.schema.get_field_index("hops")
                hops = self.registry.remap(self.places, rows.column(i))
                if hops is not rows.column(i):
                    rows = rows.set_column(i, rows.schema.field(i), hops)
                out.append(JourneyBatch(rows, self.registry))
            else:
                out.append(rows)
        return out

    def _place_ifindex(self) -> np.ndarray:
        """ifindex by place id, of the place rows read so far (0: none said)."""
        if self._ifindex_lut is None:
            lut = np.zeros(max(self._ifindex, default=-1) + 1, np.uint32)
            for pid, ifindex in self._ifindex.items():
                lut[pid] = ifindex
            self._ifindex_lut = lut
        return self._ifindex_lut

    def _read_places(self, infos: list[str | None], need_ifindex: bool) -> None:
        """Remember `place` rows; with ``need_ifindex`` (a version 4 file,
        whose hops have no ifindex) each must say its ifindex: without it
        every hop there would read as ifindex 0, which is also a real value
        (a drop without a device), so the loss could not be seen."""
        for text in infos:
            try:
                info = json.loads(text)
                pid = int(info["id"])
                self.places[pid] = place_of_info(info)
                ifindex = info.get("ifindex")
                if ifindex is not None and 0 <= pid < 1 << 24:
                    self._ifindex[pid] = int(ifindex) & 0xFFFFFFFF
                    self._ifindex_lut = None
            except (TypeError, ValueError, KeyError, AttributeError):
                raise BadJourneyRows(f"a place row's info is not a place: {str(text)[:60]!r}") from None
            if ifindex is None and need_ifindex:
                raise BadJourneyRows(f"place row {pid} has no 'ifindex' (version 4 hops take their device's "
                                     "ifindex from their place's row)")

    def _known(self, ids: list[int]) -> list[Place]:
        return [self.places.get(int(p), UNKNOWN_PLACE) for p in ids]

    def _runs(self, batch: pa.RecordBatch) -> list[tuple[bool, pa.RecordBatch | pa.Table]]:
        if "kind" not in batch.schema.names:
            raise BadJourneyRows("no 'kind' column")
        kind = batch.column("kind")
        kinds = pc.fill_null(kind.cast(pa.string()) if pa.types.is_dictionary(kind.type) else kind, "")
        is_place = pc.equal(kinds, "place")
        if pc.any(is_place).as_py():  # places first: a version 4 batch's hops take their ifindex from them
            if "info" not in batch.schema.names:
                raise BadJourneyRows("place rows but no 'info' column")
            self._read_places(batch.filter(is_place).column("info").to_pylist(), _hops_need_ifindex(batch))
        offset = None if "time" in batch.schema.names else ktime_offset(self.ktime_offset_ns)
        # a stored time missing on a row (damaged): computed from this file's offset, as version 4's
        batch = with_missing_time(conform(batch, offset, self._place_ifindex()), self.ktime_offset_ns)
        # Runs of journey rows and of other rows, in file order (a container
        # row stays between the packets before and after it); places out.
        journey = pc.equal(kinds, "journey").to_numpy(zero_copy_only=False)
        kept = ~is_place.to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(kept)
        cuts = np.flatnonzero(np.diff(journey[rows].astype(np.int8))) + 1
        out = []
        for run in np.split(rows, cuts) if len(rows) else []:
            if len(run) == batch.num_rows:
                part = batch
            elif run[-1] - run[0] + 1 == len(run):  # contiguous (place rows lead a batch): a slice, no copy
                part = batch.slice(int(run[0]), len(run))
            else:
                part = batch.take(pa.array(run))
            if journey[run[0]]:
                out.append((True, part))
            else:
                out.append((False, pa.Table.from_batches([events.conform(part, events.CAPTURE_SCHEMA)])))
        return out

    @staticmethod
    def _sightings(rows: pa.RecordBatch | pa.Table, places_of) -> pa.Table:
        """Sighting rows (CAPTURE_SCHEMA) of journey rows; ``places_of(ids)``
        names their hops' places."""
        sightings, place, rec = _laid_out(rows)
        # wall clock minus ktime, per row: in arrays, wrapping (as the time
        # was computed), not a scalar's overflow warning; 0 without either
        offset = numbers_of(rows.column("time").cast(pa.int64())) - numbers_of(rows.column("ktime_ns")).astype(np.int64)
        reasons = rows.column("drop_reason")
        if isinstance(reasons, pa.ChunkedArray):
            reasons = reasons.combine_chunks()
        names = reasons.dictionary.to_pylist() if pa.types.is_dictionary(reasons.type) else []
        ctx = DecodeContext(host_netns=0, drop_reasons=dict(enumerate(names)),
                            boot_offset_ns=int(offset[0]) if len(offset) else 0)
        # Place ids are small numbers: their distinct values by counting, not
        # sorting (a damaged file's huge ids: sorted after all).
        if len(place) and int(place.max()) < 1 << 20:
            present = np.flatnonzero(np.bincount(place))
            position = np.zeros(int(present[-1]) + 1, np.int64)
            position[present] = np.arange(len(present))
            inverse = position[place]
        else:
            present, inverse = np.unique(place, return_inverse=True)
        known = places_of(present.tolist())
        table = decode(sightings, ctx, places=(known, inverse))
        if len(offset) and (offset != offset[0]).any():
            # rows of several recordings (journey_sightings takes several
            # files' rows; the packet window hands the analysis one
            # recording's, so from the readers only a damaged file's rows
            # disagree): each sighting on its own row's clock, not the first's
            time = numbers_of(table.column("ktime_ns")).astype(np.int64) + offset[rec]
            i = table.schema.get_field_index("time")
            table = table.set_column(i, table.schema.field(i), pa.array(time, pa.int64()).cast(table.schema.field(i).type))
        n = table.num_rows
        kind = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["event"]))
        return table.append_column(events.CAPTURE_SCHEMA.field("kind"), kind).append_column(
            events.CAPTURE_SCHEMA.field("info"), pa.nulls(n, pa.string()))


def journey_sightings(rows: pa.Table, registry: PlaceRegistry) -> pa.Table:
    """Sighting rows (CAPTURE_SCHEMA) of journey rows whose places are
    ``registry`` ids (JourneyBatch rows, one file's or several files')."""
    if not rows.num_rows:
        return events.CAPTURE_SCHEMA.empty_table()
    if isinstance(rows, pa.Table):
        rows = rows.combine_chunks().to_batches()[0]
    return JourneyRowReader._sightings(rows, registry.lookup)


def _laid_out(rows: pa.RecordBatch) -> tuple[Sightings, np.ndarray, np.ndarray]:
    """`journey` rows -> their sighting rows (expand.lay_out, as live
    records), the place id of each, and the row each came from."""
    n = rows.num_rows
    hop_lists, tuple_lists = rows.column("hops"), rows.column("tuples")
    n_hops = np.minimum(pc.fill_null(pc.list_value_length(hop_lists), 0).to_numpy(zero_copy_only=False), events.MAX_HOPS)
    n_tuples = np.minimum(pc.fill_null(pc.list_value_length(tuple_lists), 0).to_numpy(zero_copy_only=False),
                          events.MAX_TUPLES).astype(np.int64)
    hops = _flat(hop_lists, n_hops)
    if not len(hops):
        return empty(), np.zeros(0, np.int64), np.zeros(0, np.int64)
    rec = np.repeat(np.arange(n), n_hops)
    hook = numbers_of(hops.field("hook")).astype(np.uint8)
    stage = numbers_of(hops.field("nat_stage")).astype(np.uint8)
    flags = numbers_of(hops.field("flags")).astype(np.uint8)
    code = (hook & 0x0F) | ((stage & 0x03) << events.HOP_STAGE_SHIFT) \
        | np.where(flags & events.HOP_FLAG_IN_CONTAINER_NS, events.HOP_IN_CT_BIT, 0).astype(np.uint8) \
        | np.where(flags & events.HOP_FLAG_NEW_PACKET, _NEW_PACKET_BIT, 0).astype(np.uint8)
    # A hop's addresses: its tuple among its row's (a tuple index past them, or no tuples: zeros).
    tuples = _flat(tuple_lists, n_tuples)
    numbers = [np.concatenate((_address_rows(tuples.field(f.name)), np.zeros((1, 16), np.uint8))) if f.ctype == "addr"
               else np.append(numbers_of(tuples.field(f.name)), 0) for f in events.TUPLE_FIELDS]
    first_tuple = np.concatenate(([0], np.cumsum(n_tuples)[:-1]))
    t_idx = numbers_of(hops.field("tuple")).astype(np.int64)
    at = np.where(t_idx < n_tuples[rec], first_tuple[rec] + t_idx, len(numbers[0]) - 1)
    addresses = tuple(column[at] for column in numbers)

    fields = {name: numbers_of(rows.column(name)) for name in _HEADER}
    fields["first_ktime"] = numbers_of(rows.column("ktime_ns"))
    fields["last_ktime"] = numbers_of(rows.column("last_ktime_ns"))
    fields["end"] = _indices(rows.column("end"), events.JOURNEY_ENDS)
    fields["direction"] = _indices(rows.column("direction"), events.DIRECTIONS)
    fields["protocol"] = _indices(rows.column("protocol"), None,
                                  lambda name: events.PROTOCOL_NUMBERS.get(name) or _int(name))
    reasons = rows.column("drop_reason")  # its dictionary's positions are the codes the reader's context names
    fields["drop_reason"] = (pc.fill_null(reasons.indices, 0).to_numpy(zero_copy_only=False)
                             if pa.types.is_dictionary(reasons.type) else np.zeros(n, np.int64))
    sightings = lay_out(n_hops.astype(np.int64), rec, code, numbers_of(hops.field("dt_ns")), numbers_of(hops.field("ifindex")),
                        numbers_of(hops.field("ttl")), addresses, fields.__getitem__)
    return sightings, numbers_of(hops.field("place")).astype(np.int64), rec


def _flat(lists: pa.Array, kept: np.ndarray) -> pa.StructArray:
    """A list column's values, at most ``kept`` per row (slices and nulls honoured)."""
    lists = pc.fill_null(lists, pa.scalar([], lists.type)) if lists.null_count else lists
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    values = lists.flatten()
    if (lengths != kept).any():  # a hand-made capture with more hops than a record holds
        rec, i = positions(lengths)
        values = values.filter(pa.array(i < kept[rec]))
    return values


def _indices(column: pa.Array, names, convert=None) -> np.ndarray:
    """A dictionary<string> column -> the codes its names stand for
    (position in ``names``, or ``convert(name)``); unknown or null: 0."""
    if not pa.types.is_dictionary(column.type):
        column = column.cast(pa.string()).dictionary_encode()
    values = column.dictionary.to_pylist()
    lut = np.array([(convert(v) if convert else (names.index(v) if v in names else 0)) or 0 for v in values] or [0],
                   np.int64)
    return lut[pc.fill_null(column.indices, 0).to_numpy(zero_copy_only=False)]


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0
