"""Compile flags of the BPF module (no compiling, no BTF: offsets stubbed)."""

import pytest

from tracer.kernel import program as P


@pytest.fixture(autouse=True)
def no_btf(monkeypatch):
    monkeypatch.setattr(P, "resolve_offsets", lambda wanted: {macro: 0 for macro in wanted})


def test_latency_mode_gets_histogram_slices(monkeypatch):
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    assert "-DHIST_SLICES=2" in P.Program([], latency=True).cflags()
    monkeypatch.setattr(P.os, "cpu_count", lambda: 96)
    flags = P.Program([], latency=True).cflags()
    assert "-DHIST_SLICES=8" in flags and "-DLATENCY_MODE" in flags  # capped: ~13 MiB at most
    assert not any(f.startswith("-DHIST_SLICES") for f in P.Program([]).cflags())


def test_extra_flags_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRACER_BPF_CFLAGS", raising=False)
    assert "-DTRACER_NOOP" not in P.Program([]).cflags()
    monkeypatch.setenv("TRACER_BPF_CFLAGS", "-DTRACER_NOOP  -DOTHER=1")
    flags = P.Program([]).cflags()
    assert "-DTRACER_NOOP" in flags and "-DOTHER=1" in flags


def test_latency_codes_reach_the_c_from_python():
    from tracer.kernel.hop_codes import HOP_NAMES, ROLES

    source = P.Program([], latency=True).source()
    assert "#define HOP_NF_INPUT_AFTER %d" % HOP_NAMES.index("nf_input/after") in source
    assert "#define HOP_DROP %d" % HOP_NAMES.index("drop") in source
    assert "#define ROLE_CONTAINER %d" % ROLES.index("container") in source
    assert source.index("#define N_HOPS") < source.index("static __always_inline u32 nf_hop_code")


def test_no_program_btf_unless_debugging(monkeypatch):
    """-g0 comes after BCC's own -g, so it wins: no debug info, no program
    BTF (15 % of the compile); TRACER_DEBUG keeps BCC's -g."""
    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    flags = P.Program([]).cflags()
    assert flags[-1] == "-g0"
    monkeypatch.setenv("TRACER_DEBUG", "1")
    assert "-g0" not in P.Program([]).cflags()


class _Module:
    """Stands in for a compiled bcc.BPF: load_func as BCC's (it keeps each
    program it loaded), with `module` None (libbcc sizes it 0)."""

    def __init__(self, load) -> None:
        self.module = None
        self.funcs: dict[bytes, object] = {}
        self.loads: list[tuple[bytes, int, int]] = []
        self._load = load

    def load_func(self, name, prog_type, attach_type=-1):
        self.loads.append((name, prog_type, attach_type))
        self._load(name)
        self.funcs[name] = object()
        return self.funcs[name]


def test_programs_are_verified_side_by_side_once_each_and_a_failure_is_left_to_the_sensor():
    import threading

    both = threading.Barrier(2, timeout=10)  # passes only if two loads run at once
    met = []

    def load(name: bytes) -> None:
        if name == b"trc_bad":
            raise Exception("Failed to load BPF program trc_bad: Permission denied")  # BCC's bare Exception
        if name in (b"trc_nf_a", b"trc_nf_b"):
            both.wait()
            met.append(name)

    bpf = _Module(load)
    P.load_programs(bpf, [("trc_nf_a", 32, 45), ("trc_nf_b", 32, 45), ("trc_nf_a", 32, 45), ("trc_bad", 3, -1)],
                    workers=2)
    assert sorted(met) == [b"trc_nf_a", b"trc_nf_b"], "the two loads ran at the same time"
    assert sorted(name for name, _, _ in bpf.loads) == [b"trc_bad", b"trc_nf_a", b"trc_nf_b"], "each name once"
    assert (b"trc_nf_a", 32, 45) in bpf.loads, "with its program and attach types"
    assert set(bpf.funcs) == {b"trc_nf_a", b"trc_nf_b"}, "a failed one is not kept: its sensor loads it and says why"


def test_the_sweep_is_verified_first_though_it_is_small():
    """Its bounded loops make each instruction ~10x as dear to verify as
    another program's: by size alone it came last, alone on one CPU."""

    class Sized(_Module):
        def function_size(self, name) -> int:
            return {b"trc_sweep": 485 * 8, b"trc_nf_a": 4133 * 8, b"trc_tc_in": 3207 * 8}[name]

    bpf = Sized(lambda name: None)
    P.load_programs(bpf, [("trc_tc_in", 3, -1), ("trc_nf_a", 32, 45), ("trc_sweep", 3, -1)], workers=1)
    assert [name for name, _, _ in bpf.loads] == [b"trc_sweep", b"trc_nf_a", b"trc_tc_in"]
