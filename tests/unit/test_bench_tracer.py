"""scripts/bench_overhead.py's Tracer with a stand-in `tracer` package (a
Python process with a `sleep` child; no BPF, no root): a tracer that never
becomes ready is stopped and its temporary files removed, one that exits
before attaching leaves no temporary files, and the caller's PYTHONPATH is
kept after the tree's."""

from __future__ import annotations

import importlib.util
import os
import signal
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_MAIN = """\
import os, subprocess, sys, time
with open(os.environ["FAKE_TRACER_LOG"], "w") as f:
    f.write(f"{os.getpid()}\\n{os.environ.get('PYTHONPATH', '')}\\n")
behaviour = os.environ["FAKE_TRACER_DOES"]
if behaviour == "exit":
    print("cannot attach", file=sys.stderr)
    sys.exit(3)
child = subprocess.Popen(["sleep", "30"])
if behaviour == "ready":
    print("tracing; Ctrl-C to stop", file=sys.stderr, flush=True)
try:
    time.sleep(30)
except KeyboardInterrupt:
    pass
finally:
    child.terminate()
    child.wait()
"""


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_overhead", ROOT / "scripts" / "bench_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """(tree, log, temp dir): a tree whose `python -m tracer` is FAKE_MAIN;
    the Tracer's temporary files go to the temp dir."""
    tree = tmp_path / "tree"
    (tree / "tracer").mkdir(parents=True)
    (tree / "tracer" / "__init__.py").write_text("")
    (tree / "tracer" / "__main__.py").write_text(FAKE_MAIN)
    log = tmp_path / "log"
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("FAKE_TRACER_LOG", str(log))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield tree, log, temp
    if log.exists() and running(pid := int(log.read_text().split("\n")[0])):
        os.killpg(pid, signal.SIGKILL)  # whatever the outcome, nothing of ours keeps running


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_not_ready_in_time_is_stopped_and_cleaned(bench, fake, monkeypatch) -> None:
    tree, log, temp = fake
    monkeypatch.setenv("FAKE_TRACER_DOES", "hang")
    with pytest.raises(RuntimeError, match="not ready after"):
        bench.Tracer((8000,), tree=tree, ready_timeout=1.0)
    pid = int(log.read_text().split("\n")[0])
    assert not running(pid), "a tracer that never became ready was left running"
    assert list(temp.iterdir()) == []


def test_exit_before_attaching_leaves_no_files(bench, fake, monkeypatch) -> None:
    tree, log, temp = fake
    monkeypatch.setenv("FAKE_TRACER_DOES", "exit")
    with pytest.raises(RuntimeError, match=r"exited \(3\) before attaching: cannot attach"):
        bench.Tracer((8000,), tree=tree, ready_timeout=20)
    assert list(temp.iterdir()) == []


def test_ready_keeps_callers_pythonpath(bench, fake, monkeypatch) -> None:
    tree, log, temp = fake
    monkeypatch.setenv("FAKE_TRACER_DOES", "ready")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent/callers-path")
    tracer = bench.Tracer((8000,), tree=tree, ready_timeout=20)
    result = tracer.stop()
    assert result["rc"] == 0
    assert log.read_text().split("\n")[1] == f"{tree}{os.pathsep}/nonexistent/callers-path"
    assert list(temp.iterdir()) == []


def test_ready_without_callers_pythonpath(bench, fake, monkeypatch) -> None:
    tree, log, temp = fake
    monkeypatch.setenv("FAKE_TRACER_DOES", "ready")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    bench.Tracer((8000,), tree=tree, ready_timeout=20).stop()
    assert log.read_text().split("\n")[1] == str(tree)
