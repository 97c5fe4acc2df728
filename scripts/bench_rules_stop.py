#!/usr/bin/env python3
"""How long `tracer trace --rules` takes to stop after a burst.

Each round: start ``tracer trace --json --rules --port 8000``, make a burst
of connections from the lab's client netns to 198.18.0.1:8000 (its own
source ports above 65000: tests/e2e/tracing.py burst_from), send SIGTERM
``--after`` seconds after the burst began, and time from the signal to the
process's exit (killed after --timeout; counted as that). With
``--baseline DIR`` (a checkout of the code before, e.g. from
``git archive``), the same rounds run its tracer too, alternating, and both
figures print side by side. Run as root with the lab up.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # sibling benchmark helpers

from bench_overhead import interrupt  # noqa: E402
from tests.e2e.tracing import burst_from  # noqa: E402


def bursts(lab: dict, connections: int, count: int) -> threading.Thread:
    """``count`` bursts, one after the other, in a thread."""
    def run() -> None:
        for _ in range(count):
            burst_from(lab, random.sample(range(65001, 65536), connections)).wait(60)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_round(repo: Path, lab: dict, connections: int, count: int, after: float, timeout: float) -> tuple[float, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--rules", "--port", str(lab["port"])],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    err: list[str] = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"tracer did not start: {''.join(err)}")
        err.append(line)
        if "Ctrl-C to stop" in line:
            break
    errs = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    errs.start()
    burst = bursts(lab, connections, count)
    time.sleep(after)
    t0 = time.monotonic()
    interrupt(proc, timeout, signal.SIGTERM)
    took = time.monotonic() - t0
    burst.join(120)
    errs.join(5)
    summary = next((line.strip() for line in err if "rules:" in line), "")
    return took, f"{len(out)} journeys; {summary[:300]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--bursts", type=int, default=1, help="bursts one after the other")
    ap.add_argument("--after", type=float, default=1.0, help="seconds from the burst's start to SIGTERM")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--other", action="store_true", help="another `trace --rules` (this code) runs meanwhile")
    ap.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    from tracer import lab as lab_mod

    lab = lab_mod.status()
    if not lab["up"]:
        raise SystemExit("the lab is not up (tracer lab up)")
    other = None
    if args.other:  # another engineer's `trace --rules`: nf_tables sends its reports to every listener
        other = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--rules", "--port", str(lab["port"])],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
    runs = {"this": []} if args.baseline is None else {"baseline": [], "this": []}
    for i in range(args.rounds):
        for name in runs:
            repo = REPO if name == "this" else args.baseline
            took, note = one_round(repo, lab, args.connections, args.bursts, args.after, args.timeout)
            runs[name].append(took)
            print(f"round {i + 1} {name:8s} stop took {took:6.2f} s  ({note})", flush=True)
    if other is not None:
        interrupt(other, 120, signal.SIGTERM)
    for name, times in runs.items():
        print(f"{name:8s} stop after SIGTERM: median {statistics.median(times):.2f} s, "
              f"min {min(times):.2f}, max {max(times):.2f} (n={len(times)}, {args.bursts}x{args.connections} connections, "
              f"SIGTERM {args.after:g} s into the burst{', another trace --rules running' if args.other else ''})")
    if len(runs) == 2:
        print(f"baseline/this (median): {statistics.median(runs['baseline']) / statistics.median(runs['this']):.1f}x")


if __name__ == "__main__":
    main()
