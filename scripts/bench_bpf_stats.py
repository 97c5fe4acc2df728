"""The kernel's BPF run-time statistics, for the benchmarks that read
them (bench_overhead, bench_bpf, bench_journey_pool, bench_proxy_sensor):
held on for a block by a BPF_ENABLE_STATS fd (``bpf_stats_on``), and read
per program of one process (``_prog_stats``, ``_prog_delta``)."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
from pathlib import Path


BPF_ENABLE_STATS = 32  # bpf() command (5.8+): run-time statistics on while the fd it returns is open
BPF_STATS_RUN_TIME = 0


@contextlib.contextmanager
def bpf_stats_on():
    """BPF run-time statistics on for the block, held by a BPF_ENABLE_STATS
    fd: the kernel counts its holders, so another engineer's benchmark that
    sets kernel.bpf_stats_enabled back to 0 meanwhile does not stop this
    one's figures, nothing here writes the machine-wide sysctl, and a
    killed script leaves nothing on (its fd closes). Where the command is
    missing, the sysctl, its setting before put back."""
    from tracer.kernel.bpf_syscall import bpf  # noqa: PLC0415 (scripts/ runs with the repo on the path)

    try:
        fd = bpf(BPF_ENABLE_STATS, struct.pack("<I", BPF_STATS_RUN_TIME))
    except OSError:
        fd = None
    if fd is not None:
        try:
            yield
        finally:
            os.close(fd)
        return
    stats_file = Path("/proc/sys/kernel/bpf_stats_enabled")
    was = stats_file.read_text().strip()
    stats_file.write_text("1")
    try:
        yield
    finally:
        stats_file.write_text(was)


def _prog_ids(pid: int) -> set[int]:
    """Ids of the BPF programs process `pid` holds fds of (its fdinfo)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def _prog_stats(pid: int) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) per program name, summed over the trc_ programs
    of process `pid` (not other tracers')."""
    mine = _prog_ids(pid)
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    out: dict[str, tuple[int, int]] = {}
    for p in progs:
        if p.get("name", "").startswith("trc_") and p.get("id") in mine:
            ns, cnt = out.get(p["name"], (0, 0))
            out[p["name"]] = (ns + p.get("run_time_ns", 0), cnt + p.get("run_cnt", 0))
    return out


def _prog_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) per program between two _prog_stats."""
    return {n: (after[n][0] - before.get(n, (0, 0))[0], after[n][1] - before.get(n, (0, 0))[1]) for n in after}
