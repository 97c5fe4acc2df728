"""One compiled body serving several programs (bpf/common.h trc_param,
-DTRC_SHARED_ENTRIES): finding the parameter slots, writing a program's
value and the maps' fds into them (program_cache.patch), the entry's check
of the slots, and which value each tc and netfilter program gets. Loading
the patched programs for real: tests/e2e/test_shared_programs.py."""

from __future__ import annotations

import struct

import pytest

from tracer import events
from tracer.kernel import program_cache as pc
from tracer.kernel.cached_module import CachedModule
from tracer.kernel.program import BPF_DIR, Program
from tracer.sensors import netfilter, tc
from tracer.sensors.drops import DropSensor

EXIT = struct.pack("<BBhi", 0x95, 0, 0, 0)
MOV_R0_0 = struct.pack("<BBhi", 0xB7, 0, 0, 0)


def _ld_imm64(value: int, dst: int = 1, src: int = 0) -> bytes:
    """ld_imm64 dst, value (two slots)."""
    return struct.pack("<BBhI", 0x18, dst | src << 4, 0, value & 0xFFFFFFFF) + struct.pack("<BBhI", 0, 0, 0, value >> 32)


def _ld_map(fd: int, dst: int = 1) -> bytes:
    return _ld_imm64(fd, dst, pc.BPF_PSEUDO_MAP_FD)


MARKER = _ld_imm64(pc.PARAM_MARKER)
# slot 0 mov; 1 marker; 3 map 7; 5 marker again (the compiler may copy it); 7 a plain constant; 9 exit
BODY = MOV_R0_0 + MARKER + _ld_map(7) + _ld_imm64(pc.PARAM_MARKER, dst=2) + _ld_imm64(0x1234) + EXIT


def _spec(insns: bytes = BODY) -> pc.ProgramSpec:
    return pc.ProgramSpec("trc_body", insns, pc.relocations(insns, {7: 0}), pc.param_slots(insns))


def test_the_c_marker_is_the_one_the_loader_looks_for():
    assert f"{pc.PARAM_MARKER:#x}" in (BPF_DIR / "common.h").read_text()


def test_parameter_slots_are_the_marker_loads_only():
    assert pc.param_slots(BODY) == (1, 5)
    # The marker's low half alone, its high half alone, or as a map load: not a slot.
    assert pc.param_slots(_ld_imm64(pc.PARAM_MARKER & 0xFFFFFFFF)) == ()
    assert pc.param_slots(_ld_imm64(pc.PARAM_MARKER >> 32 << 32)) == ()
    assert pc.param_slots(_ld_imm64(pc.PARAM_MARKER, src=pc.BPF_PSEUDO_MAP_FD)) == ()
    assert pc.param_slots(MARKER[:8]) == (), "half an instruction at the end"


def test_patch_writes_the_value_and_the_map_fds():
    out = pc.patch(_spec(), [42], 0x0102_0304_0506_0708)
    assert len(out) == len(BODY)
    for slot in (1, 5):
        assert out[slot * 8:slot * 8 + 2] == BODY[slot * 8:slot * 8 + 2], "opcode and registers kept"
        assert struct.unpack_from("<I", out, slot * 8 + 4)[0] == 0x0506_0708
        assert struct.unpack_from("<I", out, slot * 8 + 12)[0] == 0x0102_0304
    assert struct.unpack_from("<i", out, 3 * 8 + 4)[0] == 42, "the map's fd"
    assert out[7 * 8:] == BODY[7 * 8:], "other constants untouched"
    assert pc.param_slots(out) == (), "no marker left to load"


def test_patch_refuses_a_body_without_its_value_and_a_value_without_a_slot():
    with pytest.raises(ValueError, match="needs the value"):
        pc.patch(_spec(), [42], None)
    plain = MOV_R0_0 + _ld_map(7) + EXIT
    with pytest.raises(ValueError, match="no parameter slot"):
        pc.patch(_spec(plain), [42], 1)
    with pytest.raises(ValueError, match="64 bits"):
        pc.patch(_spec(), [42], 1 << 64)
    assert pc.patch(_spec(plain), [42], None)[8 + 4:8 + 8] == struct.pack("<i", 42)


def test_an_entry_reads_back_with_its_slots():
    compiled = pc.Compiled(b"GPL", 0, (pc.MapSpec("flows", 1, 4, 4, 8, 0, "", '"int"'),), (_spec(),))
    assert pc.decode(pc.encode(compiled, "k"), "k").programs[0].params == (1, 5)


@pytest.mark.parametrize("params", [(), (1,), (1, 5, 7), (0, 1, 5), (1, 5, 99)])
def test_an_entry_whose_slots_are_not_the_markers_is_refused_even_with_a_good_checksum(params):
    """A slot left out would load the marker as the program's value; one
    added would overwrite another constant."""
    spec = _spec()
    bad = pc.Compiled(b"GPL", 0, (pc.MapSpec("flows", 1, 4, 4, 8, 0, "", '"int"'),),
                      (pc.ProgramSpec(spec.name, spec.insns, spec.relocs, params),))
    with pytest.raises(pc.CorruptEntry, match="parameter slots"):
        pc.decode(pc.encode(bad, "k"), "k")


def test_the_loader_resolves_a_program_to_its_body_and_value():
    # No maps: nothing to create, so this runs without root.
    plain = MOV_R0_0 + EXIT
    compiled = pc.Compiled(b"GPL", 0, (), (
        pc.ProgramSpec("trc_body", MOV_R0_0 + MARKER + EXIT, (), (1,)), pc.ProgramSpec("trc_plain", plain, (), ())))
    module = CachedModule(compiled, {"trc_a": ("trc_body", 5), "trc_b": ("trc_body", 6)})
    assert struct.unpack_from("<I", module.patched("trc_a"), 12)[0] == 5
    assert struct.unpack_from("<I", module.patched(b"trc_b"), 12)[0] == 6
    assert module.function_size("trc_a") == 32 and module.function_size("trc_plain") == 16
    assert module.patched("trc_plain") == plain
    with pytest.raises(Exception, match="needs the value"):
        module.patched("trc_body")  # the body itself is no program
    with pytest.raises(Exception, match="Unknown program"):
        module.patched("trc_c")
    module.cleanup()


def test_each_tc_program_gets_its_hook_and_netns_flag():
    seen = {}
    for in_ct, (ingress, egress) in tc.PROGRAMS.items():
        for name, hook in ((ingress, "tc_ingress"), (egress, "tc_egress")):
            body, value = tc.VARIANTS[name]
            assert body == "trc_tc"
            # bpf/tc.c trc_tc: tc_sense(ctx, v, v >> 8), both taken as u8
            assert events.HOOKS[value & 0xFF] == hook
            assert (value >> 8) == (events.FLAG_IN_CONTAINER_NS if in_ct else 0)
            seen[name] = value
    assert len(set(seen.values())) == 4 and set(seen) == set(tc.VARIANTS)
    assert set(tc.TcSensor([]).variants()) == {name for name, _, _ in tc.TcSensor([]).programs()}


def test_each_netfilter_program_gets_its_nat_stage():
    assert netfilter.VARIANTS == {netfilter.BEFORE: ("trc_nf", events.NAT_STAGES.index("before")),
                                  netfilter.AFTER: ("trc_nf", events.NAT_STAGES.index("after"))}
    sensor = netfilter.NetfilterSensor()
    assert set(sensor.variants()) == {name for name, _, _ in sensor.programs()}


def test_only_the_shared_build_has_one_body_per_sensor():
    program = Program([tc.TcSensor([]), netfilter.NetfilterSensor(), DropSensor()])
    assert "-DTRC_SHARED_ENTRIES" in program.cflags(shared=True)
    assert "-DTRC_SHARED_ENTRIES" not in program.cflags(), "BCC's own build: a function per program"
    assert program.variants() == {**tc.VARIANTS, **netfilter.VARIANTS}
