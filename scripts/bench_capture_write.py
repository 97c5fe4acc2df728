#!/usr/bin/env python3
"""CPU per packet of writing a capture, offline, on real journey records:
journey rows as they are (schema 2, what `record` writes) against laying the
same records out as sighting rows first (schema 1, what `record` wrote
before), side by side, alternating, best of N rounds each.

The records are collected live first: a TraceSession on the lab's ports
while the client netns runs ``ab`` (so run as root with the lab up:
``tracer lab up``). Then, on the same records and the same decode context,
each round writes one capture per layout to a temporary directory, feeding
the writer the batch sizes the trace loop sees (``--batch``), and times it
with process CPU time. Prints µs per packet and bytes per packet for both,
and reading the file back (``read_capture``) for both.

Usage: scripts/bench_capture_write.py [--requests 3000] [--rounds 7] [--batch 350]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def collect(requests: int) -> tuple[np.ndarray, object]:
    """Journey records of ab's traffic through the lab, and the session's
    decode context (stopped, so its places are frozen)."""
    from bench_overhead import lab_status, netns_cmd
    from tracer.record_words import concat
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    status = lab_status()
    session = TraceSession(TraceOptions(Targets(ports=(status["port"],))))
    session.start()
    try:
        url = f"http://{status['host_address']}:{status['port']}/"
        ab = subprocess.Popen(netns_cmd(status, "ab", "-q", "-n", str(requests), "-c", "8", url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        parts = []
        while ab.poll() is None:
            parts.append(session.read_records(0.05))
        time.sleep(0.3)
        parts.append(session.read_records(0.05))
        records = concat([p for p in parts if len(p)])
        return np.array(records), session.ctx
    finally:
        session.close()


def write(records: np.ndarray, ctx, path: Path, journeys: bool, batch: int) -> float:
    from tracer.capture.writer import CaptureWriter
    from tracer.decode import decode
    from tracer.expand import expand

    t0 = time.process_time()
    with CaptureWriter(path, {"host": "bench", "ktime_offset_ns": str(ctx.boot_offset_ns)}, journeys=journeys) as w:
        for i in range(0, len(records), batch):
            part = records[i:i + batch]
            if journeys:
                w.add_journeys(part, ctx)
            else:
                w.add_events(decode(expand(part), ctx))
    return time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="ab -n (default 3000)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per layout (default 7)")
    ap.add_argument("--batch", type=int, default=350, help="records per add, as a trace pass hands them (default 350)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_capture_write: needs root (BPF, netns)", file=sys.stderr)
        return 2
    from tracer.capture.reader import read_capture

    records, ctx = collect(args.requests)
    n = len(records)
    hops = int(records["n_hops"].sum())
    print(f"bench_capture_write: {n:,} journey records ({hops:,} sightings, {hops / max(n, 1):.1f} per packet) "
          f"from ab -n {args.requests}; {args.rounds} rounds, batches of {args.batch}", flush=True)
    layouts = {"journey rows (schema 2)": True, "sighting rows (schema 1)": False}
    cpu = {name: [] for name in layouts}
    size, read_cpu = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-capture-write-") as tmp:
        for r in range(args.rounds):
            for name, journeys in (layouts.items() if r % 2 == 0 else reversed(layouts.items())):
                path = Path(tmp) / f"{int(journeys)}.arrows"
                cpu[name].append(write(records, ctx, path, journeys, args.batch))
                size[name] = path.stat().st_size
        for name, journeys in layouts.items():
            path = Path(tmp) / f"{int(journeys)}.arrows"
            t0 = time.process_time()
            rows = read_capture(str(path)).events.num_rows
            read_cpu[name] = time.process_time() - t0
            assert rows == hops, (name, rows, hops)
    for name in layouts:
        best, med = min(cpu[name]), statistics.median(cpu[name])
        print(f"  {name}: write {best / n * 1e6:.2f} µs/packet (best; median {med / n * 1e6:.2f}), "
              f"{size[name] / n:.1f} B/packet ({size[name] / hops:.1f} B/sighting); "
              f"read back {read_cpu[name] / n * 1e6:.2f} µs/packet")
    j, s = (min(cpu[name]) for name in layouts)
    print(f"capture write CPU per packet: journey rows {j / n * 1e6:.2f} µs against sighting rows "
          f"{s / n * 1e6:.2f} µs ({s / j:.1f}x); target (issue 9, record) <= 1 µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
