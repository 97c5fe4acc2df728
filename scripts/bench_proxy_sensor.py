#!/usr/bin/env python3
"""What the proxy sensor (bpf/proxy.c, issue 11) costs other processes.

Its syscall tracepoints (splice, read/write, recvfrom/sendto enter and exit)
run for every process on the host while docker-proxy processes exist; all
but the proxies' leave after a pid lookup. Two workloads, each timed with
the tracepoints detached and attached, alternating, ROUNDS rounds:

* ``syscall``: ``dd bs=1`` from /dev/zero to /dev/null, a process that is
  not a proxy making 1-byte read() and write() calls back to back: ns per
  syscall (what every other process pays per call);
* ``relay``: this process marked as a proxy, relaying 64-byte messages
  between two loopback TCP connections with recv() then send() (what a
  proxy pays per relayed chunk: both fds resolved to sockets, a link map
  update).

Prints ns per call (median over rounds) with and without, the difference
and the median of per-round ratios with a bootstrap 95 % interval.
Run as root: ``.venv/bin/python scripts/bench_proxy_sensor.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def _syscalls(n: int) -> float:
    t = time.perf_counter_ns()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={n}"], check=True, capture_output=True)
    return (time.perf_counter_ns() - t) / (2 * n)


def _pairs():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    a_out = socket.create_connection(srv.getsockname())
    a_in, _ = srv.accept()
    b_out = socket.create_connection(srv.getsockname())
    b_in, _ = srv.accept()
    srv.close()
    return a_out, a_in, b_out, b_in


def _relay(n: int, socks) -> float:
    a_out, a_in, b_out, b_in = socks
    msg = b"y" * 64
    t = time.perf_counter_ns()
    for _ in range(n):
        a_out.send(msg)
        data = a_in.recv(64)  # the proxy's take ...
        b_out.send(data)      # ... and give: a link
        b_in.recv(64)
    return (time.perf_counter_ns() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    from bench_overhead import bootstrap_median

    from tracer.kernel.program import Program
    from tracer.sensors.proxy import RAW, ProxySensor

    sensor = ProxySensor()
    bpf = Program([sensor]).compile()
    print(f"proxy sensor: {'raw sys_enter/sys_exit' if RAW else 'syscalls:* tracepoints'}")
    sensor.bpf = bpf
    socks = _pairs()
    results: dict[str, dict[str, list[float]]] = {w: {"off": [], "on": []} for w in ("syscall", "relay")}
    try:
        for _ in range(args.rounds):
            for state in ("off", "on"):
                if state == "on":
                    sensor.attach(bpf)
                try:
                    results["syscall"][state].append(_syscalls(args.calls * 5))
                    sensor.set_pids([os.getpid()])
                    results["relay"][state].append(_relay(args.calls // 8, socks))
                    sensor.set_pids([])
                finally:
                    sensor.detach()
        links = len(bpf["proxy_links"])
    finally:
        for s in socks:
            s.close()
        bpf.cleanup()
    print(f"bench_proxy_sensor: {args.rounds} rounds, {args.calls * 10:,} dd syscalls / {args.calls // 8:,} relays per round")
    print(f"  {'workload':8s} {'off ns':>8s} {'on ns':>8s} {'+ns':>6s}   on/off [95 % interval]")
    for w, r in results.items():
        off, on = statistics.median(r["off"]), statistics.median(r["on"])
        ratios = [b / a for a, b in zip(r["off"], r["on"])]
        lo, hi = bootstrap_median(ratios)
        print(f"  {w:8s} {off:8.0f} {on:8.0f} {on - off:6.0f}   {statistics.median(ratios):.2f} [{lo:.2f}-{hi:.2f}]")
    print(f"  links recorded by the relay workload: {links} (the loop relays both ways: expect 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
