"""The report's hop segments counted for a chunk (tracer/paths.py): each
segment's latency buckets (3 significant digits) and, per time bin, its
coarse ones (1 digit), from one array of hop latencies.

Counted for every segment at once (a bincount over segment x bucket), not
segment by segment after a sort. When the chunk spans few time bins (the
usual: a chunk is a small part of the capture's time), one bincount over
segment x time bin x fine bucket gives both: a coarse bucket is a run of
fine ones (both are power-of-two ranges aligned on their width), summed with
one reduceat instead of a second count over every hop. Only the fine buckets
the chunk's latencies fall in are counted (a few thousand of 34,816).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from tracer.hdr import Histogram

_MAX_GRID = 1 << 23  # counts per chunk counted at once for the segments' histograms (8 B each)
_MAX_GRID_BY_BIN = 1 << 21  # the same, counted by time bin too


def segment_counts(ns: int, scode: np.ndarray, dt: np.ndarray, seg_bin: np.ndarray | None,
                   only_bin: int) -> tuple[Iterable, int, int]:
    """(per segment: (latency counts from bucket ``lo3`` on, time bin x coarse
    counts from bin ``lo_bin`` on), lo_bin, lo3) of hops with latencies ``dt``
    in segments ``scode`` (0..ns-1) and time bins ``seg_bin`` (None: all in
    ``only_bin``)."""
    fine, coarse = Histogram(3), Histogram(1)
    w3, w1 = len(fine.counts), len(coarse.counts)
    idx3 = fine.index(dt)
    lo_bin = only_bin if seg_bin is None else int(seg_bin.min())
    nbins = 1 if seg_bin is None else int(seg_bin.max()) - lo_bin + 1
    lut = fine.coarser_index(coarse)
    lo3 = int(idx3.min())
    w = int(idx3.max()) - lo3 + 1  # the fine buckets this chunk's latencies fall in
    sub = lut[lo3: lo3 + w]
    if ns * nbins * w <= _MAX_GRID_BY_BIN and bool(np.all(sub[1:] >= sub[:-1])):
        key = scode * nbins
        if seg_bin is not None:
            key += seg_bin
            key -= lo_bin
        key *= w
        key += idx3
        key -= lo3
        by_bin = np.bincount(key, minlength=ns * nbins * w).reshape(ns, nbins, w)
        lat = by_bin[:, 0] if nbins == 1 else by_bin.sum(axis=1)
        first = np.flatnonzero(np.r_[True, sub[1:] != sub[:-1]])  # each run of fine buckets in one coarse one
        grids = np.zeros((ns, nbins, w1), dtype=by_bin.dtype)
        grids[:, :, sub[first]] = np.add.reduceat(by_bin, first, axis=2)
        return ((lat[i], grids[i]) for i in range(ns)), lo_bin, lo3
    if seg_bin is None:
        seg_bin = np.full(len(dt), only_bin, dtype=np.int64)
    idx1 = lut[idx3]
    if ns * max(w, nbins * w1) <= _MAX_GRID:
        key = scode * w
        key += idx3
        key -= lo3
        lat = np.bincount(key, minlength=ns * w).reshape(ns, w)
        grids = np.bincount((scode * nbins + (seg_bin - lo_bin)) * w1 + idx1,
                            minlength=ns * nbins * w1).reshape(ns, nbins, w1)
        return ((lat[i], grids[i]) for i in range(ns)), lo_bin, lo3
    # Many segments or time bins in one chunk: one segment at a time.
    by_seg = np.argsort(scode, kind="stable")
    sb = np.r_[0, np.cumsum(np.bincount(scode, minlength=ns))]

    def one(i: int) -> tuple[np.ndarray, np.ndarray]:
        sel = by_seg[sb[i]: sb[i + 1]]
        return (np.bincount(idx3[sel], minlength=w3),
                np.bincount((seg_bin[sel] - lo_bin) * w1 + idx1[sel], minlength=nbins * w1).reshape(nbins, w1))
    return (one(i) for i in range(ns)), lo_bin, 0
