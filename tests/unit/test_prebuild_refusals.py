"""tracer/prebuild.py (--compile-only, which scripts/setup.sh runs and
stamps): the kernel refusing only an optional sensor's program (the
docker-proxy sensor: a start traces without it) is one line of the result,
not a failed prebuild, which would have setup prebuild again on every run
on such a kernel; a required program's refusal still fails it, with the
line Program.build's refusal gives. The real Program.build runs; below it,
the compile and the kernel's verdicts come from a stand-in module
(tests/unit/test_build_failures.py), so these run without root; the real
builds: tests/e2e/test_prebuild.py."""

from __future__ import annotations

import pytest

from tests.unit.test_build_failures import FakeModule
from tracer.errors import MissingCapability
from tracer.kernel import program_cache as pc
from tracer.kernel.program import Program
from tracer.prebuild import prebuild
from tracer.sensors.proxy import RAW_TRACEPOINTS
from tracer.session import TraceOptions
from tracer.targets import Targets

PROXY_FN = RAW_TRACEPOINTS[0][1]


@pytest.fixture
def refusing(monkeypatch, tmp_path):
    """The kernel's refusals for the builds prebuild makes (a set to fill);
    every build that loads whole is kept in a cache of the test's own.
    Returns (refused, the modules the kernel's verdicts came from)."""
    for name in ("TRACER_DEBUG", "TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(tmp_path / "programs"))
    monkeypatch.setenv("TRACER_COMPILE_UNITS", "1")  # one compile, the stand-in's
    monkeypatch.setattr("tracer.prebuild.require_root", lambda what: None)  # pure logic: no kernel object is made
    refused: set[str] = set()
    modules: list[FakeModule] = []
    kept: set[str] = set()
    monkeypatch.setattr(Program, "cache_key", lambda self, source, cflags: f"k{len(self.sensors)}")
    monkeypatch.setattr(Program, "compile", lambda self, source=None, cflags=None: FakeModule())
    monkeypatch.setattr(pc, "snapshot", lambda bpf: "compiled")

    def module(self, compiled):
        modules.append(FakeModule(refused))
        return modules[-1]

    monkeypatch.setattr(Program, "_module", module)
    monkeypatch.setattr(pc.ProgramCache, "store", lambda self, key, compiled: kept.add(key))
    monkeypatch.setattr(pc.ProgramCache, "load", lambda self, key: "compiled" if key in kept else None)
    monkeypatch.setattr(pc.ProgramCache, "discard", lambda self, key: kept.discard(key))
    return refused, modules


def _options() -> TraceOptions:
    return TraceOptions(Targets(ports=(8000,)), proxy_links=True)


def test_only_the_optional_proxy_sensor_refused_is_a_line_not_a_failure(refusing):
    refused, modules = refusing
    assert all("compiled in" in line for line in prebuild(_options()))  # nothing refused: both builds kept
    assert all("found in" in line for line in prebuild(_options()))
    refused.add(PROXY_FN)
    del modules[:]
    without, with_proxy = prebuild(_options())
    assert "without the docker-proxy sensor found in" in without
    assert with_proxy.startswith("programs with the docker-proxy sensor: the kernel refused an optional sensor's "
                                 f"program ({PROXY_FN}: ")
    assert "\n" not in with_proxy and "not kept in the program cache" in with_proxy
    assert modules and all(m.cleaned == 1 for m in modules)


def test_a_required_programs_refusal_still_fails_the_prebuild(refusing):
    """As a real refusal does: Program.build's one MissingCapability line,
    naming the required program (not the optional one refused too), after
    cleanup."""
    from tracer.session import TraceSession
    refused, modules = refusing
    sensors = TraceSession(_options())._plan(proxies_running=False).sensors
    required = next(s for s in sensors if not s.optional).programs()[0][0]
    refused.update({PROXY_FN, required})
    with pytest.raises(MissingCapability, match=f"^BPF program not loaded: {required}: .*Permission denied"):
        prebuild(_options())
    assert len(modules) == 1 and modules[0].cleaned == 1

