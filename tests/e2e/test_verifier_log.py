"""A program the kernel's verifier refuses, loaded by tracer's own loader
(kernel/cached_module.py: the shared bodies, the program cache): the error
stays one line (the verifier's last three lines), the whole log is kept;
with TRACER_DEBUG, Program.build first loads the shared bodies a start
without it would load (BCC's function-per-program build does not reproduce
their refusal) and a refusal stops it with that whole log in a file the one
line names. Real kernel refusals; the program stands in for a shared body:
twenty loads and an exit with r0 never set (the verifier's log walks all
of them)."""

from __future__ import annotations

import errno
import os
import re
import struct

import pytest

from tests.unit.test_build_failures import FakeModule
from tracer.errors import MissingCapability
from tracer.kernel import bpf_syscall as sc
from tracer.kernel import program_cache as pc
from tracer.kernel.cached_module import CachedModule
from tracer.kernel.program import Program
from tracer.sensors import tc

MOVES = 20


R0_0 = struct.pack("<BBhi", 0xB7, 0, 0, 0)  # r0 = 0
EXIT = struct.pack("<BBhi", 0x95, 0, 0, 0)


def _body(name: str, r0_set: bool = False) -> pc.Compiled:
    """A shared body: its parameter slot (r2 = the program's value, as
    trc_param loads it), MOVES loads, an exit with r0 never written ("R0
    !read_ok") unless ``r0_set``. ``name``: the body's, or a program's
    own (no slot)."""
    param = struct.pack("<BBhi", 0x18, 0x02, 0, 0) + struct.pack("<BBhi", 0, 0, 0, 0)  # r2 = imm64
    moves = struct.pack("<BBhi", 0xB7, 0x01, 0, 0) * MOVES  # r1 = 0
    body, value = Program([tc.TcSensor([])]).variants().get(name, (name, None))
    insns = (param if value is not None else b"") + moves + (R0_0 if r0_set else b"") + EXIT
    return pc.Compiled(b"GPL", 0, (), (pc.ProgramSpec(body, insns, (), (0,) if value is not None else ()),))


def test_our_loader_keeps_the_whole_verifier_log_and_says_one_line():
    module = CachedModule(_body("trc_refused9"))
    try:
        with pytest.raises(Exception, match="Failed to load BPF program trc_refused9") as exc:
            module.load_func(b"trc_refused9", sc.BPF_PROG_TYPE_SCHED_CLS)
        assert "\n" not in str(exc.value) and "R0 !read_ok" in str(exc.value)
        whole = module.verifier_logs["trc_refused9"]
        assert whole.count("r1 = 0") == MOVES and "R0 !read_ok" in whole  # not only the last three lines
    finally:
        module.cleanup()


def test_a_verifier_log_past_a_mebibyte_is_read_whole():
    """A log longer than the first buffer (1 MiB): the verifier prints
    each instruction it walks, ~19 bytes a move here; the whole log is
    read in a larger buffer, its start and its verdict both kept (~4.5 MB
    on 6.18, whose verifier adds each instruction's register state)."""
    moves = 100_000
    insns = struct.pack("<BBhi", 0xB7, 0x01, 0, 0) * moves + EXIT  # r1 = 0 ..., exit with r0 never set
    with pytest.raises(sc.ProgramRefused) as exc:
        sc.prog_load(sc.BPF_PROG_TYPE_SCHED_CLS, insns, b"GPL", b"trc_long_log")
    log = exc.value.log
    assert len(log) > sc.LOG_FIRST_SIZE and not exc.value.truncated
    assert "\n0: (b7) r1 = 0" in "\n" + log[:200], log[:200]  # its start (a rotating log, 6.4+, keeps the end)
    assert log.count("(b7) r1 = 0") == moves and "R0 !read_ok" in str(exc.value)
    assert exc.value.errno == errno.EACCES


@pytest.fixture
def debug_build(monkeypatch):
    """A Program under TRACER_DEBUG (shared bodies on, as by default) and
    its first tc program's name; clang stands in (the kernel's verdicts
    are real)."""
    for name in ("TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACER_DEBUG", "1")
    program = Program([tc.TcSensor([])])
    return program, program.sensors[0].programs()[0][0]


def test_with_tracer_debug_a_refused_shared_body_has_its_whole_log_in_a_file(monkeypatch, debug_build):
    program, name = debug_build
    flags = []
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: flags.append(cflags) or FakeModule())
    monkeypatch.setattr(pc, "snapshot", lambda bpf: _body(name))  # the kernel refuses the shared body
    monkeypatch.setattr(Program, "_bcc_build", lambda *a: pytest.fail("BCC's build after a refused shared body"))
    with pytest.raises(MissingCapability) as exc:
        program.build([(name, sc.BPF_PROG_TYPE_SCHED_CLS, -1)])
    message = str(exc.value)
    assert "\n" not in message and f"not loaded as a shared body (TRACER_SHARED_ENTRIES=0 builds a function per " \
        f"program): {name}: " in message
    assert flags[0][-1] == "-g0" and "-DTRC_SHARED_ENTRIES" in flags[0]  # the build a start without it loads
    path = re.search(r"verifier's full log: (\S+)\)$", message).group(1)
    try:
        text = open(path).read()
        assert text.count("r1 = 0") == MOVES and "R0 !read_ok" in text and name in text
    finally:
        os.unlink(path)


def test_with_tracer_debug_shared_bodies_that_load_go_on_to_bccs_build(monkeypatch, debug_build):
    program, name = debug_build
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: FakeModule())
    monkeypatch.setattr(pc, "snapshot", lambda bpf: _body(name, r0_set=True))
    monkeypatch.setattr(Program, "_bcc_build", lambda self, programs, mark: "bcc's module")
    assert program.build([(name, sc.BPF_PROG_TYPE_SCHED_CLS, -1)]) == "bcc's module"
    monkeypatch.setenv("TRACER_SHARED_ENTRIES", "0")  # no shared bodies to check
    monkeypatch.setattr(pc, "snapshot", lambda bpf: pytest.fail("shared bodies checked with TRACER_SHARED_ENTRIES=0"))
    assert program.build([(name, sc.BPF_PROG_TYPE_SCHED_CLS, -1)]) == "bcc's module"
