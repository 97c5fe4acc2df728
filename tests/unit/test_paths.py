"""Journeys grouped by path (tracer/paths.py) on the synthetic lab capture,
whose every gap is known (tests/unit/analysis_data.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tests.unit.analysis_data import REPLY_PATH, REQUEST_PATH, event_table, lab_capture
from tracer.hdr import Histogram
from tracer.paths import PathStats, path_summary


def _label(hook, stage, where):
    if hook.startswith("nf_") and stage:
        return f"{hook}/{stage}"
    return f"{hook}@{where[1]}" if hook.startswith("tc_") else hook


def _groups():
    rows, exp = lab_capture()
    return path_summary(event_table(rows)), exp


def test_groups_paths_and_order():
    s, _ = _groups()
    names = [g.name for g in s.groups]
    # inbound DNAT first, its replies next; the request dropped before NAT is a group of its own
    assert names == ["external → container · DNAT · requests", "container → external · reverse DNAT · replies",
                     "external → ? · direction unknown"]
    inbound, replies, early = s.groups
    assert inbound.path == tuple(_label(h, st, w) for h, st, w, _, _ in REQUEST_PATH)
    assert replies.path == tuple(_label(h, st, w) for h, st, w, _, _ in REPLY_PATH)
    # 3 connections: 6 requests and 6 replies; 2 requests dropped at FORWARD (after DNAT), 1 before any NAT
    assert (inbound.packets, replies.packets, early.packets) == (8, 6, 1)
    assert inbound.verdicts == {"delivered": 6, "dropped": 2} and early.verdicts == {"dropped": 1}
    assert inbound.off_path == 0  # the dropped ones stopped short of the path: not another way
    assert inbound.exit == "container" and replies.exit == "external"
    assert inbound.device("nf_prerouting/after") == "veth-lab-h" and inbound.container("tc_ingress@container") == "web"
    assert inbound.translation("nf_prerouting/after") == "dst → 172.17.0.2:8080"
    assert replies.translation("nf_postrouting/after") == "src → 198.18.0.1:8000"


def test_segments_in_path_order_with_their_latencies():
    s, exp = _groups()
    inbound = s.groups[0]
    segs = inbound.path_segments()
    assert [(x.src, x.dst) for x in segs] == list(zip(inbound.path, inbound.path[1:]))
    for seg in segs:
        gaps = np.array(exp.segments[("original", f"{seg.src} → {seg.dst}")])
        assert seg.packets == len(gaps)
        # HdrHistogram's value at a percentile: the order statistic at rank ceil(q n), within 0.1 %
        for q in (50, 99, 100):
            exact = np.sort(gaps)[max(int(np.ceil(q / 100 * len(gaps))), 1) - 1]
            assert abs(seg.latency.value_at(q) - exact) <= exact * 1e-3 + 1, (seg.src, seg.dst, q)


def test_drops_where_they_happened_and_end_to_end():
    s, exp = _groups()
    inbound, _, early = s.groups
    assert dict(inbound.drops) == {("nf_forward", "NETFILTER_DROP"): 2}
    assert dict(early.drops) == {("tc_ingress@external", "TCP_CSUM"): 1}
    delivered = [d for pid, d in exp.durations.items() if exp.flow_of[pid] and pid <= 112 and pid % 2 == 1]
    assert inbound.end_to_end.total == inbound.verdicts["delivered"]
    assert abs(inbound.end_to_end.max - max(delivered)) <= max(delivered) * 1e-3


def test_chunks_of_whole_packets_give_the_same_numbers():
    rows, _ = lab_capture(connections=6)
    table = event_table(rows)
    whole = path_summary(table)
    pids = np.array(table["packet_id"].to_pylist())
    stats = PathStats()
    for part in np.array_split(np.unique(pids), 4):
        stats.add(table.filter(pa.array(np.isin(pids, part))))
    chunked = stats.finish()
    assert [g.name for g in chunked.groups] == [g.name for g in whole.groups]
    for a, b in zip(chunked.groups, whole.groups):
        assert a.packets == b.packets and a.sequences == b.sequences and a.drops == b.drops
        assert (a.end_to_end.counts == b.end_to_end.counts).all()
        for k in b.segments:
            assert (a.segments[k].latency.counts == b.segments[k].latency.counts).all()


def test_time_bins_double_and_merge_exactly():
    rows, _ = lab_capture(connections=3)
    spread = []
    for r in rows:  # stretch the capture to ~10 s: 3 connections far apart
        r = dict(r)
        shift = (r["packet_id"] - 100) * 800_000_000
        r["ktime_ns"] += shift
        r["time"] += shift
        spread.append(r)
    s = path_summary(event_table(spread))
    assert s.bin_ns > 10_000_000 and (s.bin_ns // 10_000_000) & (s.bin_ns // 10_000_000 - 1) == 0  # 10 ms doubled
    for g in s.groups:
        for seg in g.segments.values():
            merged = Histogram(1)
            for h in seg.series.values():
                merged.add(h)
            assert merged.total == seg.packets  # every packet in exactly one bin


def test_cpu_per_hop_detected_only_when_rows_differ():
    rows, _ = lab_capture()
    assert not path_summary(event_table([{**r, "cpu": 1} for r in rows])).cpu_per_hop
    assert not path_summary(event_table(rows)).cpu_per_hop  # pid % 4: one CPU per packet, as journey captures
    varied = [{**r, "cpu": i % 2} for i, r in enumerate(rows)]
    assert path_summary(event_table(varied)).cpu_per_hop


def test_empty_input():
    s = path_summary(event_table([]))
    assert s.groups == [] and s.packets == 0
