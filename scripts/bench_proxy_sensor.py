#!/usr/bin/env python3
"""What the docker-proxy link sensor (bpf/proxy.c) costs other processes,
and the proxy itself: no sensor, the sensor of this tree, and (by default)
the first design (raw sys_enter/sys_exit on every syscall, commit 657dd81,
taken with `git archive` into /tmp), side by side in one run.

Each sensor is compiled once in a process of its own (`holder`), which
attaches and detaches it on command, so the states alternate round by round
(none, old, new, ...) on the same machine state. Three workloads:

* ``syscall``: ``dd bs=1`` from /dev/zero to /dev/null, a process that is
  not a proxy making 1-byte read() and write() calls back to back: ns per
  syscall (what the first design cost every process per call);
* ``tcp``: a process that is not a proxy, ping-ponging 64-byte messages
  over a loopback TCP connection (send, recv, send, recv): ns per round
  trip, which is what the socket hooks now run on (two TCP receives, two
  socket sends per round trip);
* ``relay``: this process marked as the proxy, relaying 64-byte messages
  between two loopback TCP connections with recv() then send(): ns per
  relayed message (what a proxy pays: the link path).

Prints ns per operation (median over rounds) per state, the difference to
no sensor and the median of per-round ratios with a bootstrap 95 %
interval; then, with kernel.bpf_stats_enabled on for one more round
(restored afterwards), BPF runs per operation and ns per run of each
sensor's programs. Run as root: ``.venv/bin/python scripts/bench_proxy_sensor.py``
(``--no-old`` for this tree only, ``--quick`` for a smoke run).
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
sys.path.insert(0, str(REPO / "scripts"))

from bench_figures import bootstrap_median, load_average  # noqa: E402

OLD_COMMIT = "657dd81"  # main before the socket hooks: raw sys_enter/sys_exit

# Compiles the proxy sensor of the tree on sys.path[0], marks the pid in
# argv[2] as a proxy, then on each stdin line "on"/"off" attaches/detaches
# it and answers "ok"; ends on EOF.
HOLDER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from tracer.kernel.program import Program
from tracer.sensors.proxy import ProxySensor
sensor = ProxySensor()
bpf = Program([sensor]).compile()
sensor.bpf = bpf
sensor.set_pids([int(sys.argv[2])])
print("ready", flush=True)
for line in sys.stdin:
    sensor.detach()
    if line.strip() == "on":
        sensor.attach(bpf)
    print("ok", flush=True)
sensor.detach()
bpf.cleanup()
"""

# A process that is not a proxy: n 64-byte round trips over loopback TCP;
# prints ns per round trip.
PING_PONG = r"""
import socket, sys, time
n = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
a = socket.create_connection(srv.getsockname()); b, _ = srv.accept()
for s in (a, b):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"p" * 64
t = time.perf_counter_ns()
for _ in range(n):
    a.send(msg); b.recv(64); b.send(msg); a.recv(64)
print((time.perf_counter_ns() - t) / n)
"""


class Holder:
    def __init__(self, name: str, tree: Path, proxy_pid: int) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tree), str(proxy_pid)], cwd=tree,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"bench_proxy_sensor: the {self.name} sensor did not compile")

    def set(self, on: bool) -> None:
        self.proc.stdin.write("on\n" if on else "off\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            raise SystemExit(f"bench_proxy_sensor: the {self.name} sensor did not {'attach' if on else 'detach'}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def old_tree() -> Path:
    """The first design's tree, from git (cached in /tmp)."""
    path = Path(f"/tmp/tracer-proxy-bench-{OLD_COMMIT}")
    if not (path / "tracer").is_dir():
        from bench_overhead import archive_tree

        archive_tree(OLD_COMMIT, path)
    return path


def _syscalls(n: int) -> float:
    t = time.perf_counter_ns()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={n}"], check=True, capture_output=True)
    return (time.perf_counter_ns() - t) / (2 * n)


def _tcp(n: int) -> float:
    out = subprocess.run([sys.executable, "-c", PING_PONG, str(n)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def _pairs():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    a_out = socket.create_connection(srv.getsockname())
    a_in, _ = srv.accept()
    b_out = socket.create_connection(srv.getsockname())
    b_in, _ = srv.accept()
    srv.close()
    for s in (a_out, a_in, b_out, b_in):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    ap.add_argument("--calls", type=int, default=200_000, help="dd syscalls / 10 per round (and scales the others)")
    ap.add_argument("--no-old", action="store_true", help=f"leave out the first design ({OLD_COMMIT})")
    ap.add_argument("--quick", action="store_true", help="smoke run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_proxy_sensor: needs root (BPF)", file=sys.stderr)
        return 2
    if args.quick:
        args.rounds, args.calls = 2, 10_000
    from bench_bpf_stats import _prog_delta, _prog_stats, bpf_stats_on

    counts = {"syscall": args.calls * 5, "tcp": args.calls // 8, "relay": args.calls // 8}
    runs = {"syscall": lambda: _syscalls(counts["syscall"]), "tcp": lambda: _tcp(counts["tcp"]),
            "relay": lambda: _relay(counts["relay"], socks)}
    unit = {"syscall": "syscall", "tcp": "round trip", "relay": "relayed msg"}
    holders: list[Holder] = []
    socks = _pairs()
    try:
        if not args.no_old:
            holders.append(Holder(f"old ({OLD_COMMIT}: sys_enter/sys_exit)", old_tree(), os.getpid()))
        holders.append(Holder("new (tcp_rcv_space_adjust + sock_send_length)", REPO, os.getpid()))
        states = ["none"] + [h.name for h in holders]
        results = {w: {s: [] for s in states} for w in runs}
        for _ in range(args.rounds):
            for state in states:
                for h in holders:
                    h.set(h.name == state)
                for w, run in runs.items():
                    results[w][state].append(run())
        for h in holders:
            h.set(False)
        # One more round per sensor with BPF statistics on: runs and ns per run.
        bpf = {}
        with bpf_stats_on():
            for h in holders:
                h.set(True)
                for w, run in runs.items():
                    before = _prog_stats(h.proc.pid)
                    run()
                    progs = _prog_delta(before, _prog_stats(h.proc.pid))
                    ns = sum(v[0] for v in progs.values())
                    cnt = sum(v[1] for v in progs.values())
                    bpf[(h.name, w)] = (cnt / counts[w], ns / cnt if cnt else 0.0)
                h.set(False)
    finally:
        for h in holders:
            h.close()
        for s in socks:
            s.close()
    print(f"bench_proxy_sensor: {args.rounds} rounds; per round {counts['syscall'] * 2:,} dd syscalls, "
          f"{counts['tcp']:,} TCP round trips (another process), {counts['relay']:,} relayed messages (this process, "
          f"marked a proxy); load {load_average()}")
    for w in runs:
        base = results[w]["none"]
        print(f"  {w} (ns per {unit[w]})")
        for state in states:
            med = statistics.median(results[w][state])
            if state == "none":
                print(f"    {'no sensor':48s} {med:8.0f}")
                continue
            ratios = [b / a for a, b in zip(base, results[w][state])]
            lo, hi = bootstrap_median(ratios)
            runs_per, ns_run = bpf[(state, w)]
            print(f"    {state:48s} {med:8.0f} {med - statistics.median(base):+7.0f}   "
                  f"{statistics.median(ratios):.2f} [{lo:.2f}-{hi:.2f}]   "
                  f"{runs_per:5.2f} BPF runs per {unit[w]}, {ns_run:4.0f} ns per run (bpf_stats on)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
