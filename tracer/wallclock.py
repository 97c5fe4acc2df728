"""Absolute time of a journey, as text: RFC 3339 with nanoseconds in the
journey JSON (`time`, UTC), the time of day to the microsecond on journey
headers (UTC, as tcpdump's default line starts). 0 means unknown. Formatted
by Arrow for many journeys at once; the one-journey forms call the same
kernels, so both paths give the same text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_TS = pa.timestamp("ns", tz="UTC")


def _timestamps(ns) -> pa.Array:
    ns = np.asarray(ns, np.int64)
    return pa.array(ns, _TS, mask=ns == 0)


def rfc3339_array(ns) -> pa.Array:
    """'2026-11-30T02:07:28.123456789Z' per value (null where 0)."""
    return pc.strftime(_timestamps(ns), format="%Y-%m-%dT%H:%M:%SZ")


def clock_array(ns) -> pa.Array:
    """'02:07:28.123456' per value (null where 0)."""
    return pc.utf8_slice_codeunits(pc.strftime(_timestamps(ns), format="%H:%M:%S"), 0, 15)


def rfc3339(ns: int | None) -> str | None:
    return rfc3339_array([ns or 0])[0].as_py()


def clock(ns: int | None) -> str | None:
    return clock_array([ns or 0])[0].as_py()
