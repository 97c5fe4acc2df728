"""LatencyMaps reads the kernel's histogram arrays: per-CPU copies are summed
and sightings per hop are derived from starts + arrivals (bpf/latency.h).
The BPF arrays are stood in for by memfds laid out as the kernel's are."""

import os

import numpy as np

from tracer import latency as L


class _Map:
    def __init__(self, values: np.ndarray) -> None:
        self.map_fd = os.memfd_create("tracer-test-map")
        data = values.astype("<u8").tobytes()
        size = -(-len(data) // os.sysconf("SC_PAGE_SIZE")) * os.sysconf("SC_PAGE_SIZE")
        os.write(self.map_fd, data + bytes(size - len(data)))


def _maps(hist: np.ndarray, hops: np.ndarray) -> dict[str, _Map]:
    return {"hist": _Map(hist.ravel()), "hop_counts": _Map(hops.ravel())}


def _seg(a: str, b: str) -> int:
    return L.HOP_NAMES.index(a) * L.N_HOPS + L.HOP_NAMES.index(b)


def test_slices_are_summed_and_sightings_derived():
    slices = 3
    hist = np.zeros((slices, L.HIST_ROWS, L.HIST_BUCKETS), np.uint64)
    hops = np.zeros((slices, 2, L.N_HOPS), np.uint64)
    first, second, drop = "tc_ingress@external", "nf_prerouting/before", "drop"
    # 5 packets start at `first` on CPU 0, 2 on CPU 2; all 7 reach `second`
    # (4 counted by CPU 1, 3 by CPU 2) and one of them is then dropped.
    hops[0, 1, L.HOP_NAMES.index(first)] = 5
    hops[2, 1, L.HOP_NAMES.index(first)] = 2
    hist[1, _seg(first, second), L.bucket_of(2_000)] = 4
    hist[2, _seg(first, second), L.bucket_of(3_000)] = 3
    hist[0, _seg(second, drop), L.bucket_of(500)] = 1
    fake = _maps(hist, hops)
    maps = L.LatencyMaps(fake, slices)
    try:
        snap = maps.snapshot(123)
    finally:
        maps.close()
        for m in fake.values():
            os.close(m.map_fd)
    assert snap.ktime_ns == 123
    assert snap.hist.shape == (L.HIST_ROWS, L.HIST_BUCKETS)
    assert snap.hist[_seg(first, second)].sum() == 7
    assert snap.hops[1, L.HOP_NAMES.index(first)] == 7  # starts
    sightings = dict(zip(L.HOP_NAMES, snap.hops[0].tolist()))
    assert sightings[first] == 7 and sightings[second] == 7 and sightings[drop] == 1
    assert sum(sightings.values()) == 15
    # 7 reached `second`, one went on to a drop: 6 never reached a next hop.
    assert L.missing_after(snap) == {second: 6}
