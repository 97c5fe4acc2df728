"""Absolute time of a journey, as text: RFC 3339 with nanoseconds in the
journey JSON (`time`, UTC), the time of day to the microsecond on journey
headers (UTC, as tcpdump's default line starts). 0 means unknown. Formatted
by Arrow for many journeys at once; the one-journey forms call the same
kernels, so both paths give the same text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SECONDS = pa.timestamp("s", tz="UTC")
_NS_PER_S = 1_000_000_000


def _formatted(ns, format: str, digits: int, suffix: str) -> pa.Array:
    """strftime(format) of each value's whole second, then its fraction to
    ``digits`` digits and ``suffix`` (null where 0): split_times' pieces
    joined by Arrow."""
    heads, which, fractions = split_times(ns, format, digits)
    text = pc.binary_join_element_wise(pa.array(heads, pa.string()).take(pa.array(which)), fractions, suffix, "")
    unknown = np.asarray(ns, np.int64) == 0
    return pc.if_else(pa.array(unknown), pa.nulls(len(unknown), pa.string()), text) if unknown.any() else text


def rfc3339_array(ns) -> pa.Array:
    """'2026-11-30T02:07:28.123456789Z' per value (null where 0)."""
    return _formatted(ns, "%Y-%m-%dT%H:%M:%S.", 9, "Z")


def clock_array(ns) -> pa.Array:
    """'02:07:28.123456' per value (null where 0)."""
    return _formatted(ns, "%H:%M:%S.", 6, "")


def split_times(ns, format: str, digits: int) -> tuple[list[str], np.ndarray, pa.StringArray]:
    """Times as pieces, for text laid out by index: strftime(format) of each
    distinct whole second, each value's index into them, and each value's
    fraction as ``digits`` zero-padded digits (a fixed width: numpy writes
    the digits, no formatting kernel per value). A batch of journeys spans a
    few distinct seconds: the calendar formatting (Arrow's strftime, about
    0.5 µs a value) runs once per second."""
    ns = np.asarray(ns, np.int64)
    seconds, fraction = np.divmod(ns, _NS_PER_S)
    distinct, which = np.unique(seconds, return_inverse=True)
    heads = pc.strftime(pa.array(distinct, _SECONDS), format=format).to_pylist()
    rest = fraction // 10 ** (9 - digits)
    chars = np.empty((len(ns), digits), np.uint8)
    for col in range(digits - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        chars[:, col] = digit + 48
    offsets = np.arange(0, digits * (len(ns) + 1), digits, dtype=np.int32)
    return heads, which.reshape(-1), pa.StringArray.from_buffers(len(ns), pa.py_buffer(offsets), pa.py_buffer(chars))


def rfc3339(ns: int | None) -> str | None:
    return rfc3339_array([ns or 0])[0].as_py()


def clock(ns: int | None) -> str | None:
    return clock_array([ns or 0])[0].as_py()
