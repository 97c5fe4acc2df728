"""`tracer doctor` reports what this kernel can do, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.kernel import bpf_syscall as sc
from tracer.kernel.probes import PROBE_PROG_NAMES

ROOT = Path(__file__).resolve().parents[2]


def tracer(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tracer", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_not_root_is_one_line():
    res = tracer("doctor", user=65534)
    assert res.returncode != 0
    assert "needs root" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loads and attaches BPF programs)")
def test_doctor_matches_this_kernel_and_leaves_nothing():
    progs_before = {p.id for p in sc.list_progs()}
    links_before = {l.id for l in sc.list_links()}

    res = tracer("doctor", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    status = {c["name"]: c["status"] for c in report["capabilities"]}
    assert report["ok"] is True and report["missing"] == []
    # this kernel (README, How it works): no kprobes, fentry refused; tcx, netfilter links, BTF fine
    assert status["kprobes"] == "missing"
    assert status["fentry"] == "missing"
    for name in ("root", "btf", "tcx", "clsact", "tc", "netfilter_links", "tracepoints", "raw_tracepoints",
                 "socket_tracepoints", "ring_buffer", "headers", "bcc", "docker", "bpffs", "tracefs", "native_text",
                 "program_cache"):
        assert status[name] == "ok", (name, report)
    # the sensors say what they need; here every one of them can attach
    assert {x["name"]: x["ok"] for x in report["sensors"]} == {"tc": True, "netfilter": True, "drop": True, "proxy": True}
    assert next(c for c in report["capabilities"] if c["name"] == "raw_tracepoints")["required"]  # the drop sensor's
    fentry = next(c for c in report["capabilities"] if c["name"] == "fentry")
    assert "EPERM" in fentry["detail"]

    # the kernel's own view: nothing doctor loaded or attached survives it
    new_progs = [p for p in sc.list_progs() if p.id not in progs_before]
    assert not [p for p in new_progs if p.name.startswith(PROBE_PROG_NAMES)], new_progs
    names = {p.id: p.name for p in sc.list_progs()}
    new_links = [l for l in sc.list_links() if l.id not in links_before]
    assert not [l for l in new_links if names.get(l.prog_id, "").startswith(PROBE_PROG_NAMES)], new_links
    tool = json.loads(subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True).stdout or "[]")
    assert not [p for p in tool if p["id"] not in progs_before and str(p.get("name", "")).startswith(PROBE_PROG_NAMES)]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_doctor_table():
    res = tracer("doctor")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["capability", "status", "detail"]
    rows = {l.split()[0]: l for l in lines[1:]}
    assert "missing (optional)" in rows["kprobes"] and "CONFIG_KPROBES" in rows["kprobes"]
    assert rows["netfilter_links"].split()[1] == "ok"
