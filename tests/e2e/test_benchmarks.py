"""Smoke runs of the benchmark scripts (tiny parameters): each runs, exits 0,
prints its figures (the scripts stop every tracer they start, by pid). The figures
themselves are measured by running the scripts in full (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.script_modules import load_script
from tracer.events import JOURNEY_SCHEMA_VERSION
from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun, load_trivial_prog, prog_info_by_fd

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def run_script(name: str, *args: str, timeout: float = 90) -> str:
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def test_bench_drain_quick() -> None:
    out = run_script("bench_drain.py", "--quick")
    assert re.search(r"events/s \(wall\)\s+[\d.]+ M/s\s+[\d.]+ M/s\s+[\d.]+x", out), out
    assert re.search(r"events per consumer CPU-s\s+[\d.]+ M/s", out), out
    assert "highest offered rate with zero loss (ours):" in out
    assert re.search(r"target .*: (met|NOT met)", out)


def test_bench_overhead_quick(lab) -> None:
    out = run_script("bench_overhead.py", "--quick", timeout=300)
    # Every state beside untraced, tcpdump (the peer) included, with its
    # per-round ratio and bootstrap interval.
    for workload in ("http req/s", "stream Gbit/s"):
        for state in ("tcpdump", "trace", "record", "latency", "noop"):
            label = f"{workload}, {state}"
            assert re.search(re.escape(label) + r"\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+ \[[\d.]+-[\d.]+\]", out), (label, out)
    assert re.search(r"tcpdump\s*: CPU % of a core: median [\d.]+, max [\d.]+; [\d.]+ µs CPU per captured frame", out), out
    for state in ("trace", "record"):
        assert re.search(state + r"\s*: CPU % of a core: .*; [\d.]+ µs CPU per traced packet; lost journeys [\d,]+ over 1 runs", out), out
        assert re.search(state + r"\s*: \d+ ns per program run, \d+ ns per sighting \(\d+ per request\), \d+ runs and "
                                 r"[\d.]+ µs per HTTP request", out), out
    assert re.search(r"trace http [\d.]+ >= tcpdump [\d.]+: (met|NOT met)", out), out
    assert re.search(r"targets of the states run: (met|NOT met)", out), out


def test_bench_start_quick(lab) -> None:
    out = run_script("bench_start.py", "--quick", "--baseline-rev", "HEAD", timeout=240)
    # The baseline (HEAD has the program cache: it runs cold and warm too) and
    # this tree with a cold and a warm program cache and another port's (and
    # --container with that one), side by side, and each state's ratio to the
    # baseline's same state.
    fig = r"\s+[\d.]+ s \[[\d.]+-[\d.]+\]"
    ratio = r": [\d.]+ \[[\d.]+-[\d.]+\]"
    other = r"another port's cache \(--port 5201\)"
    by_container = "--container, " + other
    for label in (r"spawn -> first journey printed \(--json\)", r"process CPU at the first journey"):
        figures = re.search(label + r"\n\s+baseline HEAD, cold cache" + fig + r"\n\s+baseline HEAD, warm cache" + fig
                            + r"\n\s+baseline HEAD, " + other + fig + r"\n\s+baseline HEAD, " + by_container + fig
                            + r"\n\s+this tree, cold cache" + fig + r"\n\s+this tree, warm cache" + fig
                            + r"\n\s+this tree, " + other + fig + r"\n\s+this tree, " + by_container + fig
                            + r"\n\s+ratio, this tree, cold cache / baseline HEAD, cold cache" + ratio
                            + r"\n\s+ratio, this tree, warm cache / baseline HEAD, warm cache" + ratio
                            + r"\n\s+ratio, this tree, " + other + " / baseline HEAD, " + other + ratio
                            + r"\n\s+ratio, this tree, " + by_container + " / baseline HEAD, " + by_container + ratio,
                            out)
        assert figures, (label, out)
    assert re.search(r"start\(\) -> first event drained\s+[\d.]+ s", out), out
    assert re.search(r"compiled\s+[\d.]+ s\n\s+programs loaded\s+[\d.]+ s", out), out
    for cache in ("cold", "warm"):
        assert re.search(rf"target: command start -> first journey <= 2 s, this tree, {cache} cache: (met|NOT met)", out), out


def test_bench_capture_size_quick(lab) -> None:
    out = run_script("bench_capture_size.py", "--quick")
    assert re.search(r"demo --requests +default: [\d,]+ bytes, [\d,]+ event rows .*: [\d.]+ bytes/event", out), out
    assert re.search(r"target <= 40: (met|NOT met)", out), out


def test_bench_capture_write_quick(lab) -> None:
    out = run_script("bench_capture_write.py", "--requests", "200", "--rounds", "1", timeout=180)
    figures = {}
    for layout in ("journey rows", "sighting rows"):
        m = re.search(re.escape(layout) + r" \(schema \d\): write ([\d.]+) µs/packet .*, ([\d.]+) B/packet", out)
        assert m, (layout, out)
        figures[layout] = float(m.group(1)), float(m.group(2))
    # What the change is for: the record path writes journeys cheaper and smaller.
    assert figures["journey rows"][0] < figures["sighting rows"][0], out
    assert figures["journey rows"][1] < figures["sighting rows"][1], out
    assert re.search(r"target \(issue 9, record\) <= 1 µs", out), out


def test_bench_bpf_quick() -> None:
    out = run_script("bench_bpf.py", "--quick")
    for mode in ("trace", "latency"):  # empty, untraced, traced, fast; the last three over empty
        assert re.search(rf"  {mode} +\d+ +\d+ +\d+ +\d+   \(\+-?\d+ / \+-?\d+ / \+-?\d+\)", out), out


def test_bench_bpf_live_quick(lab) -> None:
    out = run_script("bench_bpf.py", "--live", "--quick", timeout=120)
    # The tracer's own programs, found by its fds, ran under the traffic.
    assert re.search(r"trc_nf_b +[1-9]\d* +\d+ +[\d.]+", out), out
    assert re.search(r"trc_tc_eg +[1-9]\d* +\d+ +[\d.]+", out), out


def test_bench_bpf_live_base_quick(lab) -> None:
    """This tree against itself (a checkout given as --base), alternating,
    with the no-op floor: the A/B machinery runs and reports every figure."""
    out = run_script("bench_bpf.py", "--live", "--base", str(REPO), "--floor", "--quick", timeout=300)
    assert re.search(r"trc_nf_b +\| +\d+ +[\d.]+ \| +\d+ +[\d.]+", out), out
    assert re.search(r"BPF ns per sighting +: base +[\d.]+ +new +[\d.]+ +new/base [\d.]+ \[[\d.]+-[\d.]+\]", out), out
    assert re.search(r"new: [1-9][\d.]* sightings per request", out), out
    assert re.search(r"floor \(programs that return at once, same hooks\): \d+ ns per run", out), out


def test_bench_bpf_live_base_latency_quick(lab) -> None:
    """The same with `tracer latency`: sightings counted from its intervals."""
    out = run_script("bench_bpf.py", "--live", "--base", str(REPO), "--mode", "latency", "--quick", timeout=300)
    assert re.search(r"trc_tc_eg +\| +\d+ +[\d.]+ \| +\d+ +[\d.]+", out), out
    assert re.search(r"BPF ns per run +: base +[\d.]+ +new +[\d.]+ +new/base [\d.]+ \[[\d.]+-[\d.]+\]", out), out
    assert re.search(r"new: [1-9][\d.]* sightings per request", out), out


def test_bench_analysis_quick() -> None:
    """Journey-row captures, ours beside the baseline (on the same synthetic
    traffic, each in the schema its writer writes), and report over a
    capture rotated into parts."""
    out = run_script("bench_analysis.py", "--quick", "--schema", "2", "--baseline-big", "--files", "20", timeout=300)
    assert re.search(r"^stats 1M\s+[\d.]+\s+\d+\s+[\d.]+", out, re.M), out
    assert re.search(r"^stats 1M, baseline 317aa09\s+[\d.]+\s+\d+\s+[\d.]+", out, re.M), out
    # the baseline predates this tree's journey schema: it reads what its own generator writes
    assert f"baseline 317aa09 writes journey schema 2.1, this tree {JOURNEY_SCHEMA_VERSION}" in out, out
    assert re.search(r"^report \d+ files, 200k\s+[\d.]+", out, re.M), out
    assert re.search(r"stats 1M: baseline/ours CPU [\d.]+x", out), out
    assert "nan" not in out.lower().replace("nanosecond", ""), out  # every run exited 0
    assert re.search(r"target stats 1M: peak RSS <= 1024 MiB: (met|NOT met)", out)


def test_bench_tracer_cpu_quick(lab, tmp_path) -> None:
    records = tmp_path / "records.pkl"
    out = run_script("bench_tracer_cpu.py", "--collect", str(records), "--requests", "200", "--offline", str(records),
                     "--live", "--modes", "json", "--baseline-rev", "HEAD", "--rounds", "1", "--repeat", "1",
                     "--seconds", "1", timeout=300)
    assert re.search(r"[\d,]+ journey records \([\d,]+ hops\)", out), out
    for stage in ("rows", "json", "text", "summary", "capture", "capture_first"):
        assert re.search(rf"\n  {stage}\s+[\d.]+\s+[\d.]+\s+[\d.]+ \[[\d.]+-[\d.]+\]  µs", out), (stage, out)
    # what the capture writer's first run pays once (one run, not a best of N): CPU, page faults, the memory it adds
    assert re.search(r"first run: µs of CPU per packet \(one run per round\)\n.*\n  capture_first\s", out), out
    assert not re.search(r"best of \d+ per round\)\n(  .*\n)*  capture_first", out), out
    assert re.search(r"first run: minor page faults per 1,000 packets\n.*\n  capture_first\s+[\d.]+\s+[\d.]+\s+[\d.]+ "
                     r"\[[\d.]+-[\d.]+\]  faults", out), out
    assert re.search(r"first run: peak RSS it added\n.*\n  capture_first\s+[\d.]+\s+[\d.]+\s+([\d.]+ "
                     r"\[[\d.]+-[\d.]+\]|- \[-\])  MB", out), out  # 200 requests may add nothing to the peak
    assert re.search(r"round 1 json\s*: base [\d.]+ \(user [\d.]+\) -> [\d.]+ \(user [\d.]+\) µs per packet", out), out
    assert re.search(r"\n  json\s+[\d.]+\s+[\d.]+\s+[\d.]+ \[[\d.]+-[\d.]+\]  µs", out), out
    # where the system time goes, per packet: stime, minor faults, write() calls
    assert re.search(r"round 1 json\s*: .* stime [\d.]+ / [\d.]+ µs, minor faults [\d.]+ / [\d.]+, bytes written "
                     r"\d+ / \d+ a packet, write\(\) calls [\d.]+ / [\d.]+ per 1,000 packets", out), out
    for title, unit in (("stime alone", "µs"), ("minor page faults per traced packet", "faults"),
                        ("write\\(\\) calls per 1,000 traced packets", "calls")):
        assert re.search(rf"live, {title}.*\n.*\n  json\s+[\d.]+\s+[\d.]+\s+[\d.]+ \[[\d.]+-[\d.]+\]  {unit}", out), (title, out)


def test_bench_tracer_cpu_null_sink_counts_packets_from_the_summary(lab) -> None:
    # /dev/null as the sink (a diagnostic: the run without the file write): packets from trace's summary line
    out = run_script("bench_tracer_cpu.py", "--live", "--modes", "json", "--baseline-rev", "HEAD", "--rounds", "1",
                     "--requests", "200", "--seconds", "1", "--sink", "null", timeout=300)
    got = re.search(r"round 1 json\s*: .*packets ([\d,]+) / ([\d,]+);", out)
    assert got and all(int(n.replace(",", "")) > 100 for n in got.groups()), out
    assert "output to /dev/null)" in out, out


def test_bench_journey_pool_quick(lab) -> None:
    out = run_script("bench_journey_pool.py", "--quick", "--pools", "256,1024", timeout=300)
    for pool in (256, 1024):
        assert re.search(rf"round 1 pool +{pool}: [\d,]+ of [\d,]+ records evicted \([\d.]+ per 1,000\), \d+ ns BPF per sighting", out), out
    # the evictions' ratio only where the first pool evicted some (a quiet machine evicts none)
    assert re.search(r" 1024: evicted +[\d.]+ per 1,000 records \(all rounds: [\d,]+ of [\d,]+, [\d.]+ per 1,000\), "
                     r"BPF +\d+ ns per sighting(; evicted x[\d.]+ \[[\d.]+-[\d.]+\])?; BPF ns x[\d.]+ \[[\d.]+-[\d.]+\]", out), out


def _stats_holders() -> set[int]:
    """The processes holding a BPF_ENABLE_STATS fd (run-time statistics on while any does)."""
    pids = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == "anon_inode:bpf-stats":
                pids.add(int(fd.parts[2]))
        except OSError:
            continue  # gone meanwhile
    return pids


def test_bpf_stats_on_counts_runs_without_the_sysctl() -> None:
    """The benchmarks hold BPF run-time statistics by a BPF_ENABLE_STATS fd
    (bench_overhead.bpf_stats_on), not by writing the machine-wide sysctl
    kernel.bpf_stats_enabled: another engineer's benchmark that writes it
    back to 0 cannot stop this one's figures, and a killed script leaves
    nothing on. Inside the block this process holds such an fd, a program's
    runs are counted and timed, and the sysctl reads as it did before; after
    it the fd is closed and, unless something else holds statistics on (the
    sysctl, another process's fd: then that cannot be seen, and the test
    says so as a skip), the program's runs are no longer counted."""
    bo = load_script("bench_overhead")
    frame = load_script("bench_bpf").frame(8000)
    sysctl = Path("/proc/sys/kernel/bpf_stats_enabled")
    fd = load_trivial_prog(BPF_PROG_TYPE_SCHED_CLS, ret=-1, name=b"trc_test_stats")
    try:
        prog_id = prog_info_by_fd(fd).id

        def stats() -> tuple[int, int]:
            shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                                              capture_output=True, text=True, check=True).stdout)
            return shown.get("run_cnt", 0), shown.get("run_time_ns", 0)

        before = sysctl.read_text()
        with bo.bpf_stats_on():
            inside = sysctl.read_text()
            held = os.getpid() in _stats_holders()
            count, ns = stats()
            ProgTestRun(fd, frame).run(1000)
            counted, timed = (b - a for a, b in zip((count, ns), stats()))
        assert held, "bpf_stats_on did not hold a BPF_ENABLE_STATS fd"
        assert counted >= 1000 and timed > 0, (counted, timed)
        assert inside == before  # not written (another engineer's write in these milliseconds aside)
        assert os.getpid() not in _stats_holders(), "the fd was not closed"
        others = _stats_holders() | ({"the sysctl"} if sysctl.read_text().strip() == "1" else set())
        if not others:
            count, _ = stats()
            ProgTestRun(fd, frame).run(1000)
            others = _stats_holders() | ({"the sysctl"} if sysctl.read_text().strip() == "1" else set())
            if not others:
                assert stats()[0] == count, "runs still counted after the fd closed"
                return
        pytest.skip(f"run-time statistics held on by {sorted(map(str, others))} (another engineer's benchmark): "
                    "that closing the fd turns them off cannot be seen now (inside the block: checked)")
    finally:
        os.close(fd)


def test_bench_bpf_paths_counts_every_path(lab) -> None:
    """The counting build runs, and its counts are consistent: the fast
    paths and the traced full paths are among the runs (untraced traffic
    through the same interfaces, other engineers' on a shared machine, is
    runs that take neither), and the claims are full paths at tc."""
    out = run_script("bench_bpf_paths.py", "--requests", "200", timeout=300)
    tc = re.search(r"tc +runs +([\d.]+) +found a last sighting +([\d.]+) +fast path +([\d.]+)", out)
    nf = re.search(r"netfilter runs +([\d.]+) +found a last sighting +([\d.]+) \(from tc ([\d.]+)\) +new connection +"
                   r"([\d.]+) +fast path +([\d.]+)", out)
    assert tc and nf, out
    tc_runs, tc_known, tc_fast = map(float, tc.groups())
    nf_runs, nf_known, _from_tc, _new, nf_fast = map(float, nf.groups())
    assert tc_runs >= tc_known >= tc_fast > 0 and nf_runs >= nf_known >= nf_fast > 0, out
    tc_full = sum(float(n) for n in re.findall(r"full path +tc_\w+ +(?:host|container netns) +([\d.]+)", out))
    assert tc_full > 0 and tc_fast + tc_full <= tc_runs + 0.1, out  # printed to 0.1 and 0.01
