"""numpy columns as Arrow arrays without a copy, for the per-pass layouts of
a live run (the capture's journey rows, decoded dictionary columns).

``pa.array(ndarray)`` is generic: each call asks whether the array is a
pandas object or a numpy masked array, and the first call of a run imports
``numpy.ma`` and pyarrow's pandas shim (~15 ms of CPU, paid inside
`record`'s first flush). A plain numeric column needs none of that: its
buffer is the Arrow array's data buffer as it is.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def numeric_array(values: np.ndarray, type: pa.DataType | None = None, mask: np.ndarray | None = None) -> pa.Array:
    """A 1-D numeric numpy column (bool excluded) as an Arrow array of
    ``type`` (numpy's own by default; same width, e.g. int64 under a
    timestamp), sharing its memory. ``mask``: True where the value is
    null (as pa.array's)."""
    values = np.ascontiguousarray(values)
    if values.ndim == 1 and values.strides[0] != values.itemsize:
        # numpy calls a one-row view contiguous whatever its stride (a field
        # of a one-row structured array, e.g. of a buffer a writer reuses):
        # its own copy, as pa.array made, not the memory of that row.
        values = values.copy()
    if not values.dtype.isnative:  # e.g. the kernel's network-order fields
        values = values.astype(values.dtype.newbyteorder("="))
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise TypeError(f"not a 1-D numeric column: {values.dtype} {values.shape}")
    if type is None:
        type = pa.from_numpy_dtype(values.dtype)
    if type.bit_width != 8 * values.dtype.itemsize:
        raise TypeError(f"{values.dtype} values are not {type}")
    validity, nulls = None, 0
    if mask is not None:
        mask = np.asarray(mask, bool)
        nulls = int(np.count_nonzero(mask))
        if nulls:
            validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
    return pa.Array.from_buffers(type, len(values), [validity, pa.py_buffer(values)], null_count=nulls)


def numbers_of(column: pa.Array) -> np.ndarray:
    """An Arrow numeric column as numpy, nulls as 0."""
    return pc.fill_null(column, 0).to_numpy(zero_copy_only=False) if column.null_count else \
        column.to_numpy(zero_copy_only=False)


def with_column(batch, name: str, convert):
    """``batch`` (a RecordBatch or a Table) with column ``name`` replaced by
    ``convert`` of it, taken whole."""
    i = batch.schema.get_field_index(name)
    col = batch.column(i)
    new = convert(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    if isinstance(batch, pa.Table):
        return batch.set_column(i, pa.field(name, new.type), new)
    return pa.RecordBatch.from_arrays([new if j == i else batch.column(j) for j in range(batch.num_columns)],
                                      names=batch.schema.names)
