"""Program.build's error paths without BPF (a stand-in BCC module and
loader): a snapshot that fails in any way falls back to BCC's own build and
still cleans up; TRACER_PROGRAM_CACHE=0 and TRACER_SHARED_ENTRIES=0 never
snapshot; a program the kernel refuses stops the build with one
MissingCapability after cleanup (with TRACER_DEBUG, the verifier's full log
in a file the message names); the sensors' own load says the same; --ebpf
prints the flags this run compiles with. The real loads:
tests/e2e/test_shared_programs.py, test_program_cache.py."""

from __future__ import annotations

import os
import re
import tempfile

import pytest

from tracer.errors import MissingCapability
from tracer.kernel import bcc_compile
from tracer.kernel import program_cache as pc
from tracer.kernel import program as prog_mod
from tracer.kernel.program import Program
from tracer.sensors import netfilter, tc
from tracer.sensors.base import load_program
from tracer.sensors.drops import DropSensor

PROGRAMS = [("trc_a", 3, -1), ("trc_b", 3, -1)]


class FakeModule:
    """What build needs of a bcc.BPF or a CachedModule."""

    def __init__(self, refuse: set[str] = frozenset(), log: str = "") -> None:
        self.refuse, self.log, self.cleaned, self.loaded = set(refuse), log, 0, []

    def function_size(self, name) -> int:
        return 8

    def load_func(self, name, prog_type, attach_type=-1):
        name = name.decode() if isinstance(name, bytes) else name
        if name in self.refuse:
            if self.log:
                os.write(2, self.log.encode())
            raise Exception(f"Failed to load BPF program {name}: Permission denied")
        self.loaded.append(name)

    def cleanup(self) -> None:
        self.cleaned += 1


@pytest.fixture
def program(monkeypatch, tmp_path):
    for name in ("TRACER_DEBUG", "TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(tmp_path / "programs"))
    monkeypatch.setenv("TRACER_COMPILE_UNITS", "1")  # one compile, the stand-in's (units: test_compile_units.py)
    p = Program([tc.TcSensor([]), netfilter.NetfilterSensor(), DropSensor()])
    monkeypatch.setattr(Program, "cache_key", lambda self, source, cflags: "k")
    monkeypatch.setattr(Program, "cflags", lambda self, shared=False: ["-DX"] + (["-DTRC_SHARED_ENTRIES"] if shared else []))
    return p


def _bcc_fallback(monkeypatch):
    calls = []
    monkeypatch.setattr(Program, "_bcc_build", lambda self, programs, mark: calls.append(programs) or "bcc's module")
    return calls


@pytest.mark.parametrize("error", [AttributeError("undefined symbol: bpf_table_key_desc"),
                                   OSError(22, "Invalid argument"), pc.NotCacheable("pseudo source 2")])
def test_any_snapshot_failure_falls_back_to_bccs_build_after_cleanup(program, monkeypatch, error):
    compiled_bpf = FakeModule()
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: compiled_bpf)

    def snapshot(bpf):
        raise error

    monkeypatch.setattr(pc, "snapshot", snapshot)
    calls = _bcc_fallback(monkeypatch)
    assert program.build(PROGRAMS) == "bcc's module"
    assert calls == [PROGRAMS] and compiled_bpf.cleaned == 1


@pytest.mark.parametrize("switch", ["TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"])
def test_the_switches_build_with_bcc_and_never_snapshot(program, monkeypatch, switch):
    monkeypatch.setenv(switch, "0")
    monkeypatch.setattr(pc, "snapshot", lambda bpf: pytest.fail("snapshot called"))
    calls = _bcc_fallback(monkeypatch)
    assert program.build(PROGRAMS) == "bcc's module" and calls == [PROGRAMS]
    assert not prog_mod.own_loader()


def test_a_refused_program_on_a_cold_start_is_one_error_after_cleanup(program, monkeypatch):
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: FakeModule())
    monkeypatch.setattr(pc, "snapshot", lambda bpf: object())
    module = FakeModule(refuse={"trc_b"})
    monkeypatch.setattr(Program, "_module", lambda self, compiled: module)
    monkeypatch.setattr(pc.ProgramCache, "store", lambda *a: pytest.fail("a refused build was cached"))
    with pytest.raises(MissingCapability, match=r"BPF program not loaded: trc_b: .*Permission denied.*TRACER_SHARED_ENTRIES=0"):
        program.build(PROGRAMS)
    assert module.cleaned == 1


def test_with_tracer_debug_the_verifier_log_is_kept_in_a_file(program, monkeypatch):
    monkeypatch.setenv("TRACER_DEBUG", "1")
    module = FakeModule(refuse={"trc_a"}, log="0: (b7) r0 = 0\nR1 invalid mem access 'scalar'\nprocessed 9 insns\n")
    # BCC's build (no flags given); the shared bodies checked first (tests/e2e/test_verifier_log.py) are not
    # snapshottable here: it goes on to BCC's
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: module if cflags is None else FakeModule())
    with pytest.raises(MissingCapability) as exc:
        program.build(PROGRAMS)
    assert module.cleaned == 1
    path = re.search(r"verifier's full log: (\S+)\)", str(exc.value)).group(1)
    try:
        assert "R1 invalid mem access" in open(path).read()
    finally:
        os.unlink(path)


def test_with_tracer_debug_a_clean_load_leaves_no_file(program, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("TRACER_DEBUG", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    module = FakeModule()
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: module)
    assert program.build(PROGRAMS) is module
    assert not list(tmp_path.glob("tracer-verifier-*"))


def test_a_sensors_refused_load_is_one_clear_error():
    with pytest.raises(MissingCapability, match="BPF program trc_b not loaded: Failed to load"):
        load_program(FakeModule(refuse={"trc_b"}), "trc_b", 3)


def test_ebpf_says_which_flags_this_run_compiles_with(monkeypatch):
    for name in ("TRACER_DEBUG", "TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    program = Program([tc.TcSensor([]), netfilter.NetfilterSensor(), DropSensor()])
    first, *flags = program.annotated_source().split(" */\n")[0].splitlines()
    # the listed flags are BCC's loadable build (tests/e2e/test_ebpf_dump.py loads it); the header names the one
    # flag a normal start adds
    assert "-DTRC_SHARED_ENTRIES" not in [f.strip(" *") for f in flags]
    assert "plus -DTRC_SHARED_ENTRIES" in first and "TRACER_SHARED_ENTRIES=0" in first
    monkeypatch.setenv("TRACER_SHARED_ENTRIES", "0")
    first = program.annotated_source().splitlines()[0]
    assert "exactly these flags" in first and "-DTRC_SHARED_ENTRIES" not in first


def test_an_optional_sensors_refused_program_does_not_stop_the_start(monkeypatch, tmp_path):
    """The proxy sensor is optional: its attach says it is unavailable and
    tracing goes on, so its refusal in build is neither an error nor cached."""
    from tracer.sensors.proxy import RAW_TRACEPOINTS, ProxySensor

    for name in ("TRACER_DEBUG", "TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(tmp_path / "programs"))
    monkeypatch.setenv("TRACER_COMPILE_UNITS", "1")
    program = Program([tc.TcSensor([]), ProxySensor()])
    monkeypatch.setattr(Program, "cache_key", lambda self, source, cflags: "k")
    monkeypatch.setattr(Program, "cflags", lambda self, shared=False: ["-DX"])
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: FakeModule())
    monkeypatch.setattr(pc, "snapshot", lambda bpf: object())
    proxy_fn = RAW_TRACEPOINTS[0][1]
    module = FakeModule(refuse={proxy_fn})
    monkeypatch.setattr(Program, "_module", lambda self, compiled: module)
    monkeypatch.setattr(pc.ProgramCache, "store", lambda *a: pytest.fail("a refused build was cached"))
    programs = [*PROGRAMS, (proxy_fn, 17, -1)]
    assert program.build(programs) is module and module.cleaned == 0
    module.refuse.add("trc_a")
    with pytest.raises(MissingCapability, match="trc_a"):
        program.build(programs)


def _refuse_dup2(monkeypatch):
    from tracer.kernel import stderr_fd

    def refuse(fd, fd2):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(stderr_fd.os, "dup2", refuse)


def test_verifier_log_leaks_no_file_when_fd2_cannot_be_redirected(monkeypatch, tmp_path):
    from tracer.kernel.verifier_log import verifier_log

    monkeypatch.setenv("TRACER_DEBUG", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    before = len(os.listdir("/proc/self/fd"))
    _refuse_dup2(monkeypatch)
    with pytest.raises(OSError):
        with verifier_log():
            pass
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == before
    assert list(tmp_path.iterdir()) == []


def test_captured_stderr_leaks_no_file_when_fd2_cannot_be_redirected(monkeypatch):
    from tracer.kernel.stderr_fd import captured_stderr

    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    before = len(os.listdir("/proc/self/fd"))
    _refuse_dup2(monkeypatch)
    with pytest.raises(OSError):
        with captured_stderr():
            pass
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_compile_failure_names_clangs_error_not_another_line_with_error_in_it(program, monkeypatch):
    """The capture may hold other text (a C library's, before the compile
    started): the message is clang's first ``error:`` diagnostic."""
    import bcc

    class Refused:
        def __init__(self, text, cflags):
            os.write(2, b"tracer: WARNING: docker error talking to the engine\n"
                        b"/virtual/main.c:4:2: warning: unused variable 'x'\n"
                        b"/virtual/main.c:9:5: error: use of undeclared identifier 'nope'\n")
            raise Exception("Failed to compile BPF module <text>")

    monkeypatch.setattr(bcc_compile, "ensure_bcc_headers", lambda: None)
    monkeypatch.setattr(bcc, "BPF", Refused)
    with pytest.raises(MissingCapability) as refused:
        program.compile("int x;", ["-DX"])
    assert str(refused.value) == "BPF compile failed: /virtual/main.c:9:5: error: use of undeclared identifier 'nope'"
