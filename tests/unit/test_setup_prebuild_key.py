"""scripts/lib-prebuild.sh: the key that lets setup skip the program cache's
prebuild. It runs under setup's `set -euo pipefail`, so a piece that is
missing on a fresh machine (no cache directory yet, no kernel headers, no
venv) must give a key, not end setup without a word."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "scripts" / "lib-prebuild.sh"


def _key(tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRACER_PROGRAM_CACHE_DIR=str(cache))
    script = (f"set -euo pipefail; source {LIB}; repo={REPO}; venv={tmp_path / 'no-venv'}; "
              f"stamp_file={tmp_path / 'no-stamp'}; kbuild={tmp_path / 'no-kbuild'}; "
              "k=$(prebuild_key); echo \"key=$k\"")
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_cache_directory_gives_a_key(tmp_path):
    done = _key(tmp_path, tmp_path / "not-yet")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().removeprefix("key=")) == 64


def test_the_key_follows_the_cache_directory(tmp_path):
    before = _key(tmp_path, tmp_path / "cache").stdout
    (tmp_path / "cache").mkdir()
    after = _key(tmp_path, tmp_path / "cache").stdout
    assert before.startswith("key=") and after.startswith("key=") and before != after
    assert _key(tmp_path, tmp_path / "cache").stdout == after  # stable while nothing changes
