"""The benchmarks that build cut or counting copies of bpf/ by text
substitution (bench_bpf_breakdown.py, bench_bpf_paths.py) still find the
text they expect in today's sources. Both stop with a message when they do
not, but only when someone runs them: session 16 found the breakdown's
anchors two changes behind the sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.script_modules import load_script


@pytest.mark.parametrize("variant", load_script("bench_bpf_breakdown").VARIANTS)
def test_every_breakdown_variant_builds_from_the_sources(tmp_path: Path, variant: str) -> None:
    breakdown = load_script("bench_bpf_breakdown")
    tree = breakdown.build(variant, tmp_path)
    common = (tree / "bpf" / "common.h").read_text()
    assert common.startswith(f"#define CUT {breakdown.CUT_NUMBERS.get(variant, -1)}\n")
    assert ("#define TRACER_NOOP 1" in common) == (variant == "noop")
    sources = "".join((tree / "bpf" / name).read_text() for name in ("tc.c", "netfilter.c", "journey.h"))
    for number in breakdown.CUT_NUMBERS.values():
        assert f"#if CUT == {number}\n" in sources
    assert (breakdown.EMIT in sources) == (variant != "noemit")


def test_the_counting_build_finds_its_anchors(tmp_path: Path) -> None:
    paths = load_script("bench_bpf_paths")
    tree = paths.build(tmp_path)
    assert "trc_paths" in "".join(p.read_text() for p in (tree / "bpf").iterdir())
