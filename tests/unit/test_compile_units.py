"""tracer/kernel/compile_units.py without BCC: how sensors split into units,
how the units' snapshots merge into one, and what a child that fails says.
The real compiles (both units of every mode's program against one compile of
it): tests/e2e/test_compile_units.py."""

from __future__ import annotations

import os
import sys

import pytest

from tests.unit.test_shared_programs import EXIT, _ld_map
from tracer.errors import MissingCapability
from tracer.kernel import compile_units as cu
from tracer.kernel import program_cache as pc
from tracer.kernel.program_cache import Compiled, MapSpec, NotCacheable, ProgramSpec


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_netfilter_is_a_unit_of_its_own_and_the_rest_one_together():
    tc, nf, drop, proxy = (Named(n) for n in ("tc", "netfilter", "drop", "proxy"))
    assert cu.split([tc, nf, drop, proxy]) == [[nf], [tc, drop, proxy]]
    assert cu.split([tc, drop]) == [[tc, drop]]
    assert cu.split([nf]) == [[nf]]


def _program(name: str, *fds: int) -> ProgramSpec:
    insns = b"".join(_ld_map(fd) for fd in fds) + EXIT
    return ProgramSpec(name, insns, tuple((2 * i, fd - 10) for i, fd in enumerate(fds)))


def _map(name: str, size: int = 8) -> MapSpec:
    return MapSpec(name, 2, 4, size, 1, 0, "", "")


def test_the_merged_snapshot_has_each_map_once_and_relocations_into_it():
    # unit A's maps: flows (fd 10), events (fd 11); unit B's: events (fd 10), nf_last (fd 11).
    a = Compiled(b"GPL", 1, (_map("flows"), _map("events")), (_program("trc_tc", 10, 11), _program("trc_sweep", 11)))
    b = Compiled(b"GPL", 1, (_map("events"), _map("nf_last")), (_program("trc_nf", 11, 10),))
    merged = cu.merge([a, b])
    assert [m.name for m in merged.maps] == ["flows", "events", "nf_last"]
    by_name = {p.name: p for p in merged.programs}
    assert sorted(by_name) == ["trc_nf", "trc_sweep", "trc_tc"]
    named = {n: [merged.maps[m].name for _, m in p.relocs] for n, p in by_name.items()}
    assert named == {"trc_tc": ["flows", "events"], "trc_nf": ["nf_last", "events"], "trc_sweep": ["events"]}
    assert by_name["trc_sweep"].insns == a.programs[1].insns


def test_a_program_in_two_units_is_not_merged():
    """The shared part's trc_sweep is compiled in the first unit only
    (-DTRC_NO_SWEEP in the others): a second copy is a split gone wrong."""
    a = Compiled(b"GPL", 1, (_map("events"),), (_program("trc_sweep", 10),))
    with pytest.raises(NotCacheable, match="trc_sweep in two compile units"):
        cu.merge([a, a])


def test_a_map_that_differs_between_units_is_not_merged():
    a = Compiled(b"GPL", 1, (_map("events"),), (_program("trc_sweep", 10),))
    with pytest.raises(NotCacheable, match="map events differs"):
        cu.merge([a, Compiled(b"GPL", 1, (_map("events", 16),), ())])
    with pytest.raises(NotCacheable, match="license"):
        cu.merge([a, Compiled(b"Dual BSD/GPL", 1, (), ())])


def _child_that(monkeypatch, tmp_path, code: str):
    """Children of _Child run this Python instead of a compile."""
    script = tmp_path / "child.py"
    script.write_text(code)
    monkeypatch.setattr(cu._Child, "command", (sys.executable, str(script)))


def test_a_source_clang_refused_in_the_child_is_its_one_line(monkeypatch, tmp_path):
    _child_that(monkeypatch, tmp_path, "import sys\nprint('clang chatter', file=sys.stderr)\n"
                "print('BPF compile failed: x.c:1:1: error: nope', file=sys.stderr)\nsys.exit(3)\n")
    here = Compiled(b"GPL", 1, (), ())
    with pytest.raises(MissingCapability) as refused:
        cu.compile_units(["here", "there"], ["-DX"], lambda source, cflags: here)
    assert str(refused.value) == "BPF compile failed: x.c:1:1: error: nope"


@pytest.mark.parametrize("code, said", [("import sys\nsys.exit(1)\n", "exited with status 1"),
                                        ("import sys\nsys.stdout.write('not an entry')\n", "answer: "),
                                        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "status -9")])
def test_a_child_that_fails_otherwise_is_not_cacheable_so_the_caller_compiles_at_once(monkeypatch, tmp_path, code,
                                                                                       said):
    _child_that(monkeypatch, tmp_path, code)
    with pytest.raises(NotCacheable, match=said):
        cu.compile_units(["here", "there"], [], lambda source, cflags: Compiled(b"GPL", 1, (), ()))


def test_the_child_gets_the_source_and_flags_and_its_answer_is_decoded(monkeypatch, tmp_path):
    answer = Compiled(b"GPL", 1, (_map("events"),), (_program("trc_tc", 10),))
    (tmp_path / "answer").write_bytes(pc.encode(answer, cu.UNIT_KEY))
    # run where this tracer's package is, so `-m` imports it, not one in the caller's directory
    _child_that(monkeypatch, tmp_path, f"import json, os, sys\nr = json.load(open(sys.argv[1]))\n"
                f"assert r == {{'source': 'there', 'cflags': ['-DX', '-DTRC_NO_SWEEP']}}, r\n"
                f"assert os.path.isdir('tracer/kernel') and os.getcwd() == {str(cu.PACKAGE_ROOT)!r}\n"
                f"sys.stdout.buffer.write(open({str(tmp_path / 'answer')!r}, 'rb').read())\n")
    merged = cu.compile_units(["here", "there"], ["-DX"], lambda source, cflags: Compiled(b"GPL", 1, (), ()))
    assert merged == answer


def test_a_failure_here_ends_the_child_and_removes_its_request(monkeypatch, tmp_path):
    _child_that(monkeypatch, tmp_path, "import time\ntime.sleep(60)\n")
    started = []
    real_init = cu._Child.__init__

    def init(self, source, cflags):
        real_init(self, source, cflags)
        started.append(self)

    monkeypatch.setattr(cu._Child, "__init__", init)

    def refused(source, cflags):
        raise MissingCapability("BPF compile failed: here")

    with pytest.raises(MissingCapability, match="here"):
        cu.compile_units(["here", "there"], [], refused)
    child = started[0]
    assert child.proc.returncode is not None  # killed and reaped, not left running
    assert not os.path.exists(child._dir.name)


def test_the_childs_own_side_answers_a_refusal_with_its_line_and_status(monkeypatch, tmp_path, capsys):
    import tracer.kernel.bcc_compile as bcc_compile

    def refuse(text, cflags):
        raise MissingCapability("BPF compile failed: y.c:2:3: error: no")

    monkeypatch.setattr(bcc_compile, "compile_text", refuse)
    request = tmp_path / "unit.json"
    request.write_text('{"source": "int x;", "cflags": []}')
    assert cu.main([str(request)]) == cu.COMPILE_REFUSED
    assert capsys.readouterr().err.strip() == "BPF compile failed: y.c:2:3: error: no"


def test_one_compile_when_switched_off(monkeypatch):
    monkeypatch.setenv("TRACER_COMPILE_UNITS", "1")
    assert not cu.enabled()
    monkeypatch.delenv("TRACER_COMPILE_UNITS")
    assert cu.enabled()
