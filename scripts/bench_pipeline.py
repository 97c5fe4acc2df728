#!/usr/bin/env python3
"""Cost of the live trace pipeline after decode, per event: the object path
(pop_complete -> json.dumps(to_json_dict) / render_journey -> Summary.add)
against the vectorised path (pop_complete_table -> journey_json_block ->
Summary.add_table), on the same synthetic stream, side by side.

Usage: scripts/bench_pipeline.py [N_EVENTS] [--rate EVENTS_PER_S]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import EVENT_SCHEMA
from tracer.journey_json import journey_json_block
from tracer.journey_assembler import JourneyAssembler
from tracer.journey_rows import journey_rows, journeys_of_table
from tracer.render import Summary, render_journey

IDLE_NS = 150_000_000  # as tracer/feeds.py
POLL_NS = 100_000_000
HOST_NS, WEB_NS = 4026531840, 4026532500
# (hook, nat_stage, ifname, if_role, netns, container, address phase) per hop;
# phase 0 = as sent, 1 = after DNAT (or reverse SNAT...), 2 = after SNAT.
REQUEST = [
    ("tc_ingress", None, "eth0", "external", HOST_NS, None, 0),
    ("nf_prerouting", "before", "eth0", "external", HOST_NS, None, 0),
    ("nf_prerouting", "after", "eth0", "external", HOST_NS, None, 1),
    ("nf_forward", None, "eth0", "external", HOST_NS, None, 1),
    ("nf_postrouting", "before", "docker0", "bridge", HOST_NS, None, 1),
    ("nf_postrouting", "after", "docker0", "bridge", HOST_NS, None, 1),
    ("tc_egress", None, "docker0", "bridge", HOST_NS, None, 1),
    ("tc_egress", None, "veth3f2a1b", "veth", HOST_NS, "web", 1),
    ("tc_ingress", None, "eth0", "container", WEB_NS, "web", 1),
]
REPLY = [
    ("tc_egress", None, "eth0", "container", WEB_NS, "web", 0),
    ("tc_ingress", None, "veth3f2a1b", "veth", HOST_NS, "web", 0),
    ("tc_ingress", None, "docker0", "bridge", HOST_NS, None, 0),
    ("nf_prerouting", "before", "docker0", "bridge", HOST_NS, None, 0),
    ("nf_prerouting", "after", "docker0", "bridge", HOST_NS, None, 0),
    ("nf_forward", None, "docker0", "bridge", HOST_NS, None, 0),
    ("nf_postrouting", "before", "eth0", "external", HOST_NS, None, 0),
    ("nf_postrouting", "after", "eth0", "external", HOST_NS, None, 1),
    ("tc_egress", None, "eth0", "external", HOST_NS, None, 1),
    ("tc_egress", None, "eth1", "external", HOST_NS, None, 1),
]
CLIENTS = ["198.18.0.2", "198.18.0.3", "198.18.0.4"]
HOST, WEB = "198.18.0.1", "172.17.0.2"
CID = "3f2a1b" + "0" * 58


def synthetic(n_events: int, rate: float, seed: int = 0) -> pa.Table:
    """An HTTP-benchmark-like event stream: connections of ~10 packets, each
    packet 9 (request) or 10 (reply) sightings; 1% of requests dropped at
    FORWARD; rows of concurrent packets interleaved as on several CPUs."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = defaultdict(list)
    pid, t, conn = 0, 1_000_000_000, 0
    gap = int(1e9 / rate)
    while len(cols["hook"]) < n_events:
        conn += 1
        client, cport, flow = CLIENTS[conn % 3], 30000 + conn % 30000, 0xFFFF8880_0000_0000 + conn * 256
        for k in range(10):
            pid += 1
            reply = k % 2 == 1
            path = REPLY if reply else REQUEST
            if not reply and rng.random() < 0.01:
                path = path[:4] + [("drop", None, "eth0", None, HOST_NS, None, 1)]
            for hop, stage, ifname, role, netns, cname, phase in path:
                if reply:
                    src, dst = ((WEB, 8080), (client, cport)) if phase == 0 else ((HOST, 8000), (client, cport))
                else:
                    src, dst = ((client, cport), (HOST, 8000)) if phase == 0 else ((client, cport), (WEB, 8080))
                nf = hop.startswith("nf_")
                drop = hop == "drop"
                cols["ktime_ns"].append(t + int(rng.integers(0, 3 * gap)))  # some reordering
                t += gap
                cols["packet_id"].append(pid)
                cols["hook"].append(hop)
                cols["nat_stage"].append(stage)
                cols["ifname"].append(ifname)
                cols["if_role"].append(role)
                cols["netns"].append(netns)
                cols["container_name"].append(cname)
                cols["container_id"].append(CID if cname else None)
                cols["flow_id"].append(flow if nf else 0)
                cols["direction"].append(("reply" if reply else "original") if nf else None)
                cols["protocol"].append(None if drop else "tcp")
                cols["src_ip"].append(None if drop else src[0])
                cols["src_port"].append(0 if drop else src[1])
                cols["dst_ip"].append(None if drop else dst[0])
                cols["dst_port"].append(0 if drop else dst[1])
                cols["tcp_flags"].append(0x18 if k else 0x02)
                cols["drop_reason"].append("NETFILTER_DROP" if drop else None)
    n = len(cols["hook"])
    arrays = []
    for f in EVENT_SCHEMA:
        if f.name in cols:
            arrays.append(pa.array(cols[f.name]).cast(f.type) if pa.types.is_dictionary(f.type) else pa.array(cols[f.name], f.type))
        else:
            arrays.append(pa.nulls(n, f.type) if f.name in ("time", "out_ifindex") else pa.array(np.zeros(n), pa.float64()).cast(f.type))
    table = pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)
    # Ring-buffer order: by time of the sighting.
    return table.take(np.argsort(table["ktime_ns"].to_numpy(), kind="stable"))


def polls(table: pa.Table) -> list[tuple[pa.Table, int]]:
    """The stream cut into POLL_NS batches, with the ktime 'now' of each poll."""
    kt = table["ktime_ns"].to_numpy()
    edges = np.arange(kt[0], kt[-1] + POLL_NS, POLL_NS)
    cuts = np.searchsorted(kt, edges[1:])
    out, start = [], 0
    for cut, now in zip(cuts.tolist(), edges[1:].tolist()):
        out.append((own_dictionaries(table.slice(start, cut - start)), now))
        start = cut
    return out


def own_dictionaries(batch: pa.Table) -> pa.Table:
    """The batch with dictionaries of its own, as decode gives each poll:
    combining batches then has to unify them, as it does live."""
    cols = [pc.dictionary_encode(c.cast(pa.string())).cast(c.type) if pa.types.is_dictionary(c.type) else c
            for c in batch.columns]
    return pa.Table.from_arrays(cols, schema=batch.schema)


def _run(batches, table_api: bool, render) -> tuple[dict[str, float], list[str], Summary]:
    """Drive one path over the polls, timing assembly, output and summary.
    table_api: pop_complete_table/flush_table (else the Journey-object API);
    render(popped) -> (output stage name, lines or an untimed callable giving
    them, summary update)."""
    times: dict[str, float] = defaultdict(float)
    asm, summary, lines = JourneyAssembler(), Summary(), []

    def emit(popped) -> None:
        t0 = time.process_time()
        stage, out, add_to = render(popped)
        t1 = time.process_time()
        add_to(summary)
        times[stage] += t1 - t0
        times["summary"] += time.process_time() - t1
        lines.extend(out() if callable(out) else out)

    pop = asm.pop_complete_table if table_api else asm.pop_complete
    flush = asm.flush_table if table_api else asm.flush
    for batch, now in batches:
        t0 = time.process_time()
        asm.add(batch)
        popped = pop(IDLE_NS, now)
        times["assemble"] += time.process_time() - t0
        emit(popped)
    t0 = time.process_time()
    popped = flush()
    times["assemble"] += time.process_time() - t0
    emit(popped)
    return times, lines, summary


def _per_journey(js) -> "callable":
    def add(summary: Summary) -> None:
        for j in js:
            summary.add([j])  # as run_trace did, per journey
    return add


def run_old(batches, human: bool) -> tuple[dict[str, float], list[str], Summary]:
    """The Journey-object path (before the column-wise one)."""
    def render(js):
        if human:
            return "render", [render_journey(j, False) for j in js], _per_journey(js)
        return "json", [json.dumps(j.to_json_dict()) for j in js], _per_journey(js)
    return _run(batches, False, render)


def run_new_human(batches) -> tuple[dict[str, float], list[str], Summary]:
    """The human path on the table API: Journey objects only for rendering."""
    def render(tab):
        rows = journey_rows(tab)  # once for output and summary, as the CLI does
        return "render", [render_journey(j, False) for j in journeys_of_table(rows)], lambda summary: summary.add_table(rows)
    return _run(batches, True, render)


def run_new(batches) -> tuple[dict[str, float], list[str], Summary]:
    """`trace --json` as it runs: one UTF-8 block per poll."""
    def render(tab):
        rows = journey_rows(tab)  # once for output and summary, as the CLI does
        block, _ = journey_json_block(rows)
        # Splitting the block into lines is only for the comparison: untimed.
        return "json", lambda: bytes(block).decode().splitlines(), lambda summary: summary.add_table(rows)
    return _run(batches, True, render)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=200_000)
    ap.add_argument("--rate", type=float, default=100_000, help="events/s of the synthetic stream")
    ap.add_argument("--repeat", type=int, default=3, help="runs per path; the best time per stage counts")
    args = ap.parse_args()
    table = synthetic(args.n, args.rate)
    batches = polls(table)
    n = table.num_rows
    run_new(batches[:3])  # warm up kernels and caches
    run_new_human(batches[:3])

    # Best of --repeat runs per stage: the machine is shared, noise only adds.
    old_t, new_t, hum_t, nhum_t = {}, {}, {}, {}
    for _ in range(args.repeat):
        for best, (t, lines, summ) in (
            (old_t, run_old(batches, human=False)),
            (new_t, run_new(batches)),
            (hum_t, run_old(batches, human=True)),
            (nhum_t, run_new_human(batches)),
        ):
            for k, v in t.items():
                best[k] = min(best.get(k, v), v)
            if best is old_t:
                old_lines, old_sum = lines, summ
            elif best is new_t:
                new_lines, new_sum = lines, summ
            elif best is hum_t:
                hum_lines = lines
            else:
                nhum_lines = lines
    same = old_lines == new_lines and old_sum.to_dict() == new_sum.to_dict() and hum_lines == nhum_lines

    def us(x: float) -> str:
        return f"{1e6 * x / n:7.2f}"

    print(f"{n:,} events, {len(old_lines):,} journeys, {len(batches)} polls of {POLL_NS / 1e6:.0f} ms "
          f"at {args.rate:,.0f} events/s; outputs identical: {same}")
    print(f"{'µs/event':<12}{'assemble':>9}{'json':>9}{'summary':>9}{'total':>9}")
    rows = (("old --json", old_t, "json"), ("new --json", new_t, "json"),
            ("old human", hum_t, "render"), ("new human", nhum_t, "render"))
    for name, t, out in rows:
        total = t["assemble"] + t[out] + t["summary"]
        print(f"{name:<12}{us(t['assemble']):>9}{us(t[out]):>9}{us(t['summary']):>9}{us(total):>9}")
    old_total = old_t["assemble"] + old_t["json"] + old_t["summary"]
    new_total = new_t["assemble"] + new_t["json"] + new_t["summary"]
    print(f"--json speed-up: {old_total / new_total:.1f}x")
    hum_total = sum(hum_t[k] for k in ("assemble", "render", "summary"))
    nhum_total = sum(nhum_t[k] for k in ("assemble", "render", "summary"))
    print(f"human speed-up: {hum_total / nhum_total:.1f}x")
    if not same:
        raise SystemExit("vectorised output differs from the object path")


if __name__ == "__main__":
    main()
