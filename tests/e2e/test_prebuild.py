"""`--compile-only` (tracer/prebuild.py, run by scripts/setup.sh for the
default option sets): the options' programs compiled into the program
cache and verified, nothing attached; a start with the same options then
takes them from the cache. Bad input and a cache it may not use: one line,
non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.tracing import REPO, kernel_snapshot, wait_gone


def _run(*args: str, cache_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRACER_PROGRAM_CACHE_DIR": str(cache_dir)}
    env.pop("TRACER_DEBUG", None)
    env.pop("TRACER_PROGRAM_CACHE", None)
    return subprocess.run([sys.executable, "-m", "tracer", *args, "--compile-only"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_compile_only_fills_the_cache_and_the_next_start_is_warm(lab, tmp_path, monkeypatch):
    cache_dir = tmp_path / "programs"
    before = kernel_snapshot()
    first = _run("trace", "--port", str(lab["port"]), cache_dir=cache_dir)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.strip().splitlines()
    # trace links docker-proxy's legs where its proxies run: both builds are made
    assert len(lines) == 2 and all("compiled in" in line and str(cache_dir) in line for line in lines), lines
    assert "without the docker-proxy sensor" in lines[0] and "with the docker-proxy sensor" in lines[1]
    assert len(list(cache_dir.glob("*.prog"))) == 2
    assert wait_gone(before) == ([], []), "nothing left loaded or attached"

    again = _run("trace", "--port", str(lab["port"]), cache_dir=cache_dir)
    assert again.returncode == 0 and again.stderr.count("found in") == 2, again.stderr

    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    session = TraceSession(TraceOptions(Targets(ports=(lab["port"],)), proxy_links=True)).start()
    try:
        assert "from cache" in session.startup and "compiled" not in session.startup, session.startup
    finally:
        session.close()
    assert wait_gone(before) == ([], [])


def test_latency_has_one_build(tmp_path):
    out = _run("latency", cache_dir=tmp_path / "programs")
    assert out.returncode == 0, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "docker-proxy" not in out.stderr
    assert len(list((tmp_path / "programs").glob("*.prog"))) == 1


def test_bad_input_and_an_unusable_cache_are_one_line_and_a_failure(tmp_path):
    before = kernel_snapshot()
    bad = _run("trace", "--port", "99999", cache_dir=tmp_path / "programs")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2, bad.stderr
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # others may write it: programs from it would run in the kernel
    out = _run("trace", cache_dir=shared)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not used" in out.stderr, out.stderr
    assert not list(shared.iterdir()), "nothing written there"
    assert wait_gone(before) == ([], [])


def test_a_per_program_build_is_not_prebuilt_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACER_SHARED_ENTRIES", "0")  # BCC compiles and loads: the cache is not used
    out = _run("trace", cache_dir=tmp_path / "programs")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "TRACER_SHARED_ENTRIES=0" in out.stderr, out.stderr
    assert not (tmp_path / "programs").exists() or not list((tmp_path / "programs").iterdir())
