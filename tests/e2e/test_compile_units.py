"""A cold build compiled as two units at once (tracer/kernel/compile_units.py):
real BCC compiles, here and in the child interpreter. The merged snapshot
must be the one compile's program for program (map loads by map name,
parameter and filter-value slots) and map for map, in every mode a start
builds, and the kernel must load it; a source clang refuses in the child's
unit is one line and leaves nothing behind."""

from __future__ import annotations

import os

import pytest

from tests.e2e.tracing import kernel_snapshot, wait_gone
from tracer.errors import MissingCapability
from tracer.kernel import compile_units
from tracer.kernel.headers import ensure_bcc_headers
from tracer.kernel.program import load_programs
from tracer.session import TraceOptions, TraceSession
from tracer.targets import Targets


def _plan(latency: bool):
    session = TraceSession(TraceOptions(targets=Targets(ports=(8000,)), proxy_links=True), latency=latency)
    return session._plan(proxies_running=True)


def _by_name(compiled) -> tuple[dict, dict]:
    """Each program's map loads (the maps' names, in order) and its slots'
    kinds; each map's spec. Not the instructions themselves: clang may
    allocate registers differently when the unit holds fewer functions
    (latency mode's netfilter program did: 1,898 instructions for 1,901),
    the same C either way."""
    programs = {p.name: ([compiled.maps[m].name for _, m in p.relocs], len(p.params), [n for _, n in p.values])
                for p in compiled.programs}
    return programs, {m.name: m for m in compiled.maps}


@pytest.mark.parametrize("latency", [False, True], ids=["trace", "latency"])
def test_two_units_merge_into_what_one_compile_gives(latency, monkeypatch):
    ensure_bcc_headers()
    program = _plan(latency)
    source, cflags = program.source(), program.cflags(shared=True)
    units = compile_units.split(program.sensors)
    program_list = [p for sensor in program.sensors for p in sensor.programs()]
    assert [[s.name for s in u] for u in units] == [["netfilter"], ["tc", "drop"] + ([] if latency else ["proxy"])]
    before, maps_before = kernel_snapshot(), _map_fds()
    monkeypatch.setenv("TRACER_COMPILE_UNITS", "1")
    one = compile_units.compiled(program, source, cflags)
    monkeypatch.setenv("TRACER_COMPILE_UNITS", "2")
    merged = compile_units.compile_units([program.source(u) for u in units], cflags, program.snapshot)
    assert one is not None
    assert _by_name(merged) == _by_name(one)
    module = program._module(merged)  # the kernel takes the merged programs
    try:
        assert load_programs(module, program_list) == []
    finally:
        module.cleanup()
    assert wait_gone(before) == ([], []) and _map_fds() == maps_before  # each compile's maps gone with its module


def test_a_source_the_childs_clang_refuses_is_one_line_and_leaves_nothing(monkeypatch):
    ensure_bcc_headers()
    program = _plan(False)
    cflags = program.cflags(shared=True)
    here, there = (program.source(u) for u in compile_units.split(program.sensors))
    before, maps_before, children_before = kernel_snapshot(), _map_fds(), _children()
    with pytest.raises(MissingCapability) as refused:
        compile_units.compile_units([here, there + "\nint trc_broken(void *ctx) { return undeclared_x; }\n"], cflags,
                                    program.snapshot)
    assert str(refused.value).startswith("BPF compile failed: ") and "undeclared_x" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert wait_gone(before) == ([], []) and _children() == children_before and _map_fds() == maps_before


def _map_fds() -> int:
    """BPF maps this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-map"
        except OSError:
            continue
    return count


def _children() -> set[int]:
    """This process's child processes."""
    me = str(os.getpid())
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.add(int(pid))
        except OSError:
            continue
    return out
