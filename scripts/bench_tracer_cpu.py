#!/usr/bin/env python3
"""The tracing process's CPU per traced packet (issue 9), this tree side by
side with a baseline revision (``git archive`` into a temporary directory,
run with the same Python).

Two parts:

* ``--offline``: per stage, on real journey records (``--collect`` saves
  them from the lab first: ab and iperf3 from the client netns, both ports
  traced): journey rows from records, the JSON text, the human text, the
  summary, the capture writer; µs of CPU per packet (process time, best of
  ``--repeat`` per round; the capture writer's first run: one run a round,
  its own table), batches of ``--batch`` records as a busy pass hands them.
* ``--live``: `trace --json`, `record -w` and human `trace` as real
  subprocesses on the lab (``ab -n N -c 8`` to :8000, then ``iperf3 -t S``
  to :5201, both traced), baseline and this tree alternating round by round;
  the tracer's utime + stime (and utime alone) over the workloads per traced
  packet, and where the system time goes: stime, minor faults, write()
  calls and bytes written per packet. ``--sink`` is where `trace`'s output
  goes: a file (the figure the targets name), or, as diagnostics, a pipe
  this script reads, a file on tmpfs (/dev/shm) or /dev/null.

Per case: the median over rounds of each side, and the median of the
per-round ratios (this tree / baseline) with its range.

Usage (root, lab up for --collect and --live):
  scripts/bench_tracer_cpu.py --collect /tmp/rec.pkl
  scripts/bench_tracer_cpu.py --offline /tmp/rec.pkl --baseline-rev 657dd81 --rounds 5
  scripts/bench_tracer_cpu.py --live --baseline-rev 657dd81 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_figures import load_average, tree_env  # noqa: E402
# capture_first: the capture writer's first run in a fresh process, before
# any other stage: what a `record` run pays once (its memory's first page
# faults) with the steady cost
STAGES = ("rows", "json", "text", "summary", "capture", "capture_first")
MODES = {"json": ["trace", "--json"], "record": ["record", "--quiet", "-w", "{capture}"], "text": ["trace"]}


def collect(path: str, requests: int) -> None:
    """Journey records of the lab's traffic, released as the drain does, with their DecodeContext."""
    import copy

    import numpy as np

    sys.path.insert(0, str(REPO))
    from bench_overhead import lab_status, netns_cmd
    from tracer.record_words import concat
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    status = lab_status()
    session = TraceSession(TraceOptions(targets=Targets(ports=(8000, 5201))))
    session.start()
    try:
        parts = []
        url = f"http://{status['host_address']}:{status['port']}/"
        for cmd in (["ab", "-q", "-n", str(requests), "-c", "8", url],
                    ["iperf3", "-c", status["host_address"], "-p", str(status.get("iperf_port", 5201)), "-t", "1"]):
            proc = subprocess.Popen(netns_cmd(status, *cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while proc.poll() is None:
                parts.append(session.read_records(0.05))
        time.sleep(0.4)
        parts.append(session.read_records(0.05))
        records = np.array(concat([p for p in parts if len(p)]))
        ctx = copy.copy(session.ctx)
        book = copy.copy(ctx.book)
        book.host_interfaces = None  # a bound method of the session: not needed offline
        ctx.book = book
        with open(path, "wb") as f:
            pickle.dump((records.tobytes(), records.dtype, ctx), f)
        print(f"{len(records):,} journey records ({int(records['n_hops'].sum()):,} hops) -> {path}")
    finally:
        session.close()


def stage_worker(path: str, batch: int, repeat: int) -> dict:
    """Per stage, best-of-``repeat`` µs of CPU per packet, with the tracer on
    sys.path[0]; freed memory kept for the next pass, as a live run keeps it
    (tracer/allocator.py; MIMALLOC_PURGE_DELAY set by main)."""
    import numpy as np

    try:
        from tracer.allocator import keep_heap_memory
    except ImportError:  # a baseline from before it
        pass
    else:
        keep_heap_memory()

    from tracer.capture.writer import CaptureWriter
    from tracer.journey_json import journey_json_block
    from tracer.journey_records import journey_rows_of_records
    from tracer.render import Summary
    from tracer.render_rows import render_rows

    with open(path, "rb") as f:
        raw, dtype, ctx = pickle.load(f)
    records = np.frombuffer(raw, dtype).copy()
    n = len(records)
    batches = [records[i:i + batch] for i in range(0, n, batch)]
    out = tempfile.NamedTemporaryFile(suffix=".arrows", delete=False).name

    def capture() -> None:
        with CaptureWriter(out, {"ktime_offset_ns": str(ctx.boot_offset_ns)}, journeys=True) as w:
            for b in batches:
                w.add_journeys(b, ctx)

    import resource

    use0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()  # first, in a fresh heap
    capture()
    first = 1e6 * (time.process_time() - t0) / n
    use1 = resource.getrusage(resource.RUSAGE_SELF)
    first_faults = 1000 * (use1.ru_minflt - use0.ru_minflt) / n  # the first run's page faults (4 kB or 2 MB each)
    first_mb = (use1.ru_maxrss - use0.ru_maxrss) / 1024  # how much its peak added to the process's
    rows = [journey_rows_of_records(b, ctx) for b in batches]
    summary = Summary()
    cases = {
        "rows": lambda: [journey_rows_of_records(b, ctx) for b in batches],
        "json": lambda: [journey_json_block(r) for r in rows],
        "text": lambda: [render_rows(r, False) for r in rows],
        "summary": lambda: [summary.add_table(r) for r in rows],
        "capture": capture,
    }
    result = {}
    for name, fn in cases.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        result[name] = 1e6 * best / n
    result["capture_first"] = first
    result.update(capture_first_faults=first_faults, capture_first_peak_mb=first_mb)
    os.unlink(out)
    return result


class _PipeCounter:
    """Reads a tracer's output from a pipe as fast as it comes (in place of
    a file: `trace --json | consumer`), counting the packets it shows the
    way live_run counts them in a file, without keeping the text."""

    def __init__(self, mode: str) -> None:
        import threading

        self.mode, self.packets, self._rest = mode, 0, b""
        self.read_fd, self.write_fd = os.pipe()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.read_fd, 1 << 20):
            if self.mode == "json":
                self.packets += chunk.count(b"\n")
                continue
            text = self._rest + chunk
            cut = text.rfind(b"\n") + 1
            self.packets += len(re.findall(rb"^\S+ #", text[:cut], re.M))
            self._rest = text[cut:]

    def close(self) -> int:
        self.thread.join(60)
        os.close(self.read_fd)
        return self.packets


def _proc_counters(pid: int) -> dict:
    """A process's (all its threads') CPU seconds, minor faults and write
    calls / bytes so far (proc(5): stat fields 10, 14, 15; io)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    tck = os.sysconf("SC_CLK_TCK")
    # On-CPU ns of every thread (schedstat's first field): utime + stime
    # without their clock-tick rounding (10 ms here, ~5 % of a round's CPU)
    oncpu = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                oncpu += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            pass
    return {"utime": int(fields[11]) / tck, "stime": int(fields[12]) / tck, "minflt": int(fields[7]),
            "writes": int(io["syscw"]), "written": int(io["wchar"]), "oncpu": oncpu / 1e9}


def live_run(tree: Path, mode: str, status: dict, requests: int, seconds: float, warm: bool = False,
             sink: str = "file") -> dict:
    """One tracer subprocess of ``tree`` under the workloads: CPU per traced
    packet. ``warm``: the same workloads once first, not measured, so the
    figure leaves out what a run pays once (its buffers' first page faults,
    first calls) and is the steady cost per packet. ``sink``: `trace`'s
    output goes to a file (the VM's page-cache writes included), a pipe
    read by this process, a file on tmpfs or /dev/null (packets then counted
    by `trace`'s summary line)."""
    from bench_overhead import parse_lost, run_ab, run_iperf

    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    capture = work / "cap.arrows"
    args = [a.format(capture=capture) for a in MODES[mode]]
    env = tree_env(tree)
    pipe = _PipeCounter(mode) if sink == "pipe" and mode != "record" else None
    out_path = {"tmpfs": Path(f"/dev/shm/bench-cpu-{os.getpid()}.out"), "null": Path(os.devnull)}.get(sink, work / "out")
    if mode == "record":
        out_path = work / "out"
    with open(out_path, "wb") as out, open(work / "err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tracer", *args, "--port", "8000", "--port", "5201"], cwd=tree,
                                env=env, stdout=pipe.write_fd if pipe else out, stderr=err, start_new_session=True)
        if pipe:
            os.close(pipe.write_fd)
        t0 = time.monotonic()
        while b"Ctrl-C" not in (work / "err").read_bytes():
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                proc.kill()
                raise RuntimeError(f"{mode} did not start: {(work / 'err').read_text()[-300:]}")
            time.sleep(0.05)
        time.sleep(0.3)
        before = b""  # trace's output before the measured window (warm): its packets are not counted
        if warm:
            run_ab(status, requests, 8)
            run_iperf(status, seconds)
            time.sleep(0.6)
        c0 = _proc_counters(proc.pid)
        if warm and mode != "record":
            before = out_path.read_bytes()
        k0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        run_ab(status, requests, 8)
        time.sleep(0.5)
        run_iperf(status, seconds)
        time.sleep(0.6)  # the last journeys leave the hold (IDLE_NS)
        c1 = _proc_counters(proc.pid)
        t_measured = (k0, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    text = out_path.read_bytes() if out_path != Path(os.devnull) else b""
    size = 0
    if mode == "record":
        from tracer.capture.reader import read_capture

        packets = (read_capture([str(capture)]).stats or {}).get("packets", 0)
        size = capture.stat().st_size * 1.0  # what the capture costs on disk (bytes per packet below)
        if warm:  # the capture holds the warm-up's packets too: CPU per the measured window's, bytes per all
            measured = _packets_between(capture, t_measured)
            size *= measured / max(packets, 1)
            packets = measured
    elif pipe:
        packets = pipe.close()
    elif sink == "null":
        found = re.search(r"^summary\s+([\d,]+) packets", (work / "err").read_text(errors="replace"), re.M)
        packets = int(found.group(1).replace(",", "")) if found else 0
    elif mode == "json":
        packets = text.count(b"\n", len(before))
    else:
        packets = len(re.findall(rb"^\S+ #", text[len(before):], re.M))
    lost, _ = parse_lost((work / "err").read_text(errors="replace"))
    if sink == "tmpfs" and mode != "record":
        out_path.unlink()
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    d = {k: c1[k] - c0[k] for k in c0}
    n = max(packets, 1)
    return {"packets": packets, "cpu_us": 1e6 * (d["utime"] + d["stime"]) / n, "oncpu_us": 1e6 * d["oncpu"] / n,
            "user_us": 1e6 * d["utime"] / n,
            "sys_us": 1e6 * d["stime"] / n, "minflt": d["minflt"] / n, "writes": d["writes"] / n,
            "written": d["written"] / n, "lost": lost, "bytes": size / n}


def _packets_between(capture: Path, window: tuple[int, int]) -> int:
    """Packets of a journey-row capture first seen in ``window`` (kernel
    ns): rows whose first hop gave the packet its id (the stats row's
    count, limited to the measured workloads)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from tracer.events import HOP_FLAG_NEW_PACKET
    from tracer.journey_v5 import as_version_4

    packets = 0
    with pa.ipc.open_stream(str(capture)) as reader:
        for batch in reader:  # each as version 4 stored it (the baseline's captures may be older)
            rows = as_version_4(batch)
            rows = rows.filter(pc.fill_null(pc.equal(rows["kind"], "journey"), False))
            ktime = rows["ktime_ns"].to_numpy()
            hops = rows["hops"]
            first = hops.offsets.to_numpy()[:-1]
            flags = hops.values.field("flags").to_numpy(zero_copy_only=False)
            new = (flags[first] & HOP_FLAG_NEW_PACKET) != 0
            packets += int(np.count_nonzero(new & (ktime >= window[0]) & (ktime < window[1])))
    return packets


def baseline_tree(rev: str) -> Path:
    """``rev``'s files, with its compiled part (tracer._native, setup.py)
    built in place as scripts/setup.sh's install builds it."""
    from bench_overhead import archive_tree

    tree = archive_tree(rev, Path(tempfile.mkdtemp(prefix=f"bench-base-{rev}-")))
    if (tree / "setup.py").exists():
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--build-temp", str(tree / "build")],
                       cwd=tree, check=True, stdout=subprocess.DEVNULL)
    return tree


def _text_path(tree: Path) -> str:
    """Which journey text a tree's tracer writes: compiled or Python."""
    if not (tree / "tracer" / "native.py").exists():
        return "Python text"
    done = subprocess.run([sys.executable, "-c", "from tracer.native import describe; print(describe())"], cwd=tree,
                          env=tree_env(tree), capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-200:]


def report(title: str, cases: list[str], per_round: dict[str, list[tuple[float, float]]], unit: str,
           digits: int = 2) -> None:
    print(f"\n{title}")
    print(f"  {'case':22s} {'baseline':>10s} {'this tree':>10s} {'ratio (median of rounds) [range]':>34s}")
    for case in cases:
        pairs = per_round.get(case, [])
        if not pairs:
            continue
        base = statistics.median(b for b, _ in pairs)
        new = statistics.median(n for _, n in pairs)
        ratios = [n / b for b, n in pairs if b]
        if not ratios:  # a baseline of 0 in every round (e.g. no memory added): no ratio
            print(f"  {case:22s} {base:10.{digits}f} {new:10.{digits}f} {'-':>14s} [-]  {unit}")
            continue
        print(f"  {case:22s} {base:10.{digits}f} {new:10.{digits}f} {statistics.median(ratios):14.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}]  {unit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collect", metavar="FILE", help="save the lab's journey records to FILE (root, lab up)")
    ap.add_argument("--offline", metavar="FILE", help="per-stage CPU on the records in FILE")
    ap.add_argument("--live", action="store_true", help="trace --json, record, trace as subprocesses on the lab")
    ap.add_argument("--baseline-rev", default="657dd81")
    ap.add_argument("--rev", help="measure this revision (git archive) instead of the working tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1500, help="records per pass (offline; default 1500)")
    ap.add_argument("--repeat", type=int, default=5, help="offline: best of this many runs per round")
    ap.add_argument("--requests", type=int, default=5000, help="live: ab -n (default 5000)")
    ap.add_argument("--seconds", type=float, default=3, help="live: iperf3 -t (default 3)")
    ap.add_argument("--modes", default="json,record,text", help="live: of json,record,text")
    ap.add_argument("--warm", action="store_true",
                    help="live: run the workloads once unmeasured first (the steady cost per packet, without "
                         "what a run pays once: start, first page faults); trace's output to a file")
    ap.add_argument("--sink", choices=("file", "pipe", "tmpfs", "null"), default="file",
                    help="live: trace's output to a file (default: what the targets name), or, as diagnostics, to "
                         "a pipe this script reads, a file on tmpfs (/dev/shm) or /dev/null")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(stage_worker(args.offline, args.batch, args.repeat)))
        return 0
    if args.collect:
        collect(args.collect, args.requests)
        if not (args.offline or args.live):
            return 0
    if not (args.offline or args.live):
        ap.error("say --collect FILE, --offline FILE or --live")
    base = baseline_tree(args.baseline_rev)
    this = baseline_tree(args.rev) if args.rev else REPO
    print(f"bench_tracer_cpu: baseline {args.baseline_rev} in {base} ({_text_path(base)}); this tree {args.rev or ''} {this} "
          f"({_text_path(this)}); {args.rounds} rounds; load {load_average()}")
    if args.offline:
        per_round: dict[str, list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            got = {}
            for side, tree in (("base", base), ("new", this)) if r % 2 == 0 else (("new", this), ("base", base)):
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--offline",
                                       args.offline, "--batch", str(args.batch), "--repeat", str(args.repeat)],
                                      env=dict(tree_env(tree), MIMALLOC_PURGE_DELAY="-1"), cwd=tree,
                                      capture_output=True,
                                      text=True, check=True)
                got[side] = json.loads(done.stdout.strip().splitlines()[-1])
            for stage in (*STAGES, "capture_first_faults", "capture_first_peak_mb"):
                per_round.setdefault(stage, []).append((got["base"][stage], got["new"][stage]))
            print(f"  round {r + 1}: " + ", ".join(f"{s} {got['base'][s]:.2f} -> {got['new'][s]:.2f}" for s in STAGES),
                  flush=True)
        report(f"offline, µs of CPU per packet (batches of {args.batch}, best of {args.repeat} per round)",
               [s for s in STAGES if s != "capture_first"], per_round, "µs")
        report("offline, the capture writer's first run: µs of CPU per packet (one run per round)",
               ["capture_first"], per_round, "µs")
        report("offline, the capture writer's first run: minor page faults per 1,000 packets",
               ["capture_first"], {"capture_first": per_round["capture_first_faults"]}, "faults")
        report("offline, the capture writer's first run: peak RSS it added",
               ["capture_first"], {"capture_first": per_round["capture_first_peak_mb"]}, "MB")
    if args.live:
        from bench_overhead import lab_status

        status = lab_status()
        modes = [m for m in args.modes.split(",") if m]
        if args.warm and args.sink in ("pipe", "null") and modes != ["record"]:
            ap.error("--warm counts trace's packets in its output file: not with --sink pipe or null")
        cpu: dict[str, list[tuple[float, float]]] = {}
        oncpu: dict[str, list[tuple[float, float]]] = {}
        user: dict[str, list[tuple[float, float]]] = {}
        system: dict[str, list[tuple[float, float]]] = {}
        faults: dict[str, list[tuple[float, float]]] = {}
        writes: dict[str, list[tuple[float, float]]] = {}
        size: dict[str, list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            for mode in modes:
                got = {}
                for side, tree in (("base", base), ("new", this)) if r % 2 == 0 else (("new", this), ("base", base)):
                    got[side] = live_run(tree, mode, status, args.requests, args.seconds, args.warm, args.sink)
                cpu.setdefault(mode, []).append((got["base"]["cpu_us"], got["new"]["cpu_us"]))
                oncpu.setdefault(mode, []).append((got["base"]["oncpu_us"], got["new"]["oncpu_us"]))
                user.setdefault(mode, []).append((got["base"]["user_us"], got["new"]["user_us"]))
                system.setdefault(mode, []).append((got["base"]["sys_us"], got["new"]["sys_us"]))
                faults.setdefault(mode, []).append((got["base"]["minflt"], got["new"]["minflt"]))
                writes.setdefault(mode, []).append((1e3 * got["base"]["writes"], 1e3 * got["new"]["writes"]))
                if mode == "record":
                    size.setdefault(mode, []).append((got["base"]["bytes"], got["new"]["bytes"]))
                print(f"  round {r + 1} {mode:6s}: base {got['base']['cpu_us']:.2f} (user {got['base']['user_us']:.2f}) "
                      f"-> {got['new']['cpu_us']:.2f} (user {got['new']['user_us']:.2f}) µs per packet (on-CPU "
                      f"{got['base']['oncpu_us']:.3f} / {got['new']['oncpu_us']:.3f}); packets "
                      f"{got['base']['packets']:,} / {got['new']['packets']:,}; lost {got['base']['lost']} / "
                      f"{got['new']['lost']}; stime {got['base']['sys_us']:.2f} / {got['new']['sys_us']:.2f} µs, "
                      f"minor faults {got['base']['minflt']:.3f} / {got['new']['minflt']:.3f}, bytes written "
                      f"{got['base']['written']:.0f} / {got['new']['written']:.0f} a packet, write() calls "
                      f"{1e3 * got['base']['writes']:.2f} / {1e3 * got['new']['writes']:.2f} per 1,000 packets; load {load_average()}"
                      + (f"; capture {got['base']['bytes']:.1f} / {got['new']['bytes']:.1f} bytes per packet"
                         if mode == "record" else ""), flush=True)
        sink = {"file": "a file", "pipe": "a pipe", "tmpfs": "a file on tmpfs", "null": "/dev/null"}[args.sink]
        report(f"live, the tracer's utime + stime per traced packet (output to {sink})", modes, cpu, "µs")
        report("live, on-CPU time per traced packet (every thread's schedstat: utime + stime in ns, "
               "not rounded to clock ticks)", modes, oncpu, "µs", 3)
        report("live, utime alone", modes, user, "µs")
        report("live, stime alone", modes, system, "µs")
        report("live, minor page faults per traced packet", modes, faults, "faults", 3)
        report("live, write() calls per 1,000 traced packets (all of the process's, /proc/PID/io)", modes, writes,
               "calls")
        if size:
            report("live, capture size on disk per traced packet", ["record"], size, "bytes")
    for tree in {base, this} - {REPO}:
        subprocess.run(["rm", "-rf", str(tree)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
