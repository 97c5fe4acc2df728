"""scripts/bench_journey_pool.py's arguments: pool sizes that are not powers
of two (bpf/journey.h asserts it) are refused with one line, before
anything is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_journey_pool.py"


@pytest.mark.parametrize("pools", ["256,1000", "0", "x,256", ""])
def test_bad_pools_are_one_line(pools):
    done = subprocess.run([sys.executable, str(SCRIPT), "--pools", pools], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "--pools" in done.stderr and "Traceback" not in done.stderr
