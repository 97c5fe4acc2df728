"""Latency mode's fast paths (bpf/tc.c tc_fast, bpf/netfilter.c nf_fast and
nf_known in latency mode) against the same programs built without them, on
the same live traffic.

Two real `tracer latency --json` processes run at once on the lab: one as
shipped, one built with -DTRACER_NO_TC_FAST -DTRACER_NO_NF_FAST (every
sighting takes the full path: the flows lookup and the packet-cache search).
Both filter on source ports only this test's connections use, so other
engineers' traffic on the lab is in neither; both see the same packets, so
every segment (pair of hops) and the end-to-end rows must count the same
packets in both. Both are built with -DTRACER_COUNT_FAST, which counts the
hops each fast path took (the map fast_hops, read from each process's maps
before it stops): the shipped build must have taken both fast paths, the
other neither, or the comparison would compare the full path with itself.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections import Counter

from tests.e2e.tracing import Tracer, burst_from, connect_from, kernel_snapshot, own_source_ports, wait_gone

COUNT_FAST = {"TRACER_BPF_CFLAGS": "-DTRACER_COUNT_FAST"}
NO_FAST = {"TRACER_BPF_CFLAGS": "-DTRACER_COUNT_FAST -DTRACER_NO_TC_FAST -DTRACER_NO_NF_FAST"}
BPF_MAP_GET_FD_BY_ID = 14


def fast_hops(pid: int) -> tuple[int, int] | None:
    """(tc, netfilter) hops the fast paths took in process ``pid``'s program
    (its fast_hops map, found by the map ids in /proc/PID/fdinfo), summed
    over CPUs; None if it has no such map."""
    from tracer.kernel.bpf_syscall import bpf, fd_by_id_attr, map_info_by_fd, map_lookup
    from tracer.kernel.cpus import possible_cpus

    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                m = re.search(r"^map_id:\s+(\d+)", f.read(), re.M)
        except OSError:
            continue
        if not m:
            continue
        try:
            fd = bpf(BPF_MAP_GET_FD_BY_ID, fd_by_id_attr(int(m.group(1))))
        except OSError:
            continue
        try:
            if map_info_by_fd(fd).name != b"fast_hops":
                continue
            got = []
            for key in (0, 1):
                value = (ctypes.c_uint64 * possible_cpus())()
                map_lookup(fd, ctypes.c_uint32(key), value)
                got.append(sum(value))
            return got[0], got[1]
        finally:
            os.close(fd)
    return None


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
    fast = Tracer(*ports, "--interval", "1", command="latency", env=COUNT_FAST)
    full = Tracer(*ports, "--interval", "1", command="latency", env=NO_FAST)
    try:
        fast.wait_ready()
        full.wait_ready()
        for sport in sports[:8]:
            connect_from(lab, sport)
        burst_from(lab, sports[8:]).wait(timeout=30)
        time.sleep(1.5)
        fast_taken, full_taken = fast_hops(fast.proc.pid), fast_hops(full.proc.pid)
    finally:
        got_fast = fast.stop()
        got_full = full.stop()
    assert fast.returncode == 0 and full.returncode == 0, (fast.stderr, full.stderr)
    a, b = segment_counts(got_fast), segment_counts(got_full)
    # 24 connections of ~12 packets, ~9 hops each: hundreds of sightings.
    assert sum(b.values()) > 24 * 12 * 5, b
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    # The comparison compared something: the shipped build's fast paths ran
    # (tc's and netfilter's), the other build's never did.
    assert fast_taken is not None and full_taken is not None, (fast_taken, full_taken)
    assert fast_taken[0] > 24 * 4 and fast_taken[1] > 24 * 4, fast_taken
    assert full_taken == (0, 0), full_taken
    progs, links = wait_gone(before)
    assert not progs and not links
