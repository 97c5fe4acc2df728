"""Synthetic captures with known answers, for the analysis/export/report tests.

The lab's path: client 198.18.0.2 in its own netns reaches host port 8000 on
198.18.0.1 (veth-lab-h), DNAT sends it to the container 'web' 172.17.0.2:8080
over docker0 and the container's veth; replies come back the same way with
reverse DNAT at POSTROUTING. Every gap between two sightings is chosen here and
recorded in ``Expected`` so tests can check percentiles against numpy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.unit.event_rows import CONTAINER_NS, HOST_NS, event_defaults
from tracer.events import CAPTURE_SCHEMA, EVENT_SCHEMA, SCHEMA_VERSION

CLIENT, HOST, CONTAINER = "198.18.0.2", "198.18.0.1", "172.17.0.2"
WALL0 = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z
KT0 = 5_000_000_000
FLOW_BASE = 0xFFFF8880_1234_0000

EXT = ("veth-lab-h", "external", HOST_NS, None, 3)
BRIDGE = ("docker0", "bridge", HOST_NS, None, 4)
VETH = ("veth3f2a1b", "veth", HOST_NS, "web", 7)
ETH0 = ("eth0", "container", CONTAINER_NS, "web", 2)

# (hook, nat_stage, interface, translated?) of each sighting, and the gap before it (ns).
REQUEST_PATH = [
    ("tc_ingress", None, EXT, False, 0),
    ("nf_prerouting", "before", EXT, False, 2_000),
    ("nf_prerouting", "after", EXT, True, 3_000),
    ("nf_forward", None, EXT, True, 2_000),
    ("nf_postrouting", "before", BRIDGE, True, 1_000),
    ("nf_postrouting", "after", BRIDGE, True, 1_000),
    ("tc_egress", None, BRIDGE, True, 2_000),
    ("tc_egress", None, VETH, True, 1_000),
    ("tc_ingress", None, ETH0, True, None),  # gap varies per packet: see lab_capture
]
REPLY_PATH = [
    ("tc_egress", None, ETH0, False, 0),
    ("tc_ingress", None, VETH, False, 4_000),
    ("nf_prerouting", "before", BRIDGE, False, 2_000),
    ("nf_prerouting", "after", BRIDGE, False, 1_000),
    ("nf_forward", None, BRIDGE, False, 2_000),
    ("nf_postrouting", "before", EXT, False, 1_000),
    ("nf_postrouting", "after", EXT, True, 1_000),
    ("tc_egress", None, EXT, True, 3_000),
]

_DEFAULTS = event_defaults()


@dataclass
class Expected:
    # (direction or '-', "label → label") -> gaps in ns
    segments: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    durations: dict[int, int] = field(default_factory=dict)  # packet_id -> first-to-last ns
    flow_of: dict[int, int] = field(default_factory=dict)  # packet_id -> flow_id
    drops: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    flow_bytes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    flow_packets: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def by_segment(self) -> dict[str, list[int]]:
        """Gaps per label pair, requests and replies together."""
        out: dict[str, list[int]] = defaultdict(list)
        for (_, seg), gaps in self.segments.items():
            out[seg] += gaps
        return out

    def slowest_flow(self) -> tuple[int, int]:
        """(flow_id, slowest packet ns) of the flow with the slowest packet."""
        pid = max(self.durations, key=lambda p: self.durations[p])
        return self.flow_of[pid], self.durations[pid]


def _label(hook: str, stage: str | None, role: str | None) -> str:
    if hook.startswith("nf_") and stage:
        return f"{hook}/{stage}"
    if hook.startswith("tc_") and role:
        return f"{hook}@{role}"
    return hook


def lab_capture(connections: int = 3, slow_flow: int = 2, slow_ns: int = 5_000_000) -> tuple[list[dict], Expected]:
    """Rows (EVENT_SCHEMA dicts) of ``connections`` TCP connections, 4 packets
    each (S, SA, PA request, PA reply), plus three dropped requests. The
    veth → container eth0 gap of request i is 10 µs + i µs, except one packet
    of ``slow_flow`` which takes ``slow_ns`` there."""
    rows: list[dict] = []
    exp = Expected()
    pid = 100
    t = KT0
    request_i = 0
    for k in range(connections):
        flow = FLOW_BASE + k * 0x100
        cport = 40000 + k
        c, h, w = (CLIENT, cport), (HOST, 8000), (CONTAINER, 8080)
        packets = [
            ("original", 0x02, 60),
            ("reply", 0x12, 60),
            ("original", 0x18, 140),
            ("reply", 0x18, 500),
        ]
        for n, (direction, flags, length) in enumerate(packets):
            pid += 1
            t += 1_000_000  # one packet per ms
            if direction == "original":
                last_gap = slow_ns if (k == slow_flow and n == 2) else 10_000 + 1_000 * request_i
                request_i += 1
                path = [(*p[:4], last_gap if p[4] is None else p[4]) for p in REQUEST_PATH]
                src_before, dst_before, dst_after, src_after = c, h, w, c
            else:
                path = REPLY_PATH
                src_before, dst_before, src_after, dst_after = w, c, h, c
            kt = t
            prev_label = None
            for hook, stage, where, translated, gap in path:
                kt += gap
                ifname, role, netns, cname, ifindex = where
                if direction == "original":
                    src, dst = (src_after, dst_after) if translated else (src_before, dst_before)
                else:
                    src, dst = (src_after, dst_after) if translated else (src_before, dst_before)
                row = {
                    "time": WALL0 + (kt - KT0), "ktime_ns": kt, "hook": hook, "nat_stage": stage,
                    "ifindex": ifindex, "ifname": ifname, "if_role": role, "netns": netns,
                    "container_name": cname, "container_id": "3f2a1b9c8d7e" + "0" * 52 if cname else None,
                    "packet_id": pid, "src_ip": src[0], "src_port": src[1], "dst_ip": dst[0],
                    "dst_port": dst[1], "ip_id": 1000 + pid, "ttl": 64 if not hook.startswith("nf_forward") else 63,
                    "length": length, "tcp_flags": flags, "tcp_seq": 1_000_000 + pid, "tcp_ack": 2_000_000 + pid,
                    "cpu": pid % 4,
                }
                if hook.startswith("nf_"):
                    row["flow_id"], row["direction"] = flow, direction
                    row["skb"] = 0xFFFF888000000000 + pid * 0x100
                label = _label(hook, stage, role)
                if prev_label is not None:
                    exp.segments[(direction, f"{prev_label} → {label}")].append(gap)
                prev_label = label
                rows.append({**_DEFAULTS, **row})
            exp.durations[pid] = kt - t
            exp.flow_of[pid] = flow
            exp.flow_bytes[flow] += length
            exp.flow_packets[flow] += 1

    # Dropped requests: two by the FORWARD chain's policy, one as a bad checksum
    # right after arrival (tc only: no conntrack yet, so no flow).
    for reason, path_len, flow in (("NETFILTER_DROP", 4, FLOW_BASE + 0xF00), ("NETFILTER_DROP", 4, FLOW_BASE + 0xF00),
                                   ("TCP_CSUM", 1, 0)):
        pid += 1
        t += 1_000_000
        kt = t
        prev_label = None
        direction = "original" if path_len > 1 else "-"  # conntrack first seen at PREROUTING
        for hook, stage, where, translated, gap in REQUEST_PATH[:path_len]:
            kt += gap
            ifname, role, netns, cname, ifindex = where
            dst = (CONTAINER, 8080) if translated else (HOST, 8000)
            row = {
                "time": WALL0 + (kt - KT0), "ktime_ns": kt, "hook": hook, "nat_stage": stage, "ifindex": ifindex,
                "ifname": ifname, "if_role": role, "netns": netns, "packet_id": pid, "src_ip": CLIENT,
                "src_port": 50000 + pid, "dst_ip": dst[0], "dst_port": dst[1], "ip_id": pid, "length": 60,
                "tcp_flags": 0x02, "tcp_seq": pid,
            }
            if hook.startswith("nf_"):
                row["flow_id"], row["direction"] = flow, "original"
            label = _label(hook, stage, role)
            if prev_label is not None:
                exp.segments[(direction, f"{prev_label} → {label}")].append(gap)
            prev_label = label
            rows.append({**_DEFAULTS, **row})
        kt += 1_500
        rows.append({**_DEFAULTS, "time": WALL0 + (kt - KT0), "ktime_ns": kt, "hook": "drop", "packet_id": pid,
                     "drop_reason": reason, "netns": HOST_NS, "length": 60, "protocol": "tcp", "skb": 1})
        exp.segments[(direction, f"{prev_label} → drop")].append(1_500)
        exp.drops[(reason, prev_label)] += 1
        exp.durations[pid] = kt - t
        exp.flow_of[pid] = flow
        if flow:
            exp.flow_bytes[flow] += 60
            exp.flow_packets[flow] += 1
    rows.sort(key=lambda r: r["ktime_ns"])
    return rows, exp


def event_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


METADATA = {
    "schema_version": SCHEMA_VERSION,
    "host": "lab-host",
    "kernel": "6.18.0-test",
    "version": "0.1.0",
    "command": "tracer record --port 8000 -w cap.arrows",
    "filter": "port 8000",
    "start_time": "2025-06-15T15:06:40Z",
    "ktime_offset_ns": str(WALL0 - KT0),
    "containers": json.dumps([{"id": "3f2a1b9c8d7e", "name": "web", "ips": [CONTAINER]}]),
    "sample": "1",
}
STATS = {"events": {"tc": 100, "netfilter": 120, "drop": 3}, "lost": {"tc": 7, "netfilter": 0, "drop": 0},
         "packets": 15, "flows": 4}


def capture_table(rows: list[dict], stats: dict | None = STATS) -> pa.Table:
    """CAPTURE_SCHEMA table: a container row, the events, a closing stats row."""
    events = [{**r, "kind": "event", "info": None} for r in rows]
    first_kt = rows[0]["ktime_ns"] if rows else KT0
    last_kt = rows[-1]["ktime_ns"] if rows else KT0
    blank = {k: None for k in CAPTURE_SCHEMA.names}
    head = [{**blank, "time": WALL0 + first_kt - KT0 - 1, "ktime_ns": first_kt - 1, "kind": "container",
             "info": json.dumps({"action": "start", "id": "3f2a1b9c8d7e", "name": "web", "ips": [CONTAINER]})}]
    tail = [{**blank, "time": WALL0 + last_kt - KT0 + 1, "ktime_ns": last_kt + 1, "kind": "stats",
             "info": json.dumps(stats)}] if stats else []
    return pa.Table.from_pylist(head + events + tail, schema=CAPTURE_SCHEMA)


def write_capture(path: Path, table: pa.Table, metadata: dict | None = None, chunk: int = 64) -> Path:
    """An Arrow IPC stream file (.arrows) as `tracer record` writes it."""
    meta = {f"tracer.{k}": v for k, v in (metadata or METADATA).items()}
    schema = table.schema.with_metadata(meta)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in table.cast(schema).to_batches(max_chunksize=chunk):
            writer.write_batch(batch)
    return path


def scaled_events(base: pa.Table, target_rows: int, seed: int = 0) -> pa.Table:
    """``base`` repeated (new packet/flow ids, later times, jittered gaps) to
    about ``target_rows`` rows: a big capture without a Python loop per row."""
    reps = max(1, target_rows // base.num_rows)
    rng = np.random.default_rng(seed)
    n = base.num_rows
    pid = base["packet_id"].to_numpy()
    kt = base["ktime_ns"].to_numpy().astype(np.int64)
    flow = base["flow_id"].to_numpy()
    first = {}
    for p, k in zip(pid.tolist(), kt.tolist()):
        first[p] = min(first.get(p, k), k)
    first_kt = np.array([first[p] for p in pid.tolist()], dtype=np.int64)
    span = int(kt.max() - kt.min()) + 1_000_000
    rep = np.repeat(np.arange(reps, dtype=np.int64), n)
    factor = np.repeat(rng.uniform(0.5, 3.0, reps), n)
    offset = np.tile(kt - first_kt, reps)
    new_kt = np.tile(first_kt, reps) + rep * span + (offset * factor).astype(np.int64)
    idx = np.tile(np.arange(n), reps)
    out = base.take(pa.array(idx))
    stride = np.uint64(1 << 20)
    cols = {
        "ktime_ns": pa.array(new_kt.astype(np.uint64), pa.uint64()),
        "time": pa.array(new_kt - KT0 + WALL0, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "packet_id": pa.array(np.tile(pid, reps) + rep.astype(np.uint64) * stride, pa.uint64()),
        "flow_id": pa.array(np.where(np.tile(flow, reps) == 0, np.uint64(0), np.tile(flow, reps) + rep.astype(np.uint64) * stride), pa.uint64()),
    }
    for name, arr in cols.items():
        i = out.schema.get_field_index(name)
        out = out.set_column(i, out.schema.field(i), arr)
    return out
