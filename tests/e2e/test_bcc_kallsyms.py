"""BCC's kallsyms lookup answered (tracer/kernel/bcc_kallsyms.py) for real:
BCC compiles exactly the same programs as when it reads the real
/proc/kallsyms (trace with the proxy sensor, and latency mode), and only
the compile's own thread sees the answer: another thread of the process,
the caller and the host see the real file, the caller's working directory
is unchanged, and no mount is left behind."""

from __future__ import annotations

import os
import threading

import pytest

from tests.conftest import require_root
from tracer.kernel import bcc_kallsyms
from tracer.kernel import program_cache as pc
from tracer.kernel.headers import ensure_bcc_headers
from tracer.kernel.program import Program
from tracer.sensors import netfilter, tc
from tracer.sensors.drops import DropSensor
from tracer.sensors.proxy import ProxySensor


def _by_name(compiled: pc.Compiled, values: dict[str, int]):
    """Programs with map fds numbered by map name (and the filter's
    ``values`` in their slots), and the maps by name."""
    names = sorted(m.name for m in compiled.maps)
    fds = [1000 + names.index(m.name) for m in compiled.maps]
    return ({p.name: pc.patch(p, fds, 1 if p.params else None, values) for p in compiled.programs},
            sorted(compiled.maps, key=lambda m: m.name))


@pytest.mark.parametrize("latency", [False, True], ids=["trace+proxy", "latency"])
def test_bcc_compiles_the_same_programs_with_the_answer(monkeypatch, latency):
    require_root("compiling BPF")
    ensure_bcc_headers()
    assert bcc_kallsyms.known(pc.bcc_version()), "this BCC is not one the answer is known for: nothing to test"
    sensors = [tc.TcSensor([], latency=latency), netfilter.NetfilterSensor(), DropSensor()]
    program = Program(sensors if latency else [*sensors, ProxySensor()], latency=latency)
    source, cflags = program.source(), program.cflags(shared=True)
    answered = []
    real = bcc_kallsyms._answer_in_this_thread
    monkeypatch.setattr(bcc_kallsyms, "_answer_in_this_thread", lambda: answered.append(real()) or answered[-1])
    built = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("TRACER_BCC_KALLSYMS", setting)
        bpf = program.compile(source, cflags)
        try:
            built[setting] = _by_name(pc.snapshot(bpf), program.filter.values())
        finally:
            bpf.cleanup()
    assert answered == [True]  # the other compile read the real file
    assert built["1"] == built["0"]
    assert {"trc_tc", "trc_nf", "trc_drop"} <= set(built["1"][0])


def _kallsyms_lines() -> int:
    with open("/proc/kallsyms") as f:
        return sum(1 for _ in f)


def test_only_the_compiling_thread_sees_the_answer(tmp_path, monkeypatch):
    """Another thread meanwhile, the caller after it and the host see the
    real file; the caller's working directory stays where it was (a
    relative `-w` path), and no mount is left behind."""
    require_root("mount namespaces")
    monkeypatch.delenv("TRACER_BCC_KALLSYMS", raising=False)
    monkeypatch.chdir(tmp_path)
    seen = {}
    inside = threading.Event()
    looked = threading.Event()

    def other() -> None:
        inside.wait(10)
        seen["other thread, meanwhile"] = _kallsyms_lines()
        looked.set()

    def compile_() -> str:
        with open("/proc/kallsyms") as f:
            seen["inside"] = f.read()
        inside.set()
        looked.wait(10)
        return "module"

    helper = threading.Thread(target=other)
    helper.start()
    assert bcc_kallsyms.call_answered("0.26.0", compile_) == "module"
    helper.join(20)
    assert seen["inside"] == bcc_kallsyms.ANSWER
    assert seen["other thread, meanwhile"] > 1000 and _kallsyms_lines() > 1000
    assert os.getcwd() == str(tmp_path)
    with open("/proc/self/mountinfo") as f:
        assert "kallsyms" not in f.read()
    with open("/proc/1/mountinfo") as f:
        assert "kallsyms" not in f.read()


def test_another_bcc_reads_the_real_file():
    assert bcc_kallsyms.call_answered("0.30.0", _kallsyms_lines) > 1000
