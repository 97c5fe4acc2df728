"""A guard against program-size regressions: the trace-mode programs as
`tracer trace --port P` loads them (shared bodies, program cache), each
under a bound ~20 % above its size when the bound was set. Each program's
verification is on every start's way (start to first journey: ≤ 2 s), and
an accidental inlining (session 10: an inlined __builtin_memcpy at every
emit site, +40 %) also costs instruction cache on the traced path. A change
that grows a program on purpose raises its bound here, with the new figure,
in the same commit."""

from __future__ import annotations

import pytest

from tests.e2e.tracing import kernel_snapshot, wait_gone
from tracer.kernel.bpf_syscall import prog_info_by_fd

# bytes_xlated (the program as verified) when the bound was set, per program
# (x86-64, kernel 6.18; docs/benchmarks.md "Session 11: emit").
SIZES = {
    "trc_drop": 13904,
    "trc_nf_a": 37424,
    "trc_nf_b": 34624,
    "trc_sweep": 4800,
    "trc_tc_eg": 28800,
    "trc_tc_eg_ct": 28184,
    "trc_tc_in": 28216,
    "trc_tc_in_ct": 27456,
}
SLACK = 1.2


@pytest.fixture
def shipped_build(monkeypatch):
    """The build users get: none of the debug or comparison switches."""
    for name in ("TRACER_DEBUG", "TRACER_SHARED_ENTRIES", "TRACER_BPF_CFLAGS", "TRACER_SIGHTING_EVENTS"):
        monkeypatch.delenv(name, raising=False)


def test_trace_programs_stay_under_their_size_bounds(lab, shipped_build):
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    before = kernel_snapshot()
    session = TraceSession(TraceOptions(Targets(ports=(lab["port"],)))).start()
    try:
        sizes = {name.decode(): prog_info_by_fd(fn.fd).xlated_len for name, fn in session.bpf.funcs.items()}
    finally:
        session.close()
    print("bytes_xlated:", sizes)
    assert sorted(sizes) == sorted(SIZES), f"programs loaded {sorted(sizes)}; bounds are set for {sorted(SIZES)}"
    over = {name: (size, int(SIZES[name] * SLACK)) for name, size in sizes.items() if size > SIZES[name] * SLACK}
    assert not over, "programs grew past their bounds (bytes_xlated, bound = 1.2 x the size when set): " + ", ".join(
        f"{name} {size:,} > {bound:,} ({size / SIZES[name] - 1:+.0%} on {SIZES[name]:,})"
        for name, (size, bound) in over.items())
    # Not shrunk by half either: a bound far above what ships guards nothing
    # (lower SIZES when a program shrinks for good).
    shrunk = {name: size for name, size in sizes.items() if size < SIZES[name] / 2}
    assert not shrunk, f"programs under half their recorded size (lower SIZES): {shrunk}"
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)
