"""Durations and sizes as people read them: the one place a nanosecond
count or a byte count becomes text (trace's hop offsets, latency's percentiles, stats' and report's µs
columns). render_rows formats whole columns the same way, vectorised."""

from __future__ import annotations


def duration_text(ns: float, sign: str = "", largest: str = "s") -> str:
    """'12.3µs', '1.25ms', '2.00s' (``sign`` '+': hop offsets); ``largest``
    'ms' keeps seconds in milliseconds ('2500.00ms')."""
    if ns < 1_000_000:
        return f"{sign}{ns / 1e3:.1f}µs"
    if ns < 1_000_000_000 or largest == "ms":
        return f"{sign}{ns / 1e6:.2f}ms"
    return f"{sign}{ns / 1e9:.2f}s"


def spaced_duration_text(ns: float) -> str:
    """The report's durations, unit apart: '850 ns', '2.1 µs', '21.3 ms',
    '1.20 s'; '-' for NaN (no packets)."""
    if ns != ns:
        return "-"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def seconds_text(s: float) -> str:
    """A width in seconds as people write it: '2 s', '50 ms', '500 µs'."""
    if s >= 1:
        return f"{s:g} s"
    if s >= 1e-3:
        return f"{s * 1e3:g} ms"
    return f"{s * 1e6:g} µs"


def micros_text(ns: float | None) -> str:
    """Microseconds for a column headed µs: '1,234.5'; '-' for none."""
    return "-" if ns is None else f"{ns / 1e3:,.1f}"


_SIZE_UNITS = {"kB": (1e3, ",.1f"), "MB": (1e6, ".2f")}


def size_text(size: int, unit: str = "MB", whole: bool = False) -> str:
    """Bytes in decimal units: '1.25 MB', '12,345.6 kB'; ``whole``: no
    decimals ('12,346 kB', a written report's size)."""
    scale, spec = _SIZE_UNITS[unit]
    return f"{size / scale:{',.0f' if whole else spec}} {unit}"
