#!/usr/bin/env python3
"""Write a synthetic capture of any size, as `tracer record` would: the lab's
DNAT path (client -> host:8000 -> docker0 -> veth -> container:8080 and
back), four packets per TCP connection (S, SA, PA, PA), one connection in 50
a SYN dropped in FORWARD, per-hop latencies jittered around the lab's. The
real writer (dictionary deltas, zstd, 128 Ki-row batches, a closing
statistics row). For the bounded-memory benchmark and tests of `stats`,
`show`, `report` and `export` on captures bigger than memory.

Usage: scripts/synth_capture.py OUT.arrows --sightings 100M [--rate 1M]
(--rate: sightings per second of capture time, i.e. how busy the host was).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer.capture.writer import CaptureWriter  # noqa: E402
from tracer.events import EVENT_SCHEMA, SCHEMA_VERSION  # noqa: E402

HOST_NS, WEB_NS = 4026531840, 4026532500
CLIENT, HOST, CONTAINER = "198.18.0.2", "198.18.0.1", "172.17.0.2"
CID = "3f2a1b9c8d7e" + "0" * 52
# (hook, nat_stage, ifname, if_role, ifindex, netns, container, translated?, gap before it in ns)
REQUEST = [
    ("tc_ingress", None, "trc-host", "external", 3, HOST_NS, None, False, 0),
    ("nf_prerouting", "before", "trc-host", "external", 3, HOST_NS, None, False, 45_000),
    ("nf_prerouting", "after", "trc-host", "external", 3, HOST_NS, None, True, 23_000),
    ("nf_forward", None, "trc-host", "external", 3, HOST_NS, None, True, 8_000),
    ("nf_postrouting", "before", "docker0", "bridge", 4, HOST_NS, None, True, 6_000),
    ("nf_postrouting", "after", "docker0", "bridge", 4, HOST_NS, None, True, 4_500),
    ("tc_egress", None, "docker0", "bridge", 4, HOST_NS, None, True, 3_500),
    ("tc_egress", None, "veth16619c8", "veth", 7, HOST_NS, "tracer-lab-web", True, 5_000),
    ("tc_ingress", None, "eth0", "container", 2, WEB_NS, "tracer-lab-web", True, 3_000),
]
REPLY = [
    ("tc_egress", None, "eth0", "container", 2, WEB_NS, "tracer-lab-web", False, 0),
    ("tc_ingress", None, "veth16619c8", "veth", 7, HOST_NS, "tracer-lab-web", False, 3_900),
    ("nf_prerouting", "before", "docker0", "bridge", 4, HOST_NS, None, False, 4_500),
    ("nf_prerouting", "after", "docker0", "bridge", 4, HOST_NS, None, False, 1_600),
    ("tc_ingress", None, "docker0", "bridge", 4, HOST_NS, None, False, 3_600),
    ("nf_forward", None, "docker0", "bridge", 4, HOST_NS, None, False, 2_600),
    ("nf_postrouting", "before", "trc-host", "external", 3, HOST_NS, None, False, 2_900),
    ("nf_postrouting", "after", "trc-host", "external", 3, HOST_NS, None, True, 4_300),
    ("tc_egress", None, "trc-host", "external", 3, HOST_NS, None, True, 1_300),
]
# (path, direction, tcp flags, length) of a connection's packets.
CONNECTION = [(REQUEST, "original", 0x02, 60), (REPLY, "reply", 0x12, 60), (REQUEST, "original", 0x18, 140),
              (REPLY, "reply", 0x18, 500)]
DROPPED = [(REQUEST[:4], "original", 0x02, 60)]  # SYN dropped in FORWARD: a drop row follows
PACKET_GAP_NS = 50_000  # between a connection's packets
CPORT = 40000


def template(packets) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """One connection's rows, plus per row: packet index, gap since the
    packet's previous sighting (ns), whether the client port is the source (1), the
    destination (2) or neither."""
    rows, packet, offset, client_end = [], [], [], []
    for p, (path, direction, flags, length) in enumerate(packets):
        t = 0
        hops = list(path) + ([("drop", None, None, None, 0, HOST_NS, None, True, 1_500)] if packets is DROPPED else [])
        for hook, stage, ifname, role, ifindex, netns, cname, translated, gap in hops:
            t += gap
            if direction == "original":
                src, dst = (CLIENT, CPORT), ((CONTAINER, 8080) if translated else (HOST, 8000))
            else:
                src, dst = ((HOST, 8000) if translated else (CONTAINER, 8080)), (CLIENT, CPORT)
            rows.append({
                "hook": hook, "nat_stage": stage, "ifindex": ifindex, "ifname": ifname, "if_role": role,
                "out_ifindex": 0, "netns": netns, "container_id": CID if cname else None, "container_name": cname,
                "skb": 0, "direction": direction, "protocol": "tcp", "src_ip": src[0], "src_port": src[1],
                "dst_ip": dst[0], "dst_port": dst[1], "ip_id": 0, "ttl": 63 if hook == "nf_forward" else 64,
                "length": length, "tcp_flags": flags, "tcp_seq": 0, "tcp_ack": 0,
                "drop_reason": "NETFILTER_DROP" if hook == "drop" else None, "cpu": 0,
                "flags": 2 if t == 0 else 0, "time": 0, "ktime_ns": 0, "packet_id": 0, "flow_id": 0,
            })
            packet.append(p)
            offset.append(gap)
            client_end.append(1 if direction == "original" else 2)
    table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    return table, np.array(packet), np.array(offset, np.int64), np.array(client_end)


def chunks(total: int, rate: float, seed: int = 0, rows_per_chunk: int = 1 << 17):
    """EVENT_SCHEMA tables of about ``rows_per_chunk`` rows until ``total``."""
    rng = np.random.default_rng(seed)
    normal, dropped = template(CONNECTION), template(DROPPED)
    kt0, wall0 = 10_000_000_000, time.time_ns() - 3600 * 10**9
    made, conn, next_pid = 0, 0, 1 << 40
    conn_gap = 36 / rate * 1e9  # a connection's 36 sightings, at the capture's rate
    while made < total:
        n_conn = max(1, min(rows_per_chunk, total - made) // 36)
        kinds = (np.arange(conn, conn + n_conn) % 50) == 49
        parts = []
        for is_drop, (tmpl, packet, offset, client_end) in ((False, normal), (True, dropped)):
            which = np.flatnonzero(kinds == is_drop)
            if not len(which):
                continue
            m, r = len(which), tmpl.num_rows
            idx = np.tile(np.arange(r), m)
            c = np.repeat(which, r)  # connection of each row (in this chunk)
            t = tmpl.take(pa.array(idx))
            start = kt0 + ((conn + c) * conn_gap).astype(np.int64)
            gaps = (np.tile(offset, m) * rng.lognormal(0.0, 0.35, m * r)).astype(np.int64)
            pkt = np.tile(packet, m)
            # Time since the packet's first sighting: the gaps summed within each packet.
            summed = np.cumsum(gaps)
            first = np.r_[True, (pkt[1:] != pkt[:-1]) | (c[1:] != c[:-1])]
            since = summed - np.maximum.accumulate(np.where(first, summed - gaps, 0))
            kt = start + pkt * PACKET_GAP_NS + since
            pid = next_pid + (conn + c) * 4 + pkt
            port = (1024 + (conn + c) % 60000).astype(np.uint16)
            end = np.tile(client_end, m)
            cols = {
                "ktime_ns": pa.array(kt.astype(np.uint64)),
                "time": pa.array(kt - kt0 + wall0, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                "packet_id": pa.array(pid.astype(np.uint64)),
                "flow_id": pa.array((0x1000 + conn + c).astype(np.uint64)),
                "src_port": pa.array(np.where(end == 1, port, t["src_port"].to_numpy()).astype(np.uint16)),
                "dst_port": pa.array(np.where(end == 2, port, t["dst_port"].to_numpy()).astype(np.uint16)),
                "ip_id": pa.array((pid & 0xFFFF).astype(np.uint16)),
                "tcp_seq": pa.array((pid * 7919 & 0xFFFFFFFF).astype(np.uint32)),
                "cpu": pa.array((pid % 2).astype(np.uint16)),
            }
            for name, arr in cols.items():
                i = t.schema.get_field_index(name)
                t = t.set_column(i, t.schema.field(i), arr)
            parts.append((t, kt))
        table = pa.concat_tables([p for p, _ in parts]).unify_dictionaries().combine_chunks()
        kt = np.concatenate([k for _, k in parts])
        pid = table["packet_id"].to_numpy()
        # Rows as the writer lays them out: packet by packet, as their journeys end.
        order = np.lexsort((kt, pid))
        spid = pid[order]
        starts = np.flatnonzero(np.r_[True, spid[1:] != spid[:-1]])
        last = np.empty(len(kt), np.int64)
        last[order] = np.repeat(np.maximum.reduceat(kt[order], starts), np.diff(np.append(starts, len(order))))
        rows = np.lexsort((kt, pid, last))
        yield table.take(pa.array(rows))
        made += table.num_rows
        conn += n_conn


def parse_count(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--sightings", default="10M", help="how many sighting rows (10M, 100M...)")
    ap.add_argument("--rate", default="1M", help="sightings per second of capture time")
    args = ap.parse_args()
    total, rate = parse_count(args.sightings), parse_count(args.rate)
    meta = {"schema_version": SCHEMA_VERSION, "host": "synthetic", "kernel": "6.18.0-synthetic", "version": "0",
            "command": " ".join(sys.argv), "filter": "port 8000", "start_time": "", "ktime_offset_ns": "0",
            "containers": "[]", "sample": "1"}
    started = time.perf_counter()
    rows = packets = 0
    with CaptureWriter(args.out, meta) as w:
        for table in chunks(total, rate):
            w.add_events(table)
            w.flush()
            rows += table.num_rows
            packets += int((table["flags"].to_numpy() & 2 != 0).sum())
        w.add_row("stats", 0, {"events": {"tc": packets}, "lost": {"tc": 0}, "record": "journey",
                                  "event_rows": rows, "packets": packets})
    took = time.perf_counter() - started
    size = Path(args.out).stat().st_size
    print(json.dumps({"path": args.out, "sightings": rows, "packets": packets, "bytes": size,
                      "bytes_per_sighting": round(size / max(rows, 1), 1), "seconds": round(took, 1)}))


if __name__ == "__main__":
    main()
