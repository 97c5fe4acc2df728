"""Durations as people read them: the one place a nanosecond count becomes
text (trace's hop offsets, latency's percentiles, stats' and report's µs
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


def micros_text(ns: float | None) -> str:
    """Microseconds for a column headed µs: '1,234.5'; '-' for none."""
    return "-" if ns is None else f"{ns / 1e3:,.1f}"
