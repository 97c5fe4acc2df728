#!/usr/bin/env python3
"""Capture size on disk for the demo's HTTP traffic (issue 4 target: <= 40
bytes per event).

Runs ``tracer demo -w FILE [--requests N]`` (lab up, trace the lab container
while the client netns makes N HTTP requests and the container one outbound
one, recording to FILE) for each N in ``--requests`` (default: the demo's own
default of 3, then 100 and 1000), and reports bytes of the file / rows of kind
"event" as readers present it (one per hop of the file's journey rows), and
per journey row (packet). Everything else the file holds (schema and its metadata,
container rows, the statistics row, the end-of-stream marker) is counted in
the bytes: it is what a user's disk holds.

Run as root from the repo: ``.venv/bin/python scripts/bench_capture_size.py``
(``--quick`` for a smoke run: the default demo only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET = 40.0


def event_rows(path: Path) -> tuple[int, int, int]:
    """(sightings, journey rows, all rows in the file) of a capture: the
    file holds one row per journey record (schema 2); a sighting is one of
    their hops, as readers lay them out (version 1 files: one row each)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tracer.capture.reader import read_capture

    with pa.OSFile(str(path)) as f:
        table = pa.ipc.open_stream(f).read_all()
    journeys = int(pc.sum(pc.equal(table.column("kind").cast(pa.string()), "journey")).as_py() or 0)
    return read_capture(str(path)).events.num_rows, journeys, table.num_rows


def run_demo(requests: int | None, path: Path) -> tuple[int, int, int, int]:
    cmd = [sys.executable, "-m", "tracer", "demo", "--json", "-w", str(path)]
    if requests is not None:
        cmd += ["--requests", str(requests)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not path.exists():
        raise SystemExit(f"bench_capture_size: tracer demo exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return (path.stat().st_size, *event_rows(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", default="default,100,1000",
                    help="comma-separated request counts; 'default' = the demo's own (default: default,100,1000)")
    ap.add_argument("--quick", action="store_true", help="the default demo only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_capture_size: needs root (BPF, netns)", file=sys.stderr)
        return 2
    counts = ["default"] if args.quick else [x.strip() for x in args.requests.split(",") if x.strip()]
    print(f"bench_capture_size: tracer demo -w FILE for requests = {', '.join(counts)}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        for c in counts:
            n = None if c == "default" else int(c)
            size, events, journeys, rows = run_demo(n, Path(tmp) / f"demo-{c}.arrows")
            per = size / events if events else float("inf")
            results.append((c, per))
            print(f"  demo --requests {c:>7s}: {size:,} bytes, {events:,} event rows ({rows:,} rows in all): "
                  f"{per:.1f} bytes/event; {journeys:,} journey rows: "
                  f"{size / journeys if journeys else float('inf'):.1f} bytes/packet", flush=True)
    print()
    default = next((per for c, per in results if c == "default"), results[0][1])
    print(f"capture size, demo's HTTP traffic (default demo): {default:.1f} bytes/event; "
          f"target <= {TARGET:.0f}: {'met' if default <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
