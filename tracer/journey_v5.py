"""Version 5 journey rows read back as version 4 stored them.

Since version 5 a capture stores once a batch what many rows share: each
row's hop path (a hop but for its time) and its tuple list, as dictionaries
of lists, a row's `hops` holding only their times; and a row's last
sighting as its gap after its last hop (events.JOURNEY_FILE_SCHEMA,
docs/capture-format.md). ``as_version_4`` puts a batch back as version 4
stored it, from where every reader goes on as before
(journey_capture.conform).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.arrow_columns import numbers_of, with_column
from tracer.ragged import ranges


class BadVersion5Rows(events.ColumnError):
    """A version 5 batch whose paths or tuple lists are not its rows'."""


def has_dt_planes(hops_type: pa.DataType) -> bool:
    """Whether a `hops` type stores dt_ns as its bytes (events.DT_PLANES: since version 3)."""
    value = getattr(hops_type, "value_type", None)
    return value is not None and pa.types.is_struct(value) \
        and all(value.get_field_index(name) >= 0 for name in events.DT_PLANES)


def dt_ns_of(values: pa.StructArray) -> np.ndarray:
    """Hops' dt_ns (uint32) from their bytes (events.DT_PLANES, least
    significant first); a null byte reads as 0."""
    dt = np.zeros(len(values), np.uint32)
    for i, name in enumerate(events.DT_PLANES):
        dt |= numbers_of(values.field(name)).astype(np.uint32) << np.uint32(8 * i)
    return dt


def as_version_4(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A version 5 batch as version 4 stored it (``_with_paths``,
    ``_listed_tuples``); a batch of an earlier version as it is."""
    if "path" in batch.schema.names:
        batch = _with_paths(batch)
    if "tuples" in batch.schema.names and pa.types.is_dictionary(batch.schema.field("tuples").type):
        batch = with_column(batch, "tuples", _listed_tuples)
    return batch


def _with_paths(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A version 5 batch as version 4 stored it: each row's hops (their
    dt_ns bytes) joined with its path's (the `path` dictionary's list at
    the row's index, as long as its hops), `path` dropped; `last_ktime_ns`
    from `last_gap_ns` (ktime_ns + the last hop's dt_ns + the gap, wrapping
    as uint64, as written)."""
    names = batch.schema.names
    if "hops" not in names:
        raise BadVersion5Rows("no 'hops' column")
    hops, path = batch.column("hops"), batch.column("path")
    if not has_dt_planes(hops.type):
        raise BadVersion5Rows(f"column 'hops' is {hops.type}, not {pa.list_(events.DT_HOP_TYPE)}")
    if not pa.types.is_dictionary(path.type) or path.type.value_type != pa.list_(events.PATH_HOP_TYPE):
        raise BadVersion5Rows(f"column 'path' is {path.type}, not {events.PATH_TYPE}")
    offsets = hops.offsets.to_numpy().astype(np.int64)  # the list's own (a slice's too), into hops.values
    sizes = np.diff(offsets)
    listed = path.dictionary
    list_offsets = listed.offsets.to_numpy().astype(np.int64)  # into listed.values
    # a row without its path or its hops has neither (what is missing is missing)
    has_path = path.is_valid().to_numpy(zero_copy_only=False) & hops.is_valid().to_numpy(zero_copy_only=False)
    sizes = np.where(has_path, sizes, 0)
    index = np.where(has_path, numbers_of(path.indices).astype(np.int64), 0)
    if has_path.any() and (index.min() < 0 or index.max() >= len(listed)):
        raise BadVersion5Rows("a row's path is not in its batch's paths")
    starts = np.where(has_path, list_offsets[index] if len(listed) else 0, 0)
    path_sizes = np.where(has_path, list_offsets[index + 1] - starts if len(listed) else 0, 0)
    if (path_sizes != sizes).any():
        raise BadVersion5Rows("a row's path and hops differ in length")
    # each hop's path fields and its times, where they are in the paths' values and the hops'
    path_hops = listed.values.take(pa.array(ranges(starts, sizes), pa.int64()))
    dts = hops.values.take(pa.array(ranges(offsets[:-1], sizes), pa.int64()))
    values = pa.StructArray.from_arrays(
        [dts.field(name) for name in events.DT_PLANES] + [path_hops.field(f.name) for f in events.PATH_HOP_TYPE],
        fields=list(events.HOP_FILE_TYPE_V4))
    rebased = np.zeros(len(offsets), np.int64)
    np.cumsum(sizes, out=rebased[1:])
    joined = pa.ListArray.from_arrays(pa.array(rebased, pa.int32()), values,
                                      mask=pa.array(~has_path) if not has_path.all() else None)
    columns = {"hops": joined}
    if "last_gap_ns" in names:
        columns["last_ktime_ns"] = _last_ktime(batch.column("ktime_ns") if "ktime_ns" in names else None,
                                               batch.column("last_gap_ns"), dts, rebased)
    out_names = [n for n in names if n not in ("path", "last_gap_ns")] + \
        (["last_ktime_ns"] if "last_ktime_ns" in columns and "last_ktime_ns" not in names else [])
    return pa.RecordBatch.from_arrays([columns[n] if n in columns else batch.column(n) for n in out_names],
                                      names=out_names)


def _listed_tuples(column: pa.DictionaryArray) -> pa.Array:
    """Version 5's tuples (a dictionary of the batch's distinct lists) as
    each row's list."""
    if not pa.types.is_list(column.type.value_type):
        raise BadVersion5Rows(f"column 'tuples' is {column.type}, not {events.TUPLES_TYPE}")
    index = column.indices
    if index.null_count < len(index):
        low, high = pc.min_max(index).values()
        if low.as_py() < 0 or high.as_py() >= len(column.dictionary):
            raise BadVersion5Rows("a row's tuples are not in its batch's tuple lists")
    return column.dictionary.take(index)


def _last_ktime(ktime: pa.Array | None, gap: pa.Array, dts: pa.StructArray, offsets: np.ndarray) -> pa.Array:
    """last_ktime_ns = ktime_ns + the last hop's dt_ns + last_gap_ns
    (wrapping); null where the gap, ktime or hops are missing."""
    sizes = np.diff(offsets)
    valid = gap.is_valid().to_numpy(zero_copy_only=False) & (sizes > 0)
    if ktime is not None:
        valid &= ktime.is_valid().to_numpy(zero_copy_only=False)
    last = np.minimum(np.maximum(offsets[1:] - 1, 0), max(len(dts) - 1, 0))
    dt = dt_ns_of(dts.take(pa.array(last))).astype(np.uint64) if len(dts) else np.zeros(len(sizes), np.uint64)
    base = numbers_of(ktime).astype(np.uint64) if ktime is not None else np.zeros(len(sizes), np.uint64)
    with np.errstate(over="ignore"):
        value = base + dt + numbers_of(gap).astype(np.uint64)
    return pa.array(value, pa.uint64(), mask=~valid)
