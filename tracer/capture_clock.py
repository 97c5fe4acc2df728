"""A capture's clock: each row's wall-clock `time` is its `ktime_ns` plus
the file's `ktime_offset_ns` metadata (wall clock minus ktime at the start
of the recording). Version 4 stores no `time` column at all; earlier
versions store it, and a damaged file may lack it on a row. The metadata
value is checked only where a file needs it (``ktime_offset``), and each
file's rows take their own file's offset: two recordings read together
keep their own clocks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.errors import TracerError

OFFSET_KEY = f"{events.META_PREFIX}ktime_offset_ns"


class BadClock(events.ColumnError, TracerError):
    """A capture's ktime_offset_ns that is missing where needed, not an
    integer or out of range: a column error to the readers (which name the
    file), and one line wherever else it surfaces (a TracerError)."""


def ktime_offset(text: str | int | None) -> int:
    """The metadata's ktime_offset_ns (wall clock minus ktime, a signed
    64-bit count of ns) as a number; BadClock saying what is wrong with it
    otherwise (a version 4 file cannot be read without it)."""
    if text is None:
        raise BadClock(f"no 'time' column, and no {OFFSET_KEY} metadata to compute it")
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise BadClock(f"{OFFSET_KEY} is not an integer: {str(text)[:40]!r}") from None
    if not -(1 << 63) <= value < 1 << 63:
        raise BadClock(f"{OFFSET_KEY} is out of range (a signed 64-bit count of ns): {str(text)[:40]!r}")
    return value


def _column(batch, name: str) -> pa.Array:
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _wall(ktime: pa.Array, offset: int) -> pa.Array:
    """ktime + offset as int64, null where ktime is. The sum wraps in 64 bits
    as the writers' did (journey_layout.py, and native/journey_layout.c), so
    a damaged ktime_ns reads as version 3 read it, not as an overflow."""
    numbers = pc.fill_null(ktime, 0) if ktime.null_count else ktime
    wall = numbers.to_numpy(zero_copy_only=False).astype(np.int64) + np.int64(offset)
    nulls = ktime.is_null().to_numpy(zero_copy_only=False) if ktime.null_count else None
    return pa.array(wall, pa.int64(), mask=nulls)


def with_time(batch, ktime_offset_ns: int, time_field: pa.Field):
    """``batch`` (a RecordBatch or a Table) with a `time` column appended:
    ktime_ns + the offset, as every row's time was stored before version 4
    (null where ktime_ns is)."""
    ktime = _column(batch, "ktime_ns")
    if not pa.types.is_integer(ktime.type):
        raise BadClock(f"column 'ktime_ns' is {ktime.type}, not uint64")
    time = _wall(ktime, ktime_offset_ns).cast(time_field.type)
    if isinstance(batch, pa.Table):
        return batch.append_column(time_field, time)
    return pa.RecordBatch.from_arrays([*batch.columns, time], names=[*batch.schema.names, "time"])


def with_missing_time(batch, ktime_offset_text: str | None):
    """``batch`` (conformed: `time` a timestamp, `ktime_ns` an integer) with
    the `time` of a row that has a ktime_ns but no time (a damaged version
    1 to 3 file) computed as version 4 computes every row's, from its own
    file's ``ktime_offset_text``: checked only when such a row is there. A
    version 1 file need not say its offset (the writer's is optional
    there): without one, the plain ktime, as analysis_rows.wall_ns falls
    back to, so such a file reads as it always did."""
    names = batch.schema.names
    if "time" not in names or "ktime_ns" not in names:
        return batch
    time = _column(batch, "time")
    if not time.null_count:
        return batch
    ktime = _column(batch, "ktime_ns")
    if not pc.any(pc.and_(time.is_null(), ktime.is_valid())).as_py():
        return batch
    offset = 0 if ktime_offset_text is None else ktime_offset(ktime_offset_text)
    filled = pc.coalesce(time.cast(pa.int64()), _wall(ktime, offset)).cast(time.type)
    i = names.index("time")
    if isinstance(batch, pa.Table):
        return batch.set_column(i, batch.schema.field(i), filled)
    return pa.RecordBatch.from_arrays([filled if j == i else batch.column(j) for j in range(batch.num_columns)],
                                      schema=batch.schema)
