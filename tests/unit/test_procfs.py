"""tracer/procfs.py: processes by command name and their arguments, on a
made-up /proc and on the real one."""

from __future__ import annotations

import os
from pathlib import Path

from tracer import procfs


def _process(proc: Path, pid: int, comm: str | None, argv: list[str] | None) -> None:
    d = proc / str(pid)
    d.mkdir()
    if comm is not None:
        (d / "comm").write_text(comm + "\n")
    if argv is not None:
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + (b"\0" if argv else b""))


def test_processes_by_name_in_pid_order(tmp_path: Path):
    _process(tmp_path, 10, "dockerd", ["/usr/bin/dockerd", "--userland-proxy=false"])
    _process(tmp_path, 9, "dockerd", [])  # a zombie: named, no arguments
    _process(tmp_path, 11, "bash", ["bash"])
    _process(tmp_path, 12, None, None)  # gone while read
    (tmp_path / "self").mkdir()
    assert procfs.pids_named("dockerd", tmp_path) == [9, 10]  # in numeric order, not by name
    assert procfs.cmdline(10, tmp_path) == ["/usr/bin/dockerd", "--userland-proxy=false"]
    assert procfs.cmdline(9, tmp_path) is None and procfs.cmdline(12, tmp_path) is None
    assert procfs.comm(11, tmp_path) == "bash" and procfs.comm(12, tmp_path) is None
    assert procfs.pids_named("dockerd", tmp_path / "missing") == []


def test_this_process_is_found_on_the_real_proc():
    me = procfs.comm(os.getpid())
    assert me and os.getpid() in procfs.pids_named(me)
    assert "pytest" in " ".join(procfs.cmdline(os.getpid()))
