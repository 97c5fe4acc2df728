"""Latency mode's fast paths (bpf/tc.c tc_fast, bpf/netfilter.c nf_fast and
nf_known in latency mode) against the same programs built without them, on
the same live traffic.

Two real `tracer latency --json` processes run at once on the lab: one as
shipped, one built with -DTRACER_NO_TC_FAST -DTRACER_NO_NF_FAST (every
sighting takes the full path: the flows lookup and the packet-cache search).
Both filter on source ports only this test's connections use, so other
engineers' traffic on the lab is in neither; both see the same packets, so
every segment (pair of hops) and the end-to-end rows must count the same
packets in both.
"""

from __future__ import annotations

import time
from collections import Counter

from tests.e2e.tracing import Tracer, burst_from, connect_from, kernel_snapshot, own_source_ports, wait_gone

NO_FAST = {"TRACER_BPF_CFLAGS": "-DTRACER_NO_TC_FAST -DTRACER_NO_NF_FAST"}


def segment_counts(intervals: list[dict]) -> Counter:
    counts: Counter = Counter()
    for interval in intervals:
        for seg in interval.get("segments", ()):
            counts[seg["segment"]] += seg["packets"]
    return counts


def test_latency_fast_paths_count_what_the_full_path_counts(lab):
    before = kernel_snapshot()
    sports = own_source_ports(24)
    ports = [arg for p in sports for arg in ("--port", str(p))]
    fast = Tracer(*ports, "--interval", "1", command="latency")
    full = Tracer(*ports, "--interval", "1", command="latency", env=NO_FAST)
    try:
        fast.wait_ready()
        full.wait_ready()
        for sport in sports[:8]:
            connect_from(lab, sport)
        burst_from(lab, sports[8:]).wait(timeout=30)
        time.sleep(1.5)
    finally:
        got_fast = fast.stop()
        got_full = full.stop()
    assert fast.returncode == 0 and full.returncode == 0, (fast.stderr, full.stderr)
    a, b = segment_counts(got_fast), segment_counts(got_full)
    # 24 connections of ~12 packets, ~9 hops each: hundreds of sightings.
    assert sum(b.values()) > 24 * 12 * 5, b
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    progs, links = wait_gone(before)
    assert not progs and not links
