"""tracer/prebuild.py (--compile-only, which scripts/setup.sh runs and
stamps): the kernel refusing only an optional sensor's program (the
docker-proxy sensor: a start traces without it) is one line of the result,
not a failed prebuild, which would have setup prebuild again on every run
on such a kernel; a required program's refusal still fails it. The kernel's
verdicts come from a stand-in module (tests/unit/test_build_failures.py);
the real builds: tests/e2e/test_prebuild.py."""

from __future__ import annotations

import pytest

from tests.unit.test_build_failures import FakeModule
from tracer.kernel import program_cache as pc
from tracer.kernel.program import Program
from tracer.prebuild import NotPrebuilt, prebuild
from tracer.sensors.proxy import RAW_TRACEPOINTS
from tracer.session import TraceOptions
from tracer.targets import Targets

PROXY_FN = RAW_TRACEPOINTS[0][1]


@pytest.fixture
def refusing(monkeypatch, tmp_path):
    """The kernel's refusals for the builds prebuild makes (a set to fill);
    every build that loads whole is kept in a cache of the test's own."""
    for name in ("TRACER_DEBUG", "TRACER_PROGRAM_CACHE", "TRACER_SHARED_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(tmp_path / "programs"))
    refused: set[str] = set()
    kept: list[str] = []
    monkeypatch.setattr(Program, "cache_key", lambda self, source, cflags: f"k{len(self.sensors)}")

    def build(self, programs, mark=lambda phase: None, cache=None):
        mark("compiled")
        failed = {name for name, _, _ in programs} & refused
        if not failed:
            kept.append(self.cache_key("", []))
        return FakeModule(refuse=failed)

    monkeypatch.setattr(Program, "build", build)
    monkeypatch.setattr(pc.ProgramCache, "load", lambda self, key: object() if key in kept else None)
    return refused


def _options() -> TraceOptions:
    return TraceOptions(Targets(ports=(8000,)), proxy_links=True)


def test_only_the_optional_proxy_sensor_refused_is_a_line_not_a_failure(refusing):
    assert all("compiled in" in line for line in prebuild(_options()))  # nothing refused: both builds kept
    refusing.add(PROXY_FN)
    without, with_proxy = prebuild(_options())
    assert "without the docker-proxy sensor compiled in" in without
    assert with_proxy.startswith("programs with the docker-proxy sensor: the kernel refused an optional sensor's "
                                 f"program ({PROXY_FN}: ")
    assert "\n" not in with_proxy and "not kept in the program cache" in with_proxy


def test_a_required_programs_refusal_still_fails_the_prebuild(refusing):
    from tracer.session import TraceSession
    sensors = TraceSession(_options())._plan(proxies_running=False).sensors
    required = next(s for s in sensors if not s.optional).programs()[0][0]
    refusing.update({PROXY_FN, required})
    with pytest.raises(NotPrebuilt, match=f"the kernel refused a program: {required}: "):
        prebuild(_options())
