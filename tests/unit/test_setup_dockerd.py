"""scripts/setup.sh starting dockerd when none runs (scripts/lib-dockerd.sh):
if the lab had switched the engine's userland proxy off, it is started as
the lab's record says, not bare. The shell part runs with stand-ins for
docker, dockerd and pgrep on PATH: nothing touches the machine's engine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tracer import lab_dockerd as ld

REPO = Path(__file__).resolve().parents[2]
BEFORE = ["/usr/bin/dockerd", "--debug", "--userland-proxy=true"]


def test_recorded_argv_is_the_engine_as_the_lab_switched_it():
    switched = {"dockerd": {"argv_before": BEFORE, "userland_proxy": False, "pid": 7}}
    assert ld.recorded_argv(switched, None) == ["/usr/bin/dockerd", "--debug", "--userland-proxy=false"]
    assert ld.recorded_argv(switched, False) == ["/usr/bin/dockerd", "--debug"]  # daemon.json already says off
    assert ld.recorded_argv({}, None) is None and ld.recorded_argv({"dockerd": {}}, None) is None


@pytest.fixture
def no_daemon_json(monkeypatch, tmp_path):
    monkeypatch.setattr(ld, "DAEMON_JSON", tmp_path / "daemon.json")
    return tmp_path / "daemon.json"


def test_print_recorded_argv(no_daemon_json, tmp_path, capsys):
    state = tmp_path / "lab.json"
    assert ld.print_recorded_argv(str(state)) == 0 and capsys.readouterr().out == ""  # no lab
    state.write_text(json.dumps({"netns": "tracer-client"}))
    assert ld.print_recorded_argv(str(state)) == 0 and capsys.readouterr().out == ""  # a lab, not switched
    state.write_text(json.dumps({"dockerd": {"argv_before": BEFORE, "userland_proxy": False}}))
    assert ld.print_recorded_argv(str(state)) == 0
    assert capsys.readouterr().out == "/usr/bin/dockerd\0--debug\0--userland-proxy=false\0"
    no_daemon_json.write_text('{"userland-proxy": true}')  # the owner's configuration says on: no argument can
    assert ld.print_recorded_argv(str(state)) == 1
    err = capsys.readouterr().err
    assert "lab.json" in err and "userland-proxy" in err and len(err.splitlines()) == 1
    state.write_text("{not json")
    assert ld.print_recorded_argv(str(state)) == 1 and len(capsys.readouterr().err.splitlines()) == 1


_DOCKER = """#!/bin/sh
# answers once the stand-in dockerd has started
[ -e "$FAKE_DIR/up" ] || exit 1
echo 99.0
"""
_DOCKERD = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done > "$FAKE_DIR/argv"
touch "$FAKE_DIR/up"
"""
_PGREP = "#!/bin/sh\nexit 1\n"  # no dockerd process runs


def _ensure_dockerd(tmp_path: Path, state: dict | None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """ensure_dockerd with the stand-ins; (its run, the stand-in dockerd's arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", _DOCKER), ("dockerd", _DOCKERD), ("pgrep", _PGREP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state_file = tmp_path / "lab.json"
    if state is not None:
        state_file.write_text(json.dumps(state))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path),
           "TRACER_DOCKERD_LOG": str(tmp_path / "dockerd.log"), "TRACER_DOCKERD_PIDFILE": str(tmp_path / "dockerd.pid"),
           "TRACER_DOCKERD_WAIT": "20", "TRACER_LAB_STATE": str(state_file)}
    done = subprocess.run(["bash", "-c", f"set -euo pipefail; source {REPO}/scripts/lib-dockerd.sh; ensure_dockerd"],
                          env=env, capture_output=True, text=True, timeout=60)
    argv = (tmp_path / "argv").read_text().splitlines() if (tmp_path / "argv").exists() else []
    return done, argv


def test_setup_starts_dockerd_as_the_lab_switched_it(tmp_path):
    config = ld.read_config()  # this machine's daemon.json (none here) has its say, as in setup.sh
    if config:
        pytest.skip(f"{ld.DAEMON_JSON} sets the userland proxy on: no lab can have switched it off")
    done, argv = _ensure_dockerd(tmp_path, {"dockerd": {"argv_before": ["dockerd", "--debug"], "userland_proxy": False}})
    assert done.returncode == 0, done.stdout + done.stderr
    assert argv == ["--debug"] + ([] if config is False else ["--userland-proxy=false"])
    assert "switched dockerd's userland proxy off" in done.stdout and "--userland-proxy=false" in done.stdout


def test_setup_starts_plain_dockerd_without_a_switched_lab(tmp_path):
    done, argv = _ensure_dockerd(tmp_path, {"netns": "tracer-client"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert argv == [] and (tmp_path / "up").exists()  # started, with no argument
    assert "switched" not in done.stdout and "docker: starting dockerd (log" in done.stdout


def test_setup_says_when_it_cannot_follow_the_record(tmp_path):
    (tmp_path / "lab.json").write_text("{broken")
    done, argv = _ensure_dockerd(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert argv == [] and "cannot be used" in done.stderr and "Traceback" not in done.stderr
