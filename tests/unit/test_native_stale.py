"""A tracer._native built from older sources than native/ holds (a git pull
without scripts/setup.sh): the run says what to run in one line, and a
test run stops on that line (tests/conftest.py) rather than failing ~50
tests that compare the compiled and Python paths. The staleness itself is
tests/unit/test_native_text.py's (native.stale, native.missing_functions);
here it is made so in a child process (native.stale answering True), the
sources and the build left as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STALE_LINE = "stale native build: run scripts/setup.sh"


def _child(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRACER_NATIVE"}
    prologue = "import tracer.native as n; n.stale = lambda *a, **k: True\n"
    return subprocess.run([sys.executable, "-c", prologue + code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_stale_build_says_what_to_run_in_one_line():
    out = _child("import logging; logging.basicConfig()\n"
                 "print(n.native() is None); print(n.why_not()); print(n.capability().fix)")
    used, why, fix = out.stdout.splitlines()
    assert used == "True" and why.startswith(STALE_LINE) and "`bash scripts/setup.sh`" in why
    assert out.stderr.count(STALE_LINE) == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert fix.startswith("bash scripts/setup.sh")


def test_a_test_run_on_a_stale_build_stops_on_that_line():
    out = _child("import pytest, sys\n"
                 "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/unit/test_native_text.py']))")
    assert out.returncode == 1
    assert STALE_LINE in out.stdout and " passed" not in out.stdout and "FAILED" not in out.stdout, out.stdout[-3000:]


def test_doctors_line_is_not_said_twice():
    """`tracer doctor` shows why_not() as the extension's detail
    (native.capability): no warning on stderr too, also under --json. A
    run's first native() after it still warns, once."""
    out = _child("import logging; logging.basicConfig()\n"
                 "cap = n.capability(); print(cap.ok, cap.detail); import sys; sys.stderr.write('--\\n')\n"
                 "n.native(); n.native()")
    ok, detail = out.stdout.strip().split(" ", 1)
    assert ok == "False" and detail.startswith(STALE_LINE)
    before, after = out.stderr.split("--\n")
    assert before == "" and after.count(STALE_LINE) == 1, out.stderr
