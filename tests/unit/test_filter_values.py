"""The filter's port, protocol and sample rate as value slots (bpf/common.h
TRC_FILTER_PORT and the like): an open build's flags do not depend on them,
so one program-cache entry serves every value; the loader writes each
start's values in (program_cache.patch), and an entry's slots are checked.
Loading such a build for real and tracing with two ports from one entry:
tests/e2e/test_shared_programs.py."""

from __future__ import annotations

import socket

import pytest

from tests.unit.test_shared_programs import EXIT, MOV_R0_0, _ld_imm64
from tracer import events
from tracer.kernel import program_cache as pc
from tracer.kernel.cached_module import CachedModule
from tracer.kernel.kernel_filter import PARTS, Filter, c_definitions
from tracer.kernel.program import BPF_DIR, Program

PORT, PROTO, SAMPLE = (pc.FILTER_VALUE_MARKERS[n] for n in ("port", "proto", "sample"))


# slot 0 mov; 1 the port; 3 the trc_param marker; 5 the port again; 7 the sample rate; 9 a plain constant; 11 exit
BODY = (MOV_R0_0 + _ld_imm64(PORT) + _ld_imm64(pc.PARAM_MARKER) + _ld_imm64(PORT, dst=2) + _ld_imm64(SAMPLE)
        + _ld_imm64(0x1234) + EXIT)


def _spec(insns: bytes = BODY) -> pc.ProgramSpec:
    return pc.ProgramSpec("trc_body", insns, (), pc.param_slots(insns), pc.value_slots(insns))


def _imm(insns: bytes, slot: int) -> int:
    return pc._imm64(insns, slot * 8)


def test_the_c_markers_are_the_ones_the_loader_looks_for():
    text = (BPF_DIR / "common.h").read_text()
    for name, marker in pc.FILTER_VALUE_MARKERS.items():
        assert f"{marker:#x}" in text, name
        assert marker.to_bytes(8, "big").startswith(b"TRC_F"), "readable in a dump, unlike any real value"
    assert len(set(pc.FILTER_VALUE_MARKERS.values()) | {pc.PARAM_MARKER}) == 5


def test_value_slots_are_the_markers_loads_only_and_apart_from_the_parameter():
    assert pc.value_slots(BODY) == ((1, "port"), (5, "port"), (7, "sample"))
    assert pc.param_slots(BODY) == (3,)
    assert pc.value_slots(_ld_imm64(PORT & 0xFFFFFFFF)) == ()
    assert pc.value_slots(_ld_imm64(PORT, src=pc.BPF_PSEUDO_MAP_FD)) == ()
    assert pc.value_slots(_ld_imm64(PROTO)[:8]) == (), "half an instruction at the end"


def test_patch_writes_each_value_in_its_slots_and_leaves_the_rest():
    port = socket.htons(3000)
    out = pc.patch(_spec(), [], 0x0203, {"port": port, "sample": 7, "proto": 6})
    assert [_imm(out, s) for s in (1, 3, 5, 7, 9)] == [port, 0x0203, port, 7, 0x1234]
    assert out[1 * 8:1 * 8 + 2] == BODY[1 * 8:1 * 8 + 2], "opcode and register kept"
    assert pc.value_slots(out) == () and pc.param_slots(out) == ()


def test_patch_refuses_a_slot_without_its_value():
    with pytest.raises(ValueError, match="needs the filter's sample"):
        pc.patch(_spec(), [], 1, {"port": 80})
    with pytest.raises(ValueError, match="64 bits"):
        pc.patch(_spec(), [], 1, {"port": 1 << 64, "sample": 2})
    plain = MOV_R0_0 + EXIT
    assert pc.patch(_spec(plain), [], None, {"port": 80}) == plain, "another program's value: nothing to write"


def test_an_entry_reads_back_with_its_value_slots_and_wrong_ones_are_refused():
    compiled = pc.Compiled(b"GPL", 0, (), (_spec(),))
    assert pc.decode(pc.encode(compiled, "k"), "k").programs[0].values == ((1, "port"), (5, "port"), (7, "sample"))
    for values in ((), ((1, "port"),), ((1, "port"), (5, "port"), (7, "proto")),
                   ((1, "port"), (5, "port"), (7, "sample"), (9, "port"))):
        spec = _spec()
        bad = pc.Compiled(b"GPL", 0, (), (pc.ProgramSpec(spec.name, spec.insns, spec.relocs, spec.params, values),))
        with pytest.raises(pc.CorruptEntry, match="filter value slots"):
            pc.decode(pc.encode(bad, "k"), "k")


def test_the_module_writes_the_filter_s_values_into_every_program():
    compiled = pc.Compiled(b"GPL", 0, (), (_spec(),))
    module = CachedModule(compiled, {"trc_a": ("trc_body", 5)}, {"port": socket.htons(8000), "sample": 4})
    out = module.patched("trc_a")
    assert [_imm(out, s) for s in (1, 3, 5, 7)] == [socket.htons(8000), 5, socket.htons(8000), 4]
    module.cleanup()
    bare = CachedModule(compiled, {"trc_a": ("trc_body", 5)})
    with pytest.raises(Exception, match="needs the filter's port"):
        bare.patched("trc_a")
    bare.cleanup()


@pytest.mark.parametrize("one, other", [
    (Filter(ports=(8000,)), Filter(ports=(3000,))),
    (Filter(proto="tcp"), Filter(proto="udp")),
    (Filter(sample=2), Filter(sample=100)),
    (Filter(ports=(8000,), proto="tcp", sample=4), Filter(ports=(53,), proto="udp", sample=9)),
    (Filter(ports=(8000,)), Filter(hosts=("198.18.0.2",))),
    (Filter(), Filter(ports=(80, 443), containers=True, follow_proxies=True, proto="udp", sample=3)),
    (Filter(ports=(8000,), follow_proxies=True), Filter(containers=True)),
])
def test_an_open_build_s_flags_do_not_depend_on_the_values(one, other):
    """The cache key hashes the flags: one entry for every combination of
    ports, hosts, containers, protocol and sample rate; BCC's own builds
    (not open) keep the values as constants."""
    assert one.cflags(open_values=True) == other.cflags(open_values=True)
    assert one.cflags() != other.cflags()
    assert one.values() != other.values()
    assert Program([], filter=one).cflags(shared=True) == Program([], filter=other).cflags(shared=True)


def test_what_changes_an_open_build():
    """A filter expression is C of its own, and a map sized past FILTER_MAP_MIN another map."""
    base = Filter(ports=(8000,)).cflags(open_values=True)
    assert Filter(ports=(8000,), expression_c="int pcap_filter_run() { return 1; }").cflags(open_values=True) != base
    assert Filter(hosts=tuple(f"10.0.0.{i}" for i in range(100))).cflags(open_values=True) != base


def test_the_values_are_what_the_constants_were():
    f = Filter(ports=(8000,), proto="udp", sample=10)
    on = (1 << PARTS.index("port")) | (1 << PARTS.index("proto")) | (1 << PARTS.index("sample"))
    assert f.values() == {"on": on, "port": socket.htons(8000), "proto": events.PROTOCOL_NUMBERS["udp"], "sample": 10}
    assert f"-DFILTER_PORT={socket.htons(8000)}" in f.cflags() and "-DSAMPLE_N=10u" in f.cflags()
    assert f"-DFILTER_PROTO={events.PROTOCOL_NUMBERS['udp']}" in f.cflags() and f"-DFILTER_ON={on}ULL" in f.cflags()
    opened = f.cflags(open_values=True)
    assert {"-DFILTER_ON=TRC_FILTER_ON", "-DFILTER_PORT=TRC_FILTER_PORT", "-DFILTER_PROTO=TRC_FILTER_PROTO",
            "-DSAMPLE_N=TRC_SAMPLE_N"} <= set(opened)
    several = Filter(ports=(80, 443)).values()
    assert several["on"] == 1 << PARTS.index("ports") and several["port"] == 0, "several ports: a map, filled at start"
    assert Filter().values() == {"on": 0, "proto": 0, "port": 0, "sample": 1}, "nothing on: every packet"


def test_each_part_is_its_own_bit_and_the_c_names_them():
    parts = Filter(ports=(1, 2), hosts=("::1",), proto="tcp", sample=2, containers=True, follow_proxies=True).parts()
    assert parts == tuple(p for p in PARTS if p != "port"), "one port is a constant, several a map"
    assert Filter(ports=(1,)).parts() == ("port",) and Filter(sample=1).parts() == ()
    c = c_definitions()
    for i, part in enumerate(PARTS):
        assert f"#define FILTER_ON_{part.upper()} {1 << i}ULL" in c
    text = (BPF_DIR / "common.h").read_text()
    for part in PARTS:
        assert f"FILTER_ON_{part.upper()}" in text, f"filter_match/sampled checks {part}"
