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
