"""pyflakes over the tree: no unused import, undefined name or unused
variable in tracer/, tests/ or scripts/ (pyflakes comes with the test
extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pyflakes(*paths: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyflakes", *paths], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_tree_has_no_pyflakes_message():
    done = _pyflakes("tracer", "tests", "scripts")
    assert done.returncode == 0 and not done.stdout and not done.stderr, done.stdout + done.stderr


def test_a_message_fails_the_run(tmp_path):
    """What the check above rests on: an unused import is a message and a non-zero exit."""
    (tmp_path / "m.py").write_text("import os\n")
    done = _pyflakes("m.py", cwd=tmp_path)
    assert done.returncode != 0 and "'os' imported but unused" in done.stdout, done.stdout + done.stderr
