#!/usr/bin/env python3
"""Cost of the BPF programs themselves (issues 3 and 5): ns per program run
(test_run, --live) and ns per sighting under a fixed ab load (--live --base).

Two measurements, each beside its baseline in the same run:

* ``test_run`` (default): the tc program (``trc_tc_eg``, as built for
  ``--port 8000``) is run by the kernel's BPF_PROG_TEST_RUN on a crafted
  Ethernet/IPv4/TCP frame, REPEAT times per call, best of ROUNDS calls, next
  to an empty tc program (the cost of running any program at all). Two
  frames: one to port 5201 (untraced: the early exit every other packet
  takes) and one to port 8000 (traced: the full path, packet cache hits). In
  trace mode the ring buffer is small and fills, so "traced" there is the
  sighting's cost without the event copy; in latency mode it is the whole
  cost. A third case, "fast", runs ``trc_tc_in`` on the traced frame: the
  same skb every run, on the loopback device (no role: tc ingress there
  does not end a journey), so after the first run every run is the tc fast
  path (a later hook of a followed packet), in trace mode appending a hop
  (a record every MAX_HOPS). All warm in the caches: what the instructions
  and locked operations cost, not the cold memory a live run also pays.
  No traffic, no noise from the workload: the figure to compare versions of
  bpf/ by.
* ``--live``: with the lab up, a real ``tracer trace --json --port 8000``
  (``--mode trace``) or ``tracer latency --port 8000 --port 5201`` (the
  default) runs while ab or iperf3 drives traffic, and the kernel's BPF
  statistics (on while a BPF_ENABLE_STATS fd is held, scripts/bench_bpf_stats.py
  bpf_stats_on: the sysctl kernel.bpf_stats_enabled is not written) give runs
  per second and mean ns per *program run* of every ``trc_`` program of that
  tracer (proxy sensor included), and of all of them together ("all"). The
  statistics themselves add clock reads around each run: on this VM a
  program that returns at once showed about 100 ns per run this way (32 ns
  by test_run), so live figures are upper bounds.
* ``--live --base DIR``: the same under a fixed load, ``ab -n N -c 8`` to
  :8000 (``--requests``), for this tree and for another checkout of the
  project (``git archive REV | tar -x -C DIR``), alternating round by round
  (``--rounds``), each side's ``trace --json --port 8000 --no-proxy-links``
  started from its own tree (the proxy sensor's socket programs are not the
  traced path). Per side: ns per run and runs per HTTP request of each
  program, BPF ns per request, and **BPF ns per sighting**: the ns of all of
  the tracer's programs (tc, netfilter, drop tracepoint) over the hops of the
  journeys it printed, so the early exits of untraced packets are paid for
  by the sightings; the per-round ratio new/base as a median with a
  bootstrap 95 % interval. This is the figure to compare versions of bpf/
  by. ``scripts/bench_overhead.py``'s BPF phase measures something else: the
  tracer as users run it (proxy sensor on, both ports), per program run and
  per sighting, in the run that measures the ratios (docs/benchmarks.md,
  "How to reproduce", says why the two differ).
  On a shared machine a round where either side also saw someone else's
  traffic (sightings per request more than 3 % above that side's fewest,
  or runs per request 10 % above) is left out of the ratios, and said
  (``--quick`` keeps them: a smoke run).

Run as root from the repo: ``.venv/bin/python scripts/bench_bpf.py``
(``--live`` needs ``tracer lab up``; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_overhead as bo  # noqa: E402 (scripts/ is on the path from here)
from bench_bpf_stats import _prog_delta, _prog_stats  # noqa: E402
from bench_figures import bootstrap_median, load_average  # noqa: E402

EMPTY_TC = "\nint trc_bench_empty(struct __sk_buff *ctx) { return -1; }\n"


def frame(dport: int, src: str = "198.18.0.2", flags: int = 0x10) -> bytes:
    """Ethernet + IPv4 + TCP (ACK unless flags) + 64 bytes, src:40000 -> 198.18.0.1:dport."""
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + 64, 7, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton("198.18.0.1"))
    return b"\x02" * 12 + b"\x08\x00" + ip + tcp + b"x" * 64


def bench_test_run(repeat: int, rounds: int) -> None:
    from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun
    from tracer.kernel.kernel_filter import Filter
    from tracer.kernel.program import Program
    from tracer.sensors.drops import DropSensor
    from tracer.sensors.netfilter import NetfilterSensor
    from tracer.sensors.tc import TcSensor

    print(f"bench_bpf: BPF_PROG_TEST_RUN of trc_tc_eg (--port 8000), {repeat:,} runs per call, best of {rounds}")
    print(f"  {'mode':8s} {'empty program':>14s} {'untraced':>9s} {'traced':>7s} {'fast':>5s}   (ns per run; ours minus empty)")
    for latency in (False, True):
        program = Program([TcSensor([], latency=latency), NetfilterSensor(), DropSensor()], Filter(ports=(8000,)),
                          latency=latency, ringbuf_pages=16)
        bpf = _compile(program, EMPTY_TC)
        try:
            program.filter.fill_maps(bpf)
            empty = bpf.load_func("trc_bench_empty", BPF_PROG_TYPE_SCHED_CLS).fd
            ours = bpf.load_func("trc_tc_eg", BPF_PROG_TYPE_SCHED_CLS).fd
            fast = bpf.load_func("trc_tc_in", BPF_PROG_TYPE_SCHED_CLS).fd
            res = {}
            # Interleaved, so a busy moment hurts all four alike.
            for _ in range(rounds):
                for name, fd, port in (("empty", empty, 8000), ("untraced", ours, 5201), ("traced", ours, 8000),
                                       ("fast", fast, 8000)):
                    ns = ProgTestRun(fd, frame(port)).run(repeat)
                    res[name] = min(res.get(name, ns), ns)
        finally:
            bpf.cleanup()
        e = res["empty"]
        print(f"  {'latency' if latency else 'trace':8s} {e:14d} {res['untraced']:9d} {res['traced']:7d} {res['fast']:5d}   "
              f"(+{res['untraced'] - e} / +{res['traced'] - e} / +{res['fast'] - e})")


# Filters as options and as pcap-filter expressions (bpf/pcap_filter.h): what
# an untraced packet pays for the expression (its bytes copied, the
# translated classic BPF run) and what a traced one does.
FILTERS = (
    ("--port 8000", {"ports": (8000,)}),
    ("'tcp port 8000'", {"expression": "tcp port 8000"}),
    ("'tcp port 8000 and not host 198.18.0.9'", {"expression": "tcp port 8000 and not host 198.18.0.9"}),
    ("'tcp[tcpflags] & tcp-syn != 0 and dst port 8000'", {"expression": "tcp[tcpflags] & tcp-syn != 0 and dst port 8000"}),
    ("'host A or .. host E or port 53 or port 9999 or port 8000'", {"expression": " or ".join(
        [f"host 10.9.9.{i}" for i in range(1, 6)] + ["port 53", "port 9999", "port 8000"])}),
)


def bench_filters(repeat: int, rounds: int) -> None:
    """trc_tc_eg (trace mode) as built for each filter, on an untraced frame
    (to port 5201 from 198.18.0.2: the last filter matches it) and a traced
    one (port 8000, SYN for the SYN-only expression), interleaved."""
    from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun
    from tracer.kernel.program import Program
    from tracer.sensors.drops import DropSensor
    from tracer.sensors.netfilter import NetfilterSensor
    from tracer.sensors.tc import TcSensor
    from tracer.targets import Targets

    print(f"bench_bpf --filters: BPF_PROG_TEST_RUN of trc_tc_eg (trace mode), {repeat:,} runs per call, best of {rounds}")
    built = []
    try:
        for label, kw in FILTERS:
            program = Program([TcSensor([]), NetfilterSensor(), DropSensor()], Targets(**kw).kernel_filter(), ringbuf_pages=16)
            bpf = _compile(program, EMPTY_TC)
            program.filter.fill_maps(bpf)
            built.append((label, bpf, bpf.load_func("trc_bench_empty", BPF_PROG_TYPE_SCHED_CLS).fd,
                          bpf.load_func("trc_tc_eg", BPF_PROG_TYPE_SCHED_CLS).fd))
        res: dict = {}
        frames = {"untraced": frame(5201), "traced": frame(8000, flags=0x02)}
        for _ in range(rounds):
            for label, _bpf, empty, ours in built:
                for name, fd, f in (("empty", empty, frames["traced"]), *((k, ours, v) for k, v in frames.items())):
                    ns = ProgTestRun(fd, f).run(repeat)
                    res[(label, name)] = min(res.get((label, name), ns), ns)
    finally:
        for _label, bpf, _e, _o in built:
            bpf.cleanup()
    print(f"  {'filter':60s} {'insns':>5s} {'empty':>6s} {'untraced':>8s} {'traced':>7s}   (ns per run)")
    from tracer.pcap import compile_filter

    for (label, kw), _b in zip(FILTERS, built):
        r = {k: res[(label, k)] for k in ("empty", "untraced", "traced")}
        insns = len(compile_filter(kw["expression"]).insns) if "expression" in kw else "-"
        print(f"  {label:60s} {insns:>5} {r['empty']:6d} {r['untraced']:8d} {r['traced']:7d}")
    print("  untraced: 198.18.0.2:40000 -> 198.18.0.1:5201 (ACK); traced: -> :8000 (SYN)")


def _compile(program, extra: str):
    """The program as tracer builds it, plus `extra` C (same flags)."""
    from bcc import BPF

    from tracer.kernel.headers import ensure_bcc_headers

    ensure_bcc_headers()
    return BPF(text=program.source() + extra, cflags=program.cflags())


def bench_live(mode: str, workload: str, quick: bool) -> None:

    status = bo.lab_status()
    ports = (8000,) if mode == "trace" else (8000, 5201)
    tracer = bo.Tracer(ports, mode)
    try:
        with bo.bpf_stats_on():
            before, t0 = _prog_stats(tracer.proc.pid), time.monotonic()
            requests = 0
            if workload == "http":
                requests = 300 if quick else 5000
                rate = f"{bo.run_ab(status, requests, 8):.0f} req/s"
            else:
                rate = f"{bo.run_iperf(status, 1 if quick else 5) / 1e9:.2f} Gbit/s"
            after, wall = _prog_stats(tracer.proc.pid), time.monotonic() - t0
    finally:
        tracer.stop()
    print(f"bench_bpf --live: tracer {mode} {' '.join('--port ' + str(p) for p in ports)}, {workload} {rate}, "
          f"{wall:.1f} s (kernel.bpf_stats_enabled: upper bounds, its clock reads included); ns per program run, "
          f"every program of the tracer (a run is not a sighting: untraced packets and socket calls are runs too)")
    per_request = f" {'runs/req':>8s}" if requests else ""
    print(f"  {'program':14s} {'runs/s':>9s} {'ns/run':>7s} {'% of a core':>11s}{per_request}")
    total, total_runs = 0.0, 0
    for name in sorted(after):
        ns = after[name][0] - before.get(name, (0, 0))[0]
        runs = after[name][1] - before.get(name, (0, 0))[1]
        if runs:
            total += ns
            total_runs += runs
            per_request = f" {runs / requests:8.1f}" if requests else ""
            print(f"  {name:14s} {runs / wall:9.0f} {ns / runs:7.0f} {100 * ns / 1e9 / wall:11.2f}{per_request}")
    per_request = f" {total_runs / requests:8.1f}" if requests else ""
    print(f"  {'all':14s} {'':9s} {total / max(total_runs, 1):7.0f} {100 * total / 1e9 / wall:11.2f}{per_request}")


class TreeTracer(bo.Tracer):
    """`tracer trace --json --port 8000 --no-proxy-links` (or `tracer latency
    --json --port 8000`) run from a given tree (its own bpf/ and tracer/),
    output kept to count journey hops (latency: sightings since the start,
    which each interval line counts)."""

    def __init__(self, tree: Path, timeout: float = 60, noop: bool = False, mode: str = "trace") -> None:
        self.hops = 0
        super().__init__((8000,), mode, ready_timeout=timeout, noop=noop, tree=tree,
                         extra=("--no-proxy-links",) if mode == "trace" else ("--json",), shell_cflags=False)

    def latency_sightings(self) -> int:
        n = 0
        with open(self.out.name) as f:
            for line in f:
                if line.startswith("{"):
                    n = sum(json.loads(line).get("sightings", {}).values())
        return n

    def journeys(self) -> int:
        journeys = 0
        with open(self.out.name) as f:
            for line in f:
                if line.startswith("{"):
                    journeys += 1
                    self.hops += len(json.loads(line).get("hops", ()))
        return journeys

    def stop(self) -> tuple[int, int]:
        """Stop it; (journeys, hops) it printed (latency: (0, sightings))."""
        if self.mode == "latency":
            bo.interrupt(self.proc)  # its last interval printed; stop() then removes the output
            sightings = self.latency_sightings()
            super().stop()
            return 0, sightings
        return super().stop()["packets"], self.hops


def live_round(tree: Path, status: dict, requests: int, noop: bool = False, mode: str = "trace") -> dict | str:
    """`tree`'s tracer (TreeTracer) under ab -n `requests` -c 8 to :8000:
    {"progs": (ns, runs) per program, "rate": req/s, "journeys", "hops"};
    or, when ab failed (the lab was busy), why, and the round is left out."""
    tracer = TreeTracer(tree, noop=noop, mode=mode)
    try:
        before = _prog_stats(tracer.proc.pid)
        rate = bo.run_ab(status, requests, 8)
        time.sleep(1.2 if mode == "latency" else 0.3)  # journeys swept and printed; latency: the interval printed
        after = _prog_stats(tracer.proc.pid)
    except RuntimeError as exc:
        tracer.stop()
        return str(exc)[:80]
    journeys, hops = tracer.stop()
    return {"progs": _prog_delta(before, after), "rate": rate, "journeys": journeys, "hops": hops}


def live_rounds(status: dict, trees: dict[str, Path], rounds: int, requests: int, order=None, noop=(),
                mode: str = "trace"):
    """live_round of each tree, round after round, with kernel.bpf_stats_enabled
    on: in the order of `trees`, reversed every other round (or `order(r)`),
    trees named in `noop` built to return at once, `tracer trace` or `tracer
    latency` (mode). Yields (round, name, result), result None for a round
    left out (said)."""
    with bo.bpf_stats_on():
        for r in range(rounds):
            names = order(r) if order else (list(trees) if r % 2 == 0 else list(trees)[::-1])
            for name in names:
                got = live_round(trees[name], status, requests, noop=name in noop, mode=mode)
                if isinstance(got, str):
                    print(f"  round {r + 1} {name:4s}: left out ({got})")
                    got = None
                yield r, name, got


def bench_live_ab(base: Path, rounds: int, requests: int, floor: bool = False, mode: str = "trace",
                  keep_all: bool = False) -> None:
    """This tree against `base`, alternating, under the lab's HTTP workload
    (and, with `floor`, this tree's programs built to return at once), with
    `tracer trace` or `tracer latency`."""

    status = bo.lab_status()
    sides = {"base": base, "new": REPO, **({"noop": REPO} if floor else {})}
    res: dict[str, list[dict]] = {k: [] for k in sides}
    print(f"bench_bpf --live --base {base} --mode {mode}: {rounds} rounds of ab -n {requests} -c 8 to :8000, "
          f"alternating; load {load_average()}")
    print(f"  `{mode} --port 8000{' --no-proxy-links' if mode == 'trace' else ''}` of each tree; kernel.bpf_stats_enabled "
          f"(upper bounds: its clock reads included); ns of all the tracer's programs over "
          f"{'the hops of the journeys it printed (per sighting)' if mode == 'trace' else 'the sightings it counted'} "
          f"and over their runs (untraced packets are runs too)")

    def order(r: int) -> tuple[str, ...]:  # the floor last in every round
        return (("base", "new") if r % 2 == 0 else ("new", "base")) + (("noop",) if floor else ())

    for r, side, got in live_rounds(status, sides, rounds, requests, order, noop=("noop",), mode=mode):
        res[side].append(got)
        if got is None:
            continue
        ns = sum(v[0] for v in got["progs"].values())
        runs = sum(v[1] for v in got["progs"].values())
        hops = got["hops"]
        per = f"{ns / hops:4.0f} ns per sighting" if hops else f"{ns / max(runs, 1):4.0f} ns per run"
        print(f"  round {r + 1} {side:4s}: {got['rate']:6.0f} req/s, {ns / requests / 1e3:5.1f} us BPF per request, "
              f"{hops / requests:5.1f} sightings per request, {runs / requests:5.1f} runs per request, {per}")
    both = [i for i in range(rounds) if res["base"][i] and res["new"][i]]
    if keep_all:  # --quick: a smoke run of the machinery, not a measurement
        print("  (--quick: rounds with other traffic kept)")
    else:
        both = _without_other_traffic(res, both, requests)
    if not both:
        raise SystemExit("bench_bpf: no round to compare: every round had other traffic on :8000 or a side "
                         "that failed; run again when the port is quiet")
    _report_ab({k: [v[i] for i in both] for k, v in res.items() if k != "noop"}, requests)
    if floor:
        import numpy as np

        per_run = [sum(v[0] for v in x["progs"].values()) / max(sum(v[1] for v in x["progs"].values()), 1)
                   for x in res["noop"] if x]
        print(f"  floor (programs that return at once, same hooks): {np.median(per_run):.0f} ns per run")
    print(f"  load after: {load_average()}")


OTHER_TRAFFIC = 0.03  # sightings per request this far above a side's fewest: someone else's traffic on the port
OTHER_RUNS = 0.10  # runs per request this far above it: someone's untraced traffic (a trickle is normal)


def _without_other_traffic(res: dict[str, list[dict]], rounds: list[int], requests: int) -> list[int]:
    """The rounds whose every side saw only ab's traffic: on a shared machine
    another engineer's load during a round adds their packets' runs to it
    (and, on :8000, their hops: both sides trace every packet to the port)
    and mixes their traffic's cost into the figure. A round where either
    side saw more than OTHER_TRAFFIC above that side's fewest sightings per
    request, or OTHER_RUNS above its fewest runs, is left out, and said. Each side against its own
    fewest: the revisions may record a different number of hops per request
    (what an A/B is run for), and one pooled reference would leave out every
    round of the side with more. The fewest, not the median: other traffic
    only ever adds, and in a busy hour it is in most rounds (a round at 109
    sightings but 170-240 runs per request: someone's untraced stream)."""
    sides = ("base", "new")
    hops = {(i, s): res[s][i]["hops"] / requests for i in rounds for s in sides}
    runs = {(i, s): sum(v[1] for v in res[s][i].get("progs", {}).values()) / requests for i in rounds for s in sides}
    if not hops:
        return rounds
    fewest = {s: (min(hops[(i, s)] for i in rounds), min(runs[(i, s)] for i in rounds)) for s in sides}
    kept = [i for i in rounds if all(hops[(i, s)] <= fewest[s][0] * (1 + OTHER_TRAFFIC)
                                     and runs[(i, s)] <= fewest[s][1] * (1 + OTHER_RUNS) for s in sides)]
    for i in sorted(set(rounds) - set(kept)):
        print(f"  round {i + 1} left out: other traffic (base {hops[(i, 'base')]:.1f}, new {hops[(i, 'new')]:.1f} "
              f"sightings and {runs[(i, 'base')]:.1f}, {runs[(i, 'new')]:.1f} runs per request; fewest "
              f"{fewest['base'][0]:.1f}, {fewest['new'][0]:.1f} sightings and {fewest['base'][1]:.1f}, "
              f"{fewest['new'][1]:.1f} runs)")
    return kept


def _report_ab(res: dict[str, list[dict]], requests: int) -> None:
    import numpy as np

    names = sorted({n for side in res.values() for rnd in side for n in rnd["progs"]})
    print(f"  {'program':14s} | {'base ns/run':>11s} {'runs/req':>8s} | {'new ns/run':>10s} {'runs/req':>8s}   (medians over rounds)")
    for n in names:
        cells = []
        for side in ("base", "new"):
            per = [rnd["progs"].get(n, (0, 0)) for rnd in res[side]]
            ns_run = np.median([ns / cnt for ns, cnt in per if cnt]) if any(c for _, c in per) else float("nan")
            runs = np.median([cnt / requests for _, cnt in per])
            cells.append((ns_run, runs))
        print(f"  {n:14s} | {cells[0][0]:11.0f} {cells[0][1]:8.1f} | {cells[1][0]:10.0f} {cells[1][1]:8.1f}")

    def per_sighting(rnd):
        return sum(v[0] for v in rnd["progs"].values()) / max(rnd["hops"], 1)

    def per_run(rnd):
        return sum(v[0] for v in rnd["progs"].values()) / max(sum(v[1] for v in rnd["progs"].values()), 1)

    def per_request(rnd):
        return sum(v[0] for v in rnd["progs"].values()) / requests / 1e3

    for label, fn in (("BPF ns per sighting", per_sighting), ("BPF ns per run", per_run),
                      ("BPF us per request", per_request)):
        b = [fn(x) for x in res["base"]]
        n = [fn(x) for x in res["new"]]
        ratios = [y / x for x, y in zip(b, n) if x]
        lo, hi = bootstrap_median(ratios)
        print(f"  {label:20s}: base {np.median(b):7.1f}  new {np.median(n):7.1f}  "
              f"new/base {np.median(ratios):.3f} [{lo:.3f}-{hi:.3f}]")
    for side in ("base", "new"):
        hops = np.median([x["hops"] / requests for x in res[side]])
        print(f"  {side}: {hops:.1f} sightings per request, {np.median([x['rate'] for x in res[side]]):.0f} req/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200_000, help="runs per BPF_PROG_TEST_RUN call")
    ap.add_argument("--rounds", type=int, default=7, help="calls per case (best is kept)")
    ap.add_argument("--live", action="store_true", help="per-program statistics under real traffic (lab up)")
    ap.add_argument("--mode", choices=("trace", "latency"), default=None,
                    help="with --live (default latency; with --base, trace)")
    ap.add_argument("--workload", choices=("http", "stream"), default="stream", help="with --live")
    ap.add_argument("--base", type=Path, help="with --live: another checkout to compare with, alternating rounds")
    ap.add_argument("--requests", type=int, default=5000, help="with --live --base: ab requests per round")
    ap.add_argument("--floor", action="store_true", help="with --live --base: also no-op programs (the floor)")
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--filters", action="store_true", help="options against pcap-filter expressions (test_run)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_bpf: needs root (BPF)", file=sys.stderr)
        return 2
    if args.quick:
        args.repeat, args.rounds = 10_000, 2
    if args.filters:
        bench_filters(args.repeat, args.rounds)
    elif args.live and args.base:
        if not (args.base / "tracer" / "__main__.py").exists():
            print(f"bench_bpf: --base {args.base}: not a tracer checkout", file=sys.stderr)
            return 2
        bench_live_ab(args.base.resolve(), 2 if args.quick else args.rounds, 300 if args.quick else args.requests,
                      args.floor, args.mode or "trace", keep_all=args.quick)
    elif args.live:
        bench_live(args.mode or "latency", args.workload, args.quick)
    else:
        bench_test_run(args.repeat, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
