"""tracer/path_segments.py: the three ways of counting a chunk's hop
segments (by time bin at once, two grids, one segment at a time) give the
same histograms, and the same as counting each segment's hops directly."""

import numpy as np
import pytest

from tracer import path_segments
from tracer.hdr import Histogram


def _direct(ns, scode, dt, seg_bin):
    out = []
    for s in range(ns):
        sel = scode == s
        lat = Histogram(3)
        lat.record(dt[sel])
        bins = {}
        for b in np.unique(seg_bin[sel]).tolist():
            h = Histogram(1)
            h.record(dt[sel & (seg_bin == b)])
            bins[b] = h.counts
        out.append((lat.counts, bins))
    return out


def _counted(ns, scode, dt, seg_bin, only_bin):
    per_segment, lo_bin, lo3 = path_segments.segment_counts(ns, scode, dt, seg_bin, only_bin)
    out = []
    for counts, grid in per_segment:
        lat = np.zeros(len(Histogram(3).counts), dtype=np.int64)
        lat[lo3: lo3 + len(counts)] += counts
        out.append((lat, {b + lo_bin: grid[b] for b in np.flatnonzero(grid.any(axis=1)).tolist()}))
    return out


@pytest.mark.parametrize("by_bin, grid", [(1 << 21, 1 << 23), (0, 1 << 23), (0, 0)])
@pytest.mark.parametrize("one_bin", [True, False])
@pytest.mark.parametrize("outliers", [True, False])
def test_every_way_counts_the_same(monkeypatch, by_bin, grid, one_bin, outliers):
    monkeypatch.setattr(path_segments, "_MAX_GRID_BY_BIN", by_bin)
    monkeypatch.setattr(path_segments, "_MAX_GRID", grid)
    rng = np.random.default_rng(7)
    n, ns = 5000, 5
    scode = rng.integers(0, ns, n)
    dt = rng.integers(0, 200_000, n)
    if outliers:  # past hdr's direct table: a wide span of buckets
        dt[:3] = [0, 5_000_000_000, 123_456_789]
    seg_bin = np.full(n, 7) if one_bin else rng.integers(3, 9, n)
    got = _counted(ns, scode, dt, None if one_bin else seg_bin, 7)
    want = _direct(ns, scode, dt, seg_bin)
    for (glat, gbins), (wlat, wbins) in zip(got, want):
        assert np.array_equal(glat, wlat)
        assert gbins.keys() == wbins.keys()
        for b in wbins:
            assert np.array_equal(gbins[b], wbins[b])
