"""Histogram arithmetic of latency mode, against exact percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from tracer import latency as L


def histogram(samples: np.ndarray) -> np.ndarray:
    counts = np.zeros(L.HIST_BUCKETS, dtype=np.int64)
    for value in samples:
        counts[L.bucket_of(int(value))] += 1
    return counts


def test_buckets_tile_the_line_without_gaps():
    lower, upper = L.bucket_bounds(np.arange(L.HIST_BUCKETS))
    assert lower[0] == 0
    assert (lower[1:] == upper[:-1]).all()
    # Never wider than 1/16 of the bucket's lower bound (HDR-style precision).
    wide = lower >= L.SUB
    assert ((upper - lower)[wide] / lower[wide] <= 1 / 16 + 1e-12).all()


@pytest.mark.parametrize("value", [0, 1, 15, 16, 17, 31, 32, 33, 1000, 12_345, 999_999, 2**31 + 5, 10**12])
def test_bucket_of_agrees_with_bounds(value):
    b = L.bucket_of(value)
    lo, hi = L.bucket_bounds(b)
    assert lo <= value < hi


def test_bucket_of_matches_the_kernels_formula_at_edges():
    # hist_bucket() in bpf/latency.h: exact below 16, then (msb-3)*16 + sub.
    assert [L.bucket_of(v) for v in (15, 16, 31, 32, 63, 64)] == [15, 16, 31, 32, 47, 48]
    assert L.bucket_of(2**60) == L.HIST_BUCKETS - 1  # clamped


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("q", [50, 90, 99])
def test_percentiles_within_a_few_percent_of_exact(seed, q):
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(mean=np.log(20_000), sigma=0.8, size=20_000).astype(np.int64)
    estimate = L.percentile(histogram(samples), q)
    exact = np.percentile(samples, q)
    assert abs(estimate - exact) / exact < 0.04


def test_percentile_of_a_single_value_lies_in_its_bucket():
    counts = histogram(np.full(100, 5_000))
    lo, hi = L.bucket_bounds(L.bucket_of(5_000))
    for q in (1, 50, 99):
        assert lo <= L.percentile(counts, q) <= hi


def test_empty_histogram_gives_nan_and_null_json():
    stats = L.Stats.of(np.zeros(L.HIST_BUCKETS, dtype=np.int64))
    assert stats.packets == 0
    assert stats.to_dict()["p50_ns"] is None


def snapshot(segments: dict[tuple[str, str], list[int]], sightings: dict[str, int], ktime=1_000_000_000) -> L.Snapshot:
    hist = np.zeros((L.HIST_ROWS, L.HIST_BUCKETS), dtype=np.int64)
    for (a, b), values in segments.items():
        row = L.HOP_NAMES.index(a) * L.N_HOPS + L.HOP_NAMES.index(b)
        for v in values:
            hist[row, L.bucket_of(v)] += 1
    hops = np.zeros((2, L.N_HOPS), dtype=np.int64)
    for name, n in sightings.items():
        hops[0, L.HOP_NAMES.index(name)] = n
    return L.Snapshot(hist, hops, ktime)


def test_missing_after_counts_packets_that_never_reached_a_next_hop():
    snap = snapshot(
        {("tc_egress@bridge", "tc_egress@veth"): [1000] * 10,
         ("tc_egress@veth", "tc_ingress@container"): [1000] * 7,
         ("tc_egress@veth", "drop"): [500] * 2},
        {"tc_egress@bridge": 10, "tc_egress@veth": 10, "tc_ingress@container": 7, "drop": 2},
    )
    # One packet left tc_egress@veth and was neither seen again nor dropped;
    # the container hop is terminal, drops are accounted as a segment.
    assert L.missing_after(snap) == {"tc_egress@veth": 1}


def test_report_names_segments_and_end_to_end():
    snap = snapshot({("nf_forward", "nf_postrouting/before"): [2000, 2100, 2200]}, {"nf_forward": 3})
    snap.hist[L.E2E_ROWS["original"], L.bucket_of(30_000)] = 3
    rep = L.report(snap, snap)
    (seg,) = rep["segments"]
    assert seg["segment"] == "nf_forward → nf_postrouting/before" and seg["packets"] == 3
    assert 2000 <= seg["p50_ns"] <= 2300
    assert rep["end_to_end"]["original"]["packets"] == 3
