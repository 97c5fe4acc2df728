"""`trace --rules` stops promptly under load (issue 10 follow-up): a stop
signal ends the run within seconds whatever backlog of nf_tables reports the
reader has, with the summary, our nft table removed and our BPF links gone.

The burst is this test's own: connections from the lab client netns to the
lab's published port, from source ports above the client's ephemeral range.
"""

from __future__ import annotations

import signal
import subprocess
import time

from tests.e2e.tracing import Tracer, burst_from, kernel_snapshot, link_ids_held_by, own_source_ports, wait_gone
from tracer.kernel.bpf_syscall import list_links
from tracer.stopping import STOP_GRACE_S

# What this bounds is the stop's own time: the old stop read a report
# backlog that other tracers' marking kept filling, for ever; now it reads
# 0.2 s more and throws the rest away (rule_trace.STOP_READ_S/STOP_SKIP_S).
# The target is ~2 s; the margin covers the held journeys shown at the end.
# Time the tracer spent waiting for a CPU held by other processes (a loaded
# shared machine: measured 1.7-3.3 s at load 11) is not the stop's and is
# taken out; the wall time still has the README's bound (stopping.STOP_GRACE_S:
# past it the tracer gives up and exits 1). The output goes to a file, so the
# test's own reading does not pace the tracer either.
STOP_LIMIT_S = 5.0


def _our_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("table inet tracer_")}


def test_sigterm_during_a_burst_stops_within_seconds(lab, tmp_path):
    before = kernel_snapshot()
    t = Tracer("--port", str(lab["port"]), "--rules", "--duration", "120", stdout_file=tmp_path / "journeys.json")
    t.wait_ready()
    mine = f"tracer_{t.proc.pid}"
    assert mine in _our_tables()
    links = link_ids_held_by(t.proc.pid)
    assert links, "the tracer holds no BPF link"
    burst = burst_from(lab, own_source_ports(400))
    try:
        time.sleep(2.5)  # mid-burst: reports pile up faster than they are decoded
        assert t.proc.poll() is None
        took = t.stop_timed(signal.SIGTERM, timeout=90)
        journeys = t.finish(timeout=30)
    finally:
        burst.wait(60)
    assert took.own < STOP_LIMIT_S and took.wall < STOP_GRACE_S, f"took {took} to stop: {t.stderr[-2000:]}"
    assert t.returncode == 0, t.stderr
    assert "Traceback" not in t.stderr, t.stderr
    assert "summary" in t.stderr and "rules:" in t.stderr, t.stderr
    assert journeys, "no journey shown"
    assert mine not in _our_tables()
    deadline = time.monotonic() + 10
    while links & {link.id for link in list_links()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not links & {link.id for link in list_links()}, "our BPF links outlived the process"
    # and by the kernel's snapshot (links of tracers started meanwhile may be listed: not ours)
    _progs, left = wait_gone(before, timeout=10)
    assert not links & {link.id for link in left}
