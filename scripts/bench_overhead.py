#!/usr/bin/env python3
"""Tracing overhead on the lab path, side by side with tcpdump (issue 9).

From the lab's client netns through DNAT into the container
(198.18.0.2 -> 198.18.0.1:P -> 172.17.0.2), in one run, these states
alternate round by round (the order rotates every round):

* untraced:   no tracer;
* tcpdump:    ``tcpdump -i any -nn -s 256 -w FILE`` on the same flows (filter
              ``port 8000 or port 8080 or port 5201``: the published ports and
              the container's port after DNAT): the peer users would pick;
* trace:      ``tracer trace --json --port 8000 --port 5201`` (both flows);
* record:     ``tracer record -w FILE --port 8000 --port 5201 --quiet``;
* latency:    ``tracer latency --port 8000 --port 5201 --interval 1``
              (in-kernel histograms);
* noop:       latency's programs built with ``TRACER_BPF_CFLAGS=-DTRACER_NOOP``:
              every program attached but returning at once. Not a product
              state: the floor any tracer on these hooks pays;
* trace-lean, record-lean, latency-lean, noop-lean (only with ``--states``):
              the same with ``--hooks lean`` (5 BPF runs a forwarded packet
              instead of 9: README, Performance);
* trace8000 / trace5201 (only with ``--states``): one port traced, so the
              other workload is traffic to an untraced port while tracing;
* rules:      ``tracer trace --json --rules --port 8000 --port 5201``: rule
              attribution (issue 10) on both flows (nf_tables traces every
              rule each packet meets);
* rules8000 (only with ``--states``): ``--rules`` with port 8000 only, so the
              stream is untraced traffic while our nft table marks the
              traced one: compare with trace8000 (the issue: untraced
              traffic pays nothing beyond the normal trace floor).

In every state both workloads run one after the other:

* HTTP: ``ab -n N -c 8 http://198.18.0.1:8000/`` in the client netns
  (a new connection per request: busybox httpd closes each one);
* stream: ``iperf3 -c 198.18.0.1 -p 5201 -t T -J`` in the client netns.

The tracer (or tcpdump) is a real subprocess, fully attached before the
workload starts, writing to a file, so its user-space cost is counted. It is
caught up (its CPU back near idle) before the second workload starts, and
stopped with SIGINT afterwards. Its CPU (utime + stime, all threads, from
/proc/PID/stat) is taken over the workloads.

Reported per (workload, state): the ratio of medians against untraced, and
the median of each round's ratio to that round's untraced run with a
bootstrap 95 % interval (targets are judged on that median). Per state: the
tracing process's CPU per traced packet (µs; packets are journeys for
tracer, captured frames for tcpdump, which sees a packet once per interface
it crosses) and, in a final phase with ``kernel.bpf_stats_enabled`` (so the
statistics' own clock reads do not touch the ratios), the BPF cost of
``trace``, ``record`` and ``latency`` under one ``ab -n N -c 8``:

* BPF ns per program run: run_time_ns / run_cnt summed over *every* ``trc_``
  program the tracer process holds: the tc and netfilter sensors on both
  ports, the drop tracepoint and the proxy sensor's socket raw tracepoints
  (attached while docker-proxy runs; they run on every TCP receive and socket send on the host). A run is not
  a sighting: untraced packets crossing a hooked interface and socket calls
  are runs too.
* BPF ns per sighting (``trace``: hops of the journeys it printed;
  ``record``: sightings in its capture): the same ns over what the user sees.
* Conditions: the tracer as a user runs it (proxy sensor on, both ports,
  writing its output), so its own user-space CPU shares the 2 vCPUs with the
  softirqs that run the programs, and the figure includes the cache and
  scheduling effects of that; other engineers' traffic through the hooked
  interfaces adds runs. ``scripts/bench_bpf.py --live --base`` measures
  ``trace --port 8000 --no-proxy-links`` alone under the same ab, per
  sighting, alternating with a baseline tree: the figure to compare
  versions of bpf/ by. The two differ by design (docs/benchmarks.md, "How
  to reproduce").

Targets (issue 9): trace and record at least tcpdump's ratio in the same run,
on the way to >= 0.95; latency >= 0.95; user-space CPU per packet: record
<= 1 µs, trace --json <= 3 µs; BPF <= 200 ns per sighting.

Run as root from the repo with the lab up (``tracer lab up``):
``.venv/bin/python scripts/bench_overhead.py`` (``--quick`` for a smoke run).
Nothing is pinned: the tracer competes for CPU with the traffic, as it would
in production.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # sibling benchmark helpers (also when loaded by path, as tests do)

from bench_bpf_stats import _prog_delta, _prog_stats, bpf_stats_on  # noqa: E402
from bench_figures import bootstrap_median, tree_env  # noqa: E402

STATES = ("untraced", "tcpdump", "trace", "record", "latency", "noop", "trace-lean", "record-lean", "latency-lean",
          "noop-lean", "trace8000", "trace5201", "rules", "rules8000")
DEFAULT_STATES = ("untraced", "tcpdump", "trace", "record", "latency", "noop")
BOTH = (8000, 5201)
TRACED_PORT = {"untraced": None, "tcpdump": BOTH, "trace": BOTH, "record": BOTH, "latency": BOTH, "noop": BOTH,
               "trace-lean": BOTH, "record-lean": BOTH, "latency-lean": BOTH, "noop-lean": BOTH,
               "trace8000": (8000,), "trace5201": (5201,), "rules": BOTH, "rules8000": (8000,)}
MODE = {"tcpdump": "tcpdump", "trace": "trace", "record": "record", "latency": "latency", "noop": "latency",
        "trace-lean": "trace", "record-lean": "record", "latency-lean": "latency", "noop-lean": "latency",
        "trace8000": "trace", "trace5201": "trace", "rules": "rules", "rules8000": "rules"}
EXTRA = {state: ("--hooks", "lean") for state in ("trace-lean", "record-lean", "latency-lean", "noop-lean")}
NOOP = ("noop", "noop-lean")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_times(pid))


def archive_tree(rev: str, where: Path, *paths: str) -> Path:
    """The files of ``rev`` (all, or ``paths``) extracted into ``where``:
    the baseline a benchmark runs side by side with this tree."""
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, *paths], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def interrupt(proc: subprocess.Popen, wait_s: float = 60, sig: int = signal.SIGINT) -> None:
    """Stop a tracer (or tcpdump) as a user does, with Ctrl-C (or ``sig``);
    killed if it has not ended within wait_s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lab_status() -> dict:
    from tracer import lab

    status = lab.status()
    if not status.get("up"):
        raise SystemExit(f"{Path(sys.argv[0]).stem}: the lab is not up ({status.get('problems')}): run `tracer lab up`")
    return status


class Tracer:
    """A tracing subprocess, attached and writing to a file: ``tracer trace
    --json``, ``tracer record -w``, ``tracer latency`` or ``tcpdump -w``;
    the tracer of ``tree`` (this one, or a baseline's checkout), with
    ``extra`` arguments; ``shell_cflags``: this shell's TRACER_BPF_CFLAGS
    apply (False: the programs as shipped, as a comparison of trees wants)."""

    READY = {"tcpdump": "listening on"}

    def __init__(self, ports: tuple[int, ...], mode: str = "trace", ready_timeout: float = 60,
                 noop: bool = False, tree: Path = REPO, extra: tuple[str, ...] = (), shell_cflags: bool = True) -> None:
        self.out = tempfile.NamedTemporaryFile(prefix="bench-trace-", suffix=".out", delete=False)
        self.err = tempfile.NamedTemporaryFile(prefix="bench-trace-", suffix=".err", delete=False)
        self.mode = mode
        self.capture = self.out.name + (".pcap" if mode == "tcpdump" else ".arrows")
        port_args = [a for port in ports for a in ("--port", str(port))]
        if mode == "tcpdump":
            expr = " or ".join(f"port {p}" for p in (*ports, *((8080,) if 8000 in ports else ())))
            cmd = ["tcpdump", "-i", "any", "-nn", "-s", "256", "-w", self.capture, expr]
        else:
            args = {"trace": ["trace", "--json"], "record": ["record", "--quiet", "-w", self.capture],
                    "latency": ["latency", "--interval", "1"], "rules": ["trace", "--json", "--rules"]}[mode]
            cmd = [sys.executable, "-m", "tracer", *args, *port_args, *extra]
        t0 = time.monotonic()
        env = tree_env(tree)
        if not shell_cflags:
            env.pop("TRACER_BPF_CFLAGS", None)
        if noop:  # every program returns at once: the floor (dispatch and the statistics' own clock reads)
            env["TRACER_BPF_CFLAGS"] = "-DTRACER_NOOP"
        self.proc = subprocess.Popen(cmd, env=env, cwd=tree, stdout=self.out, stderr=self.err, start_new_session=True)
        self.cpu_mark()  # stop() works before it is ready
        ready = self.READY.get(mode, "Ctrl-C")
        while True:
            text = Path(self.err.name).read_text(errors="replace")
            if ready in text:
                break
            if self.proc.poll() is not None:
                self.stop()  # its temporary files
                raise RuntimeError(f"{mode} exited ({self.proc.returncode}) before attaching: {text.strip()}")
            if time.monotonic() - t0 > ready_timeout:
                self.stop()
                raise RuntimeError(f"{mode} not ready after {ready_timeout}s: {text.strip()}")
            time.sleep(0.05)
        self.ready_s = time.monotonic() - t0
        self.cpu_mark()

    def cpu_mark(self) -> None:
        """Start of the measured window (the workload)."""
        self.cpu0, self.wall0 = cpu_seconds(self.proc.pid), time.monotonic()

    def wait_quiet(self, below_pct: float = 6.0, window: float = 0.5, limit: float = 20.0) -> float:
        """Wait until the tracer has caught up with what the last workload
        made it queue (its CPU over `window` s below `below_pct`% of a core),
        so the next workload does not pay for the previous one's events.
        Returns the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < limit and self.proc.poll() is None:
            c0, t0 = cpu_seconds(self.proc.pid), time.monotonic()
            time.sleep(window)
            if 100 * (cpu_seconds(self.proc.pid) - c0) / (time.monotonic() - t0) < below_pct:
                break
        return time.monotonic() - start

    def cpu_percent(self) -> float:
        """% of one core used by the tracer since cpu_mark()."""
        return 100 * (cpu_seconds(self.proc.pid) - self.cpu0) / (time.monotonic() - self.wall0)

    def stop(self) -> dict:
        """Stop it; returns its CPU % over the workloads, packets it traced
        (journeys; captured frames for tcpdump), lost records, exit code."""
        cpu = self.cpu_percent() if self.proc.poll() is None else None
        cpu_s = cpu_seconds(self.proc.pid) - self.cpu0 if self.proc.poll() is None else None
        interrupt(self.proc)
        err = Path(self.err.name).read_text(errors="replace")
        packets = None
        sightings = self.sightings()
        if self.mode in ("trace", "rules"):
            packets = self.journeys()
        elif self.mode == "record":
            packets = _capture_packets(self.capture)
        elif self.mode == "tcpdump":
            m = re.search(r"(\d+) packets? captured", err)
            packets = int(m.group(1)) if m else None
        elif self.mode == "latency":
            with open(self.out.name, "rb") as f:
                packets = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))  # output lines
        for f in (self.out, self.err):
            f.close()
            os.unlink(f.name)
        if os.path.exists(self.capture):
            os.unlink(self.capture)
        lost, records = parse_lost(err)
        m = re.search(r"rules: ([\d,]+) rule hits on journeys", err)
        return {"packets": packets, "sightings": sightings, "lost": lost, "records": records, "rc": self.proc.returncode,
                "stderr": err, "cpu_pct": cpu, "cpu_s": cpu_s,
                "rule_hits": int(m.group(1).replace(",", "")) if m else None}


    def sightings(self) -> int | None:
        """Sightings the run showed or wrote, once stopped: the hops of the
        journeys `trace --json` printed (one "hook" key each), the sighting
        rows of `record`'s capture; None for other modes."""
        if self.mode in ("trace", "rules"):
            with open(self.out.name, "rb") as f:
                return sum(chunk.count(b'"hook":') for chunk in _chunks(f))
        if self.mode == "record":
            from tracer.capture.reader import read_capture

            try:
                return read_capture([self.capture]).events.num_rows
            except Exception:
                return None
        return None

    def journeys(self) -> int:
        """Journeys `trace --json` printed (its output lines), once stopped."""
        with open(self.out.name, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _chunks(f):
    return iter(lambda: f.read(1 << 20), b"")


def _capture_packets(path: str) -> int | None:
    """Packets in a capture (its closing statistics row)."""
    from tracer.capture.reader import read_capture

    try:
        stats = read_capture([path]).stats or {}
    except Exception:
        return None
    return stats.get("packets")


def parse_lost(summary: str) -> tuple[int | None, int | None]:
    """(lost, records) from the summary's "lost journeys: L of N" line (or
    "lost events" of the per-sighting build), or record's "N events ...; L lost"."""
    m = re.search(r"lost (?:events|journeys): ([\d,]+) of ([\d,]+)", summary)
    if m:
        return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))
    m = re.search(r"; ([\d,]+) lost", summary)
    return (int(m.group(1).replace(",", "")), None) if m else (None, None)


def other_tracer_progs(mine: int = 0) -> int:
    """BPF programs named trc_* loaded by someone else (other tracers running:
    their sensors add cost to every state, "untraced" included)."""
    try:
        from tracer.kernel.bpf_syscall import list_progs

        return max(0, sum(1 for p in list_progs() if p.name.startswith("trc_")) - mine)
    except Exception:
        return -1


def netns_cmd(status: dict, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", status["netns"], *cmd]


def run_ab(status: dict, n: int, concurrency: int) -> float:
    url = f"http://{status['host_address']}:{status['port']}/"
    for attempt in range(3):
        done = subprocess.run(netns_cmd(status, "ab", "-q", "-n", str(n), "-c", str(concurrency), "-s", "10", url),
                              capture_output=True, text=True, timeout=300)
        m = re.search(r"Requests per second:\s+([\d.]+)", done.stdout)
        failed = re.search(r"Failed requests:\s+(\d+)", done.stdout)
        if done.returncode == 0 and m and failed and int(failed.group(1)) == 0:
            return float(m.group(1))
        time.sleep(1)
    raise RuntimeError(f"ab failed: {done.stdout[-500:]} {done.stderr[-500:]}")


def run_iperf(status: dict, seconds: float) -> float:
    port = str(status.get("iperf_port", 5201))
    last = ""
    for attempt in range(10):  # the server takes one client at a time: others may be testing
        done = subprocess.run(netns_cmd(status, "iperf3", "-c", status["host_address"], "-p", port, "-t", str(seconds), "-J"),
                              capture_output=True, text=True, timeout=seconds + 60)
        try:
            data = json.loads(done.stdout)
        except json.JSONDecodeError:
            data = {"error": done.stdout[-300:] + done.stderr[-300:]}
        if "error" not in data:
            return data["end"]["sum_received"]["bits_per_second"]
        last = data["error"]
        time.sleep(1 + attempt)
    raise RuntimeError(f"iperf3 failed: {last}")


def bpf_cost(status: dict, mode: str, requests: int, extra: tuple[str, ...] = ()) -> dict | None:
    """The BPF cost of a tracer in `mode` (both ports, as a user runs it)
    under ab, with kernel.bpf_stats_enabled on for this phase only: ns per
    run of all its programs, per sighting it showed or wrote (None for
    latency), per HTTP request (see the module's docstring)."""
    tracer = Tracer(BOTH, mode, extra=extra)
    try:
        with bpf_stats_on():
            before = _prog_stats(tracer.proc.pid)
            run_ab(status, requests, 8)
            after = _prog_stats(tracer.proc.pid)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  BPF cost of {mode}: not measured ({exc})")
        return None
    finally:
        stopped = tracer.stop()
    progs = _prog_delta(before, after)
    ns = sum(v[0] for v in progs.values())
    runs = sum(v[1] for v in progs.values())
    sightings = stopped.get("sightings")
    return {"ns_per_run": ns / runs if runs else None, "runs_per_request": runs / requests, "ns_per_request": ns / requests,
            "ns_per_sighting": ns / sightings if sightings else None,
            "sightings_per_request": sightings / requests if sightings else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=5000, help="ab -n (default 5000)")
    ap.add_argument("--concurrency", type=int, default=8, help="ab -c (default 8)")
    ap.add_argument("--seconds", type=float, default=5, help="iperf3 -t (default 5)")
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    ap.add_argument("--states", default=",".join(DEFAULT_STATES),
                    help=f"comma-separated subset of {','.join(STATES)} (untraced is always run)")
    ap.add_argument("--no-bpf-cost", action="store_true", help="skip the final BPF statistics phase")
    args = ap.parse_args()
    asked = {s for s in args.states.split(",") if s}
    if asked - set(STATES):
        ap.error(f"unknown --states {','.join(sorted(asked - set(STATES)))} (choose from {','.join(STATES)})")
    states = tuple(s for s in STATES if s == "untraced" or s in asked)
    if os.geteuid() != 0:
        print("bench_overhead: needs root (BPF, netns)", file=sys.stderr)
        return 2
    if args.quick:
        args.rounds, args.requests, args.seconds = 1, 300, 1
    status = lab_status()
    print(f"bench_overhead: {os.cpu_count()} CPUs, kernel {os.uname().release}; client {status['client_address']} -> "
          f"{status['host_address']}:{status['port']} -> {status['container']} {status['container_ip']}; "
          f"{args.rounds} rounds; ab -n {args.requests} -c {args.concurrency}; iperf3 -t {args.seconds:g}; "
          f"states {', '.join(states)}", flush=True)

    results: dict[tuple[str, str], list[float]] = {}
    tracer_stats: dict[str, list[dict]] = {s: [] for s in states if TRACED_PORT[s]}
    for r in range(args.rounds):
        k = r % len(states)
        order = states[k:] + states[:k]
        if r % 2:
            order = order[::-1]
        for state in order:
            ports = TRACED_PORT[state]
            tracer = Tracer(ports, MODE[state], noop=state in NOOP, extra=EXTRA.get(state, ())) if ports else None
            try:
                workloads = (("http", lambda: run_ab(status, args.requests, args.concurrency)),
                             ("stream", lambda: run_iperf(status, args.seconds)))
                if r % 2:
                    workloads = workloads[::-1]
                got = {}
                got["others"] = other_tracer_progs() if tracer is None else None
                if tracer is not None:
                    tracer.cpu_mark()
                for i, (name, fn) in enumerate(workloads):
                    if i and tracer is not None:
                        tracer.wait_quiet()
                    got[name] = fn()
                    results.setdefault((name, state), []).append(got[name])
            finally:
                stats = tracer.stop() if tracer else None
            line = f"  round {r + 1} {state:12s}: http {got['http']:8.0f} req/s, stream {got['stream'] / 1e9:6.2f} Gbit/s"
            if got["others"]:
                line += f" (other tracers attached: {got['others']} trc_ programs)"
            if stats:
                stats["ready_s"] = tracer.ready_s
                tracer_stats[state].append(stats)
                what = {"tcpdump": "frames", "latency": "output lines"}.get(MODE[state], "packets")
                line += f"; ready in {tracer.ready_s:.1f}s, {stats['packets'] if stats['packets'] is not None else '?'} {what}"
                if MODE[state] in ("trace", "record", "rules"):
                    line += f", {stats['lost'] if stats['lost'] is not None else '?'} lost"
                line += f", CPU {stats['cpu_pct']:.1f}% of a core" if stats["cpu_pct"] is not None else ""
                if stats["rc"] not in (0, -signal.SIGINT, 130):
                    line += f" (exit {stats['rc']}: {stats['stderr'].strip()[-200:]})"
            print(line, flush=True)

    print()
    print(f"overhead over {args.rounds} alternating rounds: ratio of medians to untraced, and the median of each "
          f"round's ratio to that round's untraced run [bootstrap 95 % interval]")
    print(f"  {'':34s} {'untraced':>9s} {'state':>9s} {'ratio':>6s} {'per-round median [95 % CI]':>28s}")
    per_round: dict[tuple[str, str], float] = {}
    for workload, unit, scale in (("http", "req/s", 1), ("stream", "Gbit/s", 1e9)):
        for state in states:
            if state == "untraced" or (workload, state) not in results:
                continue
            base = statistics.median(results[(workload, "untraced")])
            value = statistics.median(results[(workload, state)])
            paired = [t / b for t, b in zip(results[(workload, state)], results[(workload, "untraced")])]
            med = per_round[(workload, state)] = statistics.median(paired)
            lo, hi = bootstrap_median(paired)
            label = f"{workload} {unit}, {state}"
            print(f"  {label:34s} {base / scale:9.2f} {value / scale:9.2f} {value / base:6.3f} "
                  f"{med:>12.3f} [{lo:.2f}-{hi:.2f}]")

    print()
    print("  tracing process, during the workloads:")
    cpu_per_packet: dict[str, float] = {}
    for state, stats in tracer_stats.items():
        cpus = [s["cpu_pct"] for s in stats if s["cpu_pct"] is not None]
        cpu = f"CPU % of a core: median {statistics.median(cpus):.1f}, max {max(cpus):.1f}" if cpus else "CPU n/a"
        extra = ""
        usable = [s for s in stats if s["cpu_s"] is not None and s["packets"]]
        if MODE[state] in ("trace", "record", "tcpdump", "rules") and usable:
            per = statistics.median(1e6 * s["cpu_s"] / s["packets"] for s in usable)
            cpu_per_packet[state] = per
            unit = "captured frame" if state == "tcpdump" else "traced packet"
            extra = f"; {per:.2f} µs CPU per {unit}"
        if MODE[state] in ("trace", "record", "rules"):
            lost = [s["lost"] for s in stats if s["lost"] is not None]
            extra += f"; lost journeys {sum(lost):,} over {len(stats)} runs"
        hits = [s["rule_hits"] / s["packets"] for s in stats if s.get("rule_hits") is not None and s["packets"]]
        if hits:
            extra += f"; {statistics.median(hits):.1f} rule hits per traced packet"
        print(f"    {state:12s}: {cpu}{extra}, median ready {statistics.median(s['ready_s'] for s in stats):.1f}s")

    bpf = {}
    if not args.no_bpf_cost:
        print()
        print(f"  BPF cost under ab -n {args.requests} -c 8, the tracer as users run it (kernel.bpf_stats_enabled, this phase only;")
        print("  upper bounds, the statistics' clock reads included). Per run: every program the tracer holds (tc, netfilter,")
        print("  drop and proxy-socket tracepoints: untraced packets and socket calls are runs too); per sighting: the same ns")
        print("  over the hops it showed or wrote. Its own CPU shares the vCPUs with the softirqs running them (bench_bpf.py")
        print("  --live --base: trace --no-proxy-links alone, per sighting, against a baseline: the figure to compare bpf/ by):")
        for state in ("trace", "record", "latency", "trace-lean", "record-lean", "latency-lean"):
            if state in states:
                bpf[state] = cost = bpf_cost(status, MODE[state], args.requests, EXTRA.get(state, ()))
                if cost and cost["ns_per_run"]:
                    per_sighting = (f"{cost['ns_per_sighting']:.0f} ns per sighting ({cost['sightings_per_request']:.0f} "
                                    f"per request), " if cost["ns_per_sighting"] else "")
                    print(f"    {state:12s}: {cost['ns_per_run']:.0f} ns per program run, {per_sighting}"
                          f"{cost['runs_per_request']:.0f} runs and {cost['ns_per_request'] / 1e3:.1f} µs per HTTP request")

    print()
    print("  targets (issue 9):")
    verdicts = []

    def judge(text: str, ok: bool | None) -> None:
        verdicts.append(ok)
        print(f"    {text}: {'n/a' if ok is None else 'met' if ok else 'NOT met'}")

    for state in ("trace", "record", "trace-lean", "record-lean"):
        for workload in ("http", "stream"):
            if (workload, state) in per_round and (workload, "tcpdump") in per_round:
                judge(f"{state} {workload} {per_round[(workload, state)]:.3f} >= tcpdump {per_round[(workload, 'tcpdump')]:.3f}",
                      per_round[(workload, state)] >= per_round[(workload, "tcpdump")])
    for state in ("latency", "latency-lean"):
        for workload in ("http", "stream"):
            if (workload, state) in per_round:
                judge(f"{state} {workload} {per_round[(workload, state)]:.3f} >= 0.95", per_round[(workload, state)] >= 0.95)
    for state, limit in (("record", 1.0), ("trace", 3.0), ("record-lean", 1.0), ("trace-lean", 3.0)):
        if state in cpu_per_packet:
            judge(f"{state} user-space CPU {cpu_per_packet[state]:.2f} µs per packet <= {limit:g}", cpu_per_packet[state] <= limit)
    for state, cost in bpf.items():
        if cost and cost["ns_per_sighting"]:
            judge(f"{state} BPF {cost['ns_per_sighting']:.0f} ns per sighting <= 200", cost["ns_per_sighting"] <= 200)
        elif cost and cost["ns_per_run"]:  # latency shows no sightings: its runs stand for them
            judge(f"{state} BPF {cost['ns_per_run']:.0f} ns per program run <= 200", cost["ns_per_run"] <= 200)
    print(f"  targets of the states run: {'met' if all(v is not False for v in verdicts) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
