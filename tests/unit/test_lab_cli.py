"""`tracer lab` bad input: one line on stderr, non-zero exit, no traceback.
No root needed (non-root is simulated by patching os.geteuid)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracer.cli import cli


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, timeout=60)


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(args), prog_name="tracer")
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_one_line_error(code, err: str, *needles: str) -> None:
    assert code not in (0, None)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tracer: error:")
    for n in needles:
        assert n in lines[0]


def test_unknown_lab_subcommand():
    cp = run_cli("lab", "bogus")
    assert_one_line_error(cp.returncode, cp.stderr, "bogus")
    assert cp.stdout == ""


def test_unknown_lab_option(capsys):
    code, _, err = invoke(capsys, "lab", "status", "--bogus")
    assert_one_line_error(code, err, "--bogus")


@pytest.mark.parametrize("sub", ["up", "down", "status", "image"])
def test_lab_needs_root(monkeypatch, capsys, sub):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = invoke(capsys, "lab", sub)
    assert_one_line_error(code, err, "needs root", f"lab {sub}")
    assert out == ""


def test_lab_help_lists_commands():
    cp = run_cli("lab", "--help")
    assert cp.returncode == 0
    for sub in ("up", "down", "status"):
        assert sub in cp.stdout


@pytest.mark.parametrize("flag", ["--no-userland-proxy", "--userland-proxy"])
def test_lab_up_mode_needs_root(monkeypatch, capsys, flag):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = invoke(capsys, "lab", "up", flag)
    assert_one_line_error(code, err, "needs root", "lab up")
    assert out == ""


def test_lab_status_says_the_mode():
    from tracer.render_commands import lab_mode_text as _mode

    assert _mode({"userland_proxy": True, "dockerd_switched": False}) == "userland proxy on (docker-proxy)"
    off = _mode({"userland_proxy": False, "dockerd_switched": True})
    assert off.startswith("userland proxy off (hairpin NAT;") and "`lab up` restores it" in off
    assert "own configuration" in _mode({"userland_proxy": False, "dockerd_switched": False})
    assert _mode({"userland_proxy": None, "dockerd_switched": False}) == "userland proxy unknown"
