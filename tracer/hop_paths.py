"""The distinct hop paths of one record batch of a capture: ``BatchPaths``.

A hop's path is all of it but its time: hook, NAT stage, flags, TTL, tuple
index and place id (events.PATH_HOP_TYPE). Most packets of a batch share
their whole list of them with many others (the lab's HTTP: a few dozen
paths a batch of ~30,000 rows), so since version 5 a batch stores each
distinct list once, as the values of the `path` dictionary column, and a
row its index (docs/capture-format.md). The layout numbers each pass's
paths as it lays the records out (native/journey_layout.c: by their place
index); this gives them their batch's numbers, by what they hold once the
places have ids, a few keys a pass.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tracer import events
from tracer.arrow_columns import numeric_array

# a path's hop fields, as PATH_HOP_TYPE names them (journey_layout.path_fields reads them
# off the layout's words), and the place id after
HOP_FIELDS = ("hook", "nat_stage", "flags", "ttl", "tuple")
_DTYPES = {f.name: f.type.to_pandas_dtype() for f in events.PATH_HOP_TYPE}


class BatchPaths:
    """The paths of one batch, numbered from 0 in order of first appearance."""

    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._parts: list[list[np.ndarray]] = []  # per path, its columns (HOP_FIELDS, then place)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self, hops: dict[str, np.ndarray], places: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The batch's number (int32) of each path held by ``hops``
        [start, end): its hops' HOP_FIELDS, and their place ids ``places``."""
        out = np.empty(len(starts), np.int32)
        for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            parts = [hops[name][a:b] for name in HOP_FIELDS]
            parts.append(places[a:b].astype(np.uint32, copy=False))
            key = b"".join(part.tobytes() for part in parts)
            number = self._ids.get(key)
            if number is None:
                number = self._ids[key] = len(self._parts)
                self._parts.append(parts)
            out[i] = number
        return out

    def array(self) -> pa.Array:
        """The paths as list<PATH_HOP_TYPE>, in their numbers' order."""
        sizes = np.array([len(parts[0]) for parts in self._parts], np.int32)
        offsets = np.zeros(len(sizes) + 1, np.int32)
        np.cumsum(sizes, out=offsets[1:])
        columns = []
        for i, f in enumerate(events.PATH_HOP_TYPE):
            values = [parts[i] for parts in self._parts]
            column = np.concatenate(values) if values else np.zeros(0)
            columns.append(numeric_array(column.astype(_DTYPES[f.name], copy=False)))
        hops = pa.StructArray.from_arrays(columns, fields=list(events.PATH_HOP_TYPE))
        return pa.ListArray.from_arrays(numeric_array(offsets), hops)
