"""Processes as /proc shows them: which run a given command (its comm), and
their arguments. docker-proxy (tracer/proxies.py) and dockerd
(tracer/lab_dockerd.py) are found this way. ``proc`` is /proc but for tests."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def comm(pid: int, proc: Path = PROC) -> str | None:
    """The process's command name; None once it is gone."""
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def cmdline(pid: int, proc: Path = PROC) -> list[str] | None:
    """The process's arguments; None once it is gone (or has none: a zombie, a kernel thread)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None


def pids_named(name: str, proc: Path = PROC) -> list[int]:
    """The pids, in order, of the processes whose command name is ``name``
    (one that exits while this reads is left out)."""
    try:
        entries = [int(e) for e in (p.name for p in proc.iterdir()) if e.isdigit()]
    except OSError:
        return []
    return sorted(pid for pid in entries if comm(pid, proc) == name)
