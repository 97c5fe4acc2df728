"""Absolute time of a journey, as text: RFC 3339 with nanoseconds in the
journey JSON (`time`, UTC), the time of day to the microsecond on journey
headers (UTC, as tcpdump's default line starts). 0 means unknown. Formatted
for many journeys at once (the calendar by Arrow once per distinct second,
digits by numpy); the one-journey forms call the same functions, so both
paths give the same text."""

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
    """'02:07:28.123456' per value (null where 0). A time of day in UTC
    needs no calendar: every value is 15 characters whose digits numpy
    writes all at once (Arrow's strftime and a cast per value cost ~0.3 µs a
    journey on `trace`'s headers)."""
    ns = np.asarray(ns, np.int64).reshape(-1)
    n = len(ns)
    seconds, fraction = np.divmod(ns, _NS_PER_S)
    hours, rest = np.divmod(seconds % 86_400, 3_600)
    minutes, secs = np.divmod(rest, 60)
    chars = np.empty((n, 15), np.uint8)
    chars[:, [2, 5]] = ord(":")
    chars[:, 8] = ord(".")
    for col, value, digits in ((0, hours, 2), (3, minutes, 2), (6, secs, 2), (9, fraction // 1_000, 6)):
        _write_digits(chars, col, value, digits)
    offsets = np.arange(0, 15 * (n + 1), 15, dtype=np.int32)
    unknown = ns == 0
    if not unknown.any():
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))
    valid = pa.py_buffer(np.packbits(~unknown, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars), valid, int(unknown.sum()))


def _write_digits(chars: np.ndarray, col: int, value: np.ndarray, digits: int) -> None:
    """``value`` as ``digits`` zero-padded decimal digits into columns col.."""
    for c in range(col + digits - 1, col - 1, -1):
        value, digit = np.divmod(value, 10)
        chars[:, c] = digit + 48


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
    chars = np.empty((len(ns), digits), np.uint8)
    _write_digits(chars, 0, fraction // 10 ** (9 - digits), digits)
    offsets = np.arange(0, digits * (len(ns) + 1), digits, dtype=np.int32)
    return heads, which.reshape(-1), pa.StringArray.from_buffers(len(ns), pa.py_buffer(offsets), pa.py_buffer(chars))


def rfc3339(ns: int | None) -> str | None:
    return rfc3339_array([ns or 0])[0].as_py()


def clock(ns: int | None) -> str | None:
    return clock_array([ns or 0])[0].as_py()
