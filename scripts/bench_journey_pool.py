#!/usr/bin/env python3
"""Journeys evicted from the kernel's per-CPU journey pool, and what the
pool's size costs in BPF (issue 9).

A journey still open when its pool slot comes round again (bpf/journey.h
journey_take: JOURNEY_POOL slots per CPU, taken in turn) is emitted as
``evicted``: incomplete, where the sweep would have emitted it as ``quiet``
(or the packet's later hops would have completed it). A larger pool keeps
journeys open longer before their slot comes round, but walks more memory
(440 bytes a slot), which the pool exists to keep in the CPU caches.

Each round runs ``tracer record -w FILE --port 8000 --port 5201 --quiet``
once per pool size (``--pools``, the order rotating every round), its
program built with that JOURNEY_POOL (the Python-side define,
tracer/kernel/program.py, set in the tracer's process), while the lab's
workload runs from the client netns: ``ab -n N -c 8`` to :8000 and
``iperf3 -t S`` to :5201 at the same time. Per run, from the capture's
statistics row: the journey records by end (evicted among them) and the
sightings; from ``kernel.bpf_stats_enabled`` over the workload: the ns of
all the tracer's programs per sighting recorded (an upper bound: the
statistics' clock reads are included; sightings of traffic before or after
the workload, a small share, are in the denominator too).

Reported per pool: the median over rounds of evicted records per 1,000
records (and the total over all rounds: evictions come in bursts, when the
machine is busy, so most rounds may have none) and of BPF ns per sighting,
and the median of each round's ratio to the first pool's run with a
bootstrap 95 % interval (for evictions, over the rounds where the first
pool evicted some). Other engineers'
traffic to the lab's ports is traced too: it is part of the load, and the
alternation spreads it over the pools.

Run as root from the repo with the lab up: ``.venv/bin/python
scripts/bench_journey_pool.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_overhead as bo  # noqa: E402
from bench_bpf_stats import _prog_delta, _prog_stats  # noqa: E402
from bench_figures import bootstrap_median, load_average, round_ratios  # noqa: E402

# The tracer's own entry point with the pool's define set first (what a
# different JOURNEY_POOL in tracer/kernel/program.py would build).
LAUNCH = ("import os, tracer.kernel.program as program; "
          "program.JOURNEY_POOL = int(os.environ['BENCH_JOURNEY_POOL']); "
          "from tracer.cli import main; main()")


def one_run(status: dict, pool: int, requests: int, seconds: float) -> dict | str:
    """record with this pool under the workload: its figures, or why not."""
    out = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    capture, err_path = out / "pool.arrows", out / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "record", "--quiet", "-w", str(capture),
                                 "--port", "8000", "--port", "5201"],
                                cwd=REPO, env={**os.environ, "BENCH_JOURNEY_POOL": str(pool)},
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C" not in err_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                return f"record did not start: {err_path.read_text(errors='replace')[-300:]}"
            time.sleep(0.05)
        failed: list[str] = []

        def stream() -> None:
            try:
                bo.run_iperf(status, seconds)
            except RuntimeError as exc:
                failed.append(str(exc))

        with bo.bpf_stats_on():
            before = _prog_stats(proc.pid)
            iperf = threading.Thread(target=stream)
            iperf.start()
            try:
                rate = bo.run_ab(status, requests, 8)
            except RuntimeError as exc:
                failed.append(str(exc))
            iperf.join()
            after = _prog_stats(proc.pid)
        if failed:
            return failed[0][:120]
    finally:
        bo.interrupt(proc)
    from tracer.capture.reader import read_capture

    stats = read_capture([str(capture)]).stats or {}
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    ends = stats.get("journey_ends") or {}
    records = sum(ends.values())
    sightings = stats.get("event_rows") or 0
    ns = sum(v[0] for v in _prog_delta(before, after).values())
    if not records or not sightings:
        return "nothing recorded"
    return {"evicted_per_k": 1000 * ends.get("evicted", 0) / records, "evicted": ends.get("evicted", 0),
            "records": records, "ns_per_sighting": ns / sightings, "rate": rate,
            "faults": sum((stats.get("journey_faults") or {}).values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", default="256,1024,4096", help="journey slots per CPU to compare (the first is the reference)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--requests", type=int, default=5000, help="ab -n (default 5000)")
    ap.add_argument("--seconds", type=float, default=5, help="iperf3 -t (default 5)")
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    args = ap.parse_args()
    try:
        pools = [int(p) for p in args.pools.split(",")]
    except ValueError:
        print(f"bench_journey_pool: --pools {args.pools!r}: comma-separated integers", file=sys.stderr)
        return 2
    if not pools or any(p < 1 or p & (p - 1) for p in pools):
        print(f"bench_journey_pool: --pools {args.pools!r}: each a power of two", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench_journey_pool: needs root (BPF, netns)", file=sys.stderr)
        return 2
    if args.quick:
        args.rounds, args.requests, args.seconds = 1, 300, 1
    status = bo.lab_status()
    print(f"bench_journey_pool: record --port 8000 --port 5201 under ab -n {args.requests} -c 8 + iperf3 -t {args.seconds:g} "
          f"at once, pools {', '.join(map(str, pools))} slots per CPU, {args.rounds} rounds; load {load_average()}")
    runs: dict[int, list[dict | None]] = {p: [] for p in pools}
    for r in range(args.rounds):
        order = pools[r % len(pools):] + pools[: r % len(pools)]
        for pool in order:
            got = one_run(status, pool, args.requests, args.seconds)
            if isinstance(got, str):
                print(f"  round {r + 1} pool {pool:5d}: left out ({got})")
                got = None
            else:
                print(f"  round {r + 1} pool {pool:5d}: {got['evicted']:,} of {got['records']:,} records evicted "
                      f"({got['evicted_per_k']:.1f} per 1,000), {got['ns_per_sighting']:.0f} ns BPF per sighting, "
                      f"{got['rate']:.0f} req/s, {got['faults']} faults", flush=True)
            runs[pool].append(got)
    ref = pools[0]
    print(f"  per pool, medians over rounds (ratio: each round against pool {ref} in the same round, bootstrap 95 %):")
    for pool in pools:
        got = [x for x in runs[pool] if x]
        if not got:
            print(f"    {pool:5d}: no run")
            continue
        evicted, records = sum(x["evicted"] for x in got), sum(x["records"] for x in got)
        line = (f"    {pool:5d}: evicted {statistics.median(x['evicted_per_k'] for x in got):6.1f} per 1,000 records "
                f"(all rounds: {evicted:,} of {records:,}, {1000 * evicted / records:.2f} per 1,000), "
                f"BPF {statistics.median(x['ns_per_sighting'] for x in got):5.0f} ns per sighting")
        if pool != ref:
            # evictions come in bursts (busy rounds): rounds where the reference evicted none say nothing
            for key, label in (("evicted_per_k", "evicted"), ("ns_per_sighting", "BPF ns")):
                ratios = round_ratios([x[key] if x else None for x in runs[pool]],
                                      [x[key] if x else None for x in runs[ref]])
                if ratios:
                    lo, hi = bootstrap_median(ratios)
                    line += f"; {label} x{statistics.median(ratios):.3f} [{lo:.3f}-{hi:.3f}]"
        print(line)
    print(f"  load after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
