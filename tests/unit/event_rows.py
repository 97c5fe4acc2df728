"""Default EVENT_SCHEMA rows for synthetic test data: integers 0, text and
time null (derived from the schema, so a new column needs no edit here),
plus the values every lab packet shares."""

from __future__ import annotations

import pyarrow as pa

from tracer.events import EVENT_SCHEMA

HOST_NS, CONTAINER_NS = 4026531840, 4026532500


def event_defaults(**overrides) -> dict:
    row = {f.name: 0 if pa.types.is_integer(f.type) else None for f in EVENT_SCHEMA}
    row.update(netns=HOST_NS, protocol="tcp", ttl=64, length=60)
    row.update(overrides)
    return row
