"""Exact percentiles of hop-segment latencies over any number of segments, in
bounded memory.

Every latency is counted, as it streams past, in a histogram per segment
whose buckets are 1/64 of a power of two wide (numpy ``bincount``: no sort),
and stored with its bucket in flat files (tracer.aggregate.Store; on disk).
At the end the histogram says in which bucket each wanted rank lies and how
far into it; one scan of the store fetches just the latencies of those few
buckets, and sorting them gives the exact values. The result is numpy's
default ('linear') quantile of all the latencies, as if they had all been in
memory. Plot samples come from the same histograms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SUB = 64  # buckets per power of two
_OFFSET = 4096  # bucket + offset >= 0: |bucket| <= 64 * 63
_SPAN = 2 * _OFFSET


def _buckets(dt: np.ndarray) -> np.ndarray:
    a = np.abs(dt).astype(np.float64)
    return (np.sign(dt) * np.floor(np.log2(a + 1.0) * SUB)).astype(np.int64)


# The buckets of 0 .. 2^20 - 1 ns, computed once: a gather instead of a log2
# per latency (hop latencies are microseconds), exactly the same values.
_SMALL = _buckets(np.arange(1 << 20, dtype=np.int64)).astype(np.int16)


def buckets(dt: np.ndarray) -> np.ndarray:
    """Order-preserving bucket of each latency (ns, may be negative: a drop
    row is put last whatever its time)."""
    dt = np.asarray(dt, np.int64)
    if not len(dt) or (int(dt.min()) >= 0 and int(dt.max()) < len(_SMALL)):
        return _SMALL[dt].astype(np.int64)
    inside = (dt >= 0) & (dt < len(_SMALL))
    out = np.empty(len(dt), np.int64)
    out[inside] = _SMALL[dt[inside]]
    out[~inside] = _buckets(dt[~inside])
    return out


class SegmentLatencies:
    """Per segment (a small int, in order of first appearance): count, sum of
    positions in the journey, max, histogram; keys for the segment store."""

    def __init__(self) -> None:
        self.hist = np.zeros((0, _SPAN), np.int64)
        self.count = np.zeros(0, np.int64)
        self.pos_sum = np.zeros(0, np.float64)
        self.max = np.zeros(0, np.int64)

    def add(self, seg: np.ndarray, dt: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Count a chunk; returns each latency's key for the segment store (segment and bucket)."""
        n_seg = int(seg.max()) + 1 if len(seg) else 0
        if n_seg > len(self.count):
            grow = n_seg - len(self.count)
            self.hist = np.vstack([self.hist, np.zeros((grow, _SPAN), np.int64)])
            self.count = np.append(self.count, np.zeros(grow, np.int64))
            self.pos_sum = np.append(self.pos_sum, np.zeros(grow))
            self.max = np.append(self.max, np.full(grow, np.iinfo(np.int64).min))
        key = seg * _SPAN
        key += buckets(dt)
        key += _OFFSET
        if len(key):
            counted = np.bincount(key, minlength=self.hist.size).reshape(self.hist.shape)
            self.hist += counted
            self.count += counted.sum(axis=1)
            self.pos_sum += np.bincount(seg, weights=pos, minlength=len(self.count))
            # Only latencies above their segment's max so far can move it:
            # after the first chunk, a handful (ufunc.at is slow per element).
            above = np.flatnonzero(dt > self.max[seg])
            np.maximum.at(self.max, seg[above], dt[above])
        return key

    def quantiles(self, fetch: Any, qs: tuple[float, ...]) -> dict[int, dict[float, float]]:
        """Exact quantiles per segment. ``fetch(keys)`` returns (key, dt)
        arrays of every stored latency whose key is in ``keys``."""
        wanted: dict[int, list[tuple[float, int, int]]] = {}  # key -> (q, rank within bucket, lo/hi)
        cum = np.cumsum(self.hist, axis=1)
        for s in range(len(self.count)):
            n = int(self.count[s])
            for q in qs:
                pos = q * (n - 1)
                for which, rank in enumerate((int(np.floor(pos)), int(np.ceil(pos)))):
                    b = int(np.searchsorted(cum[s], rank, side="right"))
                    before = int(cum[s][b - 1]) if b else 0
                    wanted.setdefault(s * _SPAN + b, []).append((q, rank - before, s * 2 + which))
        keys, values = fetch(sorted(wanted))
        out: dict[int, dict[float, list]] = {s: {q: [0, 0] for q in qs} for s in range(len(self.count))}
        order = np.lexsort((values, keys))
        keys, values = keys[order], values[order]
        starts = np.searchsorted(keys, sorted(wanted))
        for start, key in zip(starts.tolist(), sorted(wanted)):
            for q, offset, slot in wanted[key]:
                out[slot // 2][q][slot % 2] = int(values[start + offset])
        result = {}
        for s in range(len(self.count)):
            n = int(self.count[s])
            result[s] = {}
            for q in qs:
                pos = q * (n - 1)
                lo, hi = out[s][q]
                result[s][q] = float(lo) + (float(hi) - float(lo)) * (pos - np.floor(pos))
        return result

    def sample(self, s: int, cap: int, fetch_all: Any, rng: np.random.Generator) -> np.ndarray:
        """Latencies of segment ``s`` for a plot, sorted: all of them up to
        ``cap`` (``fetch_all(s)``), else ``cap`` drawn from its histogram
        (each at its bucket's lower edge)."""
        if self.count[s] <= cap:
            return np.sort(fetch_all(s))
        counts = self.hist[s]
        picks = rng.choice(len(counts), size=cap, p=counts / counts.sum())
        b = picks - _OFFSET
        return np.sort(np.sign(b) * (np.exp2(np.abs(b) / SUB) - 1).astype(np.int64))

    def key_range(self, s: int) -> tuple[int, int]:
        return s * _SPAN, (s + 1) * _SPAN - 1
