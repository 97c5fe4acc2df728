#!/usr/bin/env python3
"""Write a synthetic capture of journey rows (schema 2, what `tracer record`
writes now) of any size: the kernel's journey records for the lab's DNAT
path, the same traffic as scripts/synth_capture.py (four packets per TCP
connection, one connection in 50 a SYN dropped in FORWARD, per-hop latencies
jittered around the lab's), written by the real writer (`add_journeys`:
place rows, list columns, zstd). ``--files N`` rotates it into about N
files (as `record -C`), for the many-small-files case.

Usage: scripts/synth_journeys.py OUT.arrows --sightings 100M [--rate 1M] [--files N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth_capture import CID, CLIENT, CONTAINER, HOST, HOST_NS, PACKET_GAP_NS, WEB_NS, parse_count  # noqa: E402
from tracer import addresses, events  # noqa: E402
from tracer.capture.writer import CaptureWriter  # noqa: E402
from tracer.decode import DecodeContext  # noqa: E402
from tracer.places import Place  # noqa: E402

H = {name: i for i, name in enumerate(events.HOOKS) if name}
BEFORE, AFTER = 1, 2
EXT, BRIDGE, VETH, ETH0 = 3, 4, 7, 2
# (hook, stage, ifindex, in container netns, tuple, gap before it in ns)
REQUEST = [("tc_ingress", 0, EXT, False, 0, 0), ("nf_prerouting", BEFORE, EXT, False, 0, 45_000),
           ("nf_prerouting", AFTER, EXT, False, 1, 23_000), ("nf_forward", 0, EXT, False, 1, 8_000),
           ("nf_postrouting", BEFORE, BRIDGE, False, 1, 6_000), ("nf_postrouting", AFTER, BRIDGE, False, 1, 4_500),
           ("tc_egress", 0, BRIDGE, False, 1, 3_500), ("tc_egress", 0, VETH, False, 1, 5_000),
           ("tc_ingress", 0, ETH0, True, 1, 3_000)]
REPLY = [("tc_egress", 0, ETH0, True, 0, 0), ("tc_ingress", 0, VETH, False, 0, 3_900),
         ("nf_prerouting", BEFORE, BRIDGE, False, 0, 4_500), ("nf_prerouting", AFTER, BRIDGE, False, 0, 1_600),
         ("tc_ingress", 0, BRIDGE, False, 0, 3_600), ("nf_forward", 0, BRIDGE, False, 0, 2_600),
         ("nf_postrouting", BEFORE, EXT, False, 0, 2_900), ("nf_postrouting", AFTER, EXT, False, 1, 4_300),
         ("tc_egress", 0, EXT, False, 1, 1_300)]
DROP = REQUEST[:4] + [("drop", 0, 0, False, 1, 1_500)]
CPORT = 40000
NETFILTER_DROP = 12


def context() -> DecodeContext:
    c = DecodeContext(host_netns=HOST_NS, drop_reasons={NETFILTER_DROP: "NETFILTER_DROP"}, boot_offset_ns=0)
    c.book.places[(HOST_NS, EXT)] = Place("trc-host", "external", HOST_NS)
    c.book.places[(HOST_NS, BRIDGE)] = Place("docker0", "bridge", HOST_NS)
    c.book.places[(HOST_NS, VETH)] = Place("veth16619c8", "veth", HOST_NS, CID, "tracer-lab-web")
    c.book.container_places[ETH0] = [(Place("eth0", "container", WEB_NS, CID, "tracer-lab-web"), (CONTAINER,))]
    return c


def template(hops, tuples, direction: int, flags: int, length: int, end: str) -> np.ndarray:
    r = events.empty_journeys(1)
    r["direction"], r["protocol"], r["tcp_flags"], r["length"], r["tcp_doff"] = direction, 6, flags, length, 5
    r["end"] = events.JOURNEY_ENDS.index(end)
    for i, (s, d, sp, dp) in enumerate(tuples):
        r["tuples"][0, i] = (np.frombuffer(addresses.packed(s), np.uint8), np.frombuffer(addresses.packed(d), np.uint8), sp, dp)
    r["n_tuples"] = len(tuples)
    t = 0
    for i, (hook, stage, ifindex, in_ct, tup, gap) in enumerate(hops):
        t += gap
        code = H[hook] | stage << events.HOP_STAGE_SHIFT | (events.HOP_IN_CT_BIT if in_ct else 0) | (0x80 if i == 0 else 0)
        r["hops"][0, i] = (t, ifindex, code, 63 if hook == "nf_forward" else 64, tup, 0)
    r["n_hops"] = len(hops)
    if hook == "drop":
        r["drop_reason"], r["drop_netns"] = NETFILTER_DROP, HOST_NS
    r["fwd_out_ifindex"] = BRIDGE if direction == 1 else EXT
    return r


REQ_TUPLES = [(CLIENT, HOST, CPORT, 8000), (CLIENT, CONTAINER, CPORT, 8080)]
REP_TUPLES = [(CONTAINER, CLIENT, 8080, CPORT), (HOST, CLIENT, 8000, CPORT)]
CONNECTION = [template(REQUEST, REQ_TUPLES, 1, 0x02, 60, "terminal"), template(REPLY, REP_TUPLES, 2, 0x12, 60, "terminal"),
              template(REQUEST, REQ_TUPLES, 1, 0x18, 140, "terminal"), template(REPLY, REP_TUPLES, 2, 0x18, 500, "terminal")]
DROPPED = [template(DROP, REQ_TUPLES, 1, 0x02, 60, "drop")]


def chunks(total: int, rate: float, seed: int = 0, records_per_chunk: int = 1 << 14):
    """Journey record arrays (in the order their journeys end) until ``total`` sightings."""
    rng = np.random.default_rng(seed)
    normal, dropped = np.concatenate(CONNECTION), np.concatenate(DROPPED)
    kt0 = 10_000_000_000
    made, conn, next_pid = 0, 0, 1 << 40
    conn_gap = 36 / rate * 1e9
    while made < total:
        n_conn = max(1, min(records_per_chunk * 9, total - made) // 36)
        c = np.arange(conn, conn + n_conn)
        is_drop = c % 50 == 49
        parts = []
        for which, tmpl in ((~is_drop, normal), (is_drop, dropped)):
            cc = c[which]
            if not len(cc):
                continue
            m, k = len(cc), len(tmpl)
            r = np.tile(tmpl, m)
            conn_of = np.repeat(cc, k)
            pkt = np.tile(np.arange(k), m)
            n_hops = r["n_hops"].astype(np.int64)
            base = r["hops"]["dt_ns"].astype(np.int64)
            gaps = np.diff(base, axis=1, prepend=0)
            jitter = rng.lognormal(0.0, 0.35, gaps.shape)
            dt = np.cumsum((gaps * jitter).astype(np.int64), axis=1)
            dt[np.arange(events.MAX_HOPS)[None, :] >= n_hops[:, None]] = 0
            r["hops"]["dt_ns"] = dt.astype(np.uint32)
            start = kt0 + (conn_of * conn_gap).astype(np.int64) + pkt * PACKET_GAP_NS
            r["first_ktime"] = start.astype(np.uint64)
            r["last_ktime"] = (start + dt[np.arange(len(r)), n_hops - 1]).astype(np.uint64)
            pid = next_pid + conn_of * 4 + pkt
            r["packet_id"] = pid.astype(np.uint64)
            r["flow_id"] = (0x1000 + conn_of).astype(np.uint64)
            port = (1024 + conn_of % 60000).astype(np.uint16)
            orig = r["direction"] == 1
            for t in range(2):
                r["tuples"]["sport"][:, t] = np.where(orig, port, r["tuples"]["sport"][:, t])
                r["tuples"]["dport"][:, t] = np.where(orig, r["tuples"]["dport"][:, t], port)
            r["ip_id"] = (pid & 0xFFFF).astype(np.uint16)
            r["tcp_seq"] = (pid * 7919 & 0xFFFFFFFF).astype(np.uint32)
            r["cpu"] = (pid % 2).astype(np.uint16)
            parts.append(r)
        r = np.concatenate(parts)
        r = r[np.argsort(r["last_ktime"], kind="stable")]  # as journeys end
        yield r
        made += int(r["n_hops"].sum())
        conn += n_conn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--sightings", default="10M")
    ap.add_argument("--rate", default="1M", help="sightings per second of capture time")
    ap.add_argument("--files", type=int, default=1, help="rotate into about this many files")
    args = ap.parse_args()
    total, rate = parse_count(args.sightings), parse_count(args.rate)
    meta = {"host": "synthetic", "kernel": "6.18.0-synthetic", "version": "0", "command": " ".join(sys.argv),
            "filter": "port 8000", "start_time": "", "ktime_offset_ns": "0", "containers": "[]", "sample": "1"}
    started = time.perf_counter()
    rows = packets = 0
    ctx = context()
    rotate = None
    if args.files > 1:
        rotate = 1  # a new file after every chunk (as a small -C does)
    with CaptureWriter(args.out, meta, journeys=True, rotate_size=rotate) as w:
        per_chunk = 1 << 14 if args.files <= 1 else max(16, total // 9 // args.files)
        for recs in chunks(total, rate, records_per_chunk=per_chunk):
            w.add_journeys(recs, ctx)
            w.flush()
            if rotate:
                w.tick()
            rows += int(recs["n_hops"].sum())
            packets += len(recs)
        w.add_row("stats", 0, {"events": {"journey": packets}, "lost": {"journey": 0}, "record": "journey",
                                  "event_rows": rows, "packets": packets})
    took = time.perf_counter() - started
    size = sum(p.stat().st_size for p in w.paths if p.exists())
    print(json.dumps({"path": args.out, "files": len(w.paths), "sightings": rows, "packets": packets, "bytes": size,
                      "bytes_per_sighting": round(size / max(rows, 1), 1), "seconds": round(took, 1)}))


if __name__ == "__main__":
    main()
