"""scripts/setup.sh starting dockerd when none runs (scripts/lib-dockerd.sh):
if the lab had switched the engine's userland proxy off, it is started as
the lab's record says, not bare; a record it cannot follow (unreadable, its
binary gone, a dockerd that does not come up with it) is said in one line
and plain dockerd started. The shell part runs with stand-ins for
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


@pytest.mark.parametrize("record", [{"dockerd": "x"}, {"dockerd": ["dockerd"]},
                                    {"dockerd": {"argv_before": "/usr/bin/dockerd --debug"}},
                                    {"dockerd": {"argv_before": ["/usr/bin/dockerd", 1, None]}}])
def test_recorded_argv_of_another_shape_is_refused(record):
    with pytest.raises(ValueError, match="dockerd"):
        ld.recorded_argv(record, None)
    with pytest.raises(ld.NoDockerd, match="cannot be used"):  # `lab up` with no dockerd: one line, nothing started
        ld._start_from_record(record, False, lambda state: None)


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
    for shape in ({"dockerd": "x"}, {"dockerd": {"argv_before": "dockerd --debug"}},
                  {"dockerd": {"argv_before": [["dockerd"], 2]}}):  # valid JSON, not a record
        state.write_text(json.dumps(shape))
        assert ld.print_recorded_argv(str(state)) == 1
        out, err = capsys.readouterr()
        assert out == "" and "lab.json" in err and ("argv_before" in err or '"dockerd" is' in err)
        assert len(err.splitlines()) == 1


_DOCKER = """#!/bin/sh
# answers once the stand-in dockerd has started
[ -e "$FAKE_DIR/up" ] || exit 1
echo 99.0
"""
_DOCKERD = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done > "$FAKE_DIR/argv"
echo "$*" >> "$FAKE_DIR/calls"
if [ $# -gt 0 ]; then  # started as the lab recorded: FAKE_RECORDED says how that goes
    case "${FAKE_RECORDED:-}" in
        fail) echo "conflicting flag: userland-proxy" >&2; exit 1 ;;
        hang) echo $$ > "$FAKE_DIR/hung"; exec sleep 30 ;;
    esac
fi
[ -n "${FAKE_NEVER_UP:-}" ] || touch "$FAKE_DIR/up"
"""
_PGREP = "#!/bin/sh\nexit 1\n"  # no dockerd process runs


def _ensure_dockerd(tmp_path: Path, state: dict | None, **env_extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """ensure_dockerd with the stand-ins; (its run, the stand-in dockerd's
    arguments, its last start)."""
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
           "TRACER_DOCKERD_WAIT": "20", "TRACER_LAB_STATE": str(state_file), **env_extra}
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


def _calls(tmp_path: Path) -> list[str]:
    """The stand-in dockerd's starts, one line of arguments each."""
    return (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []


def _unusable_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if "cannot be used" in line]


SWITCHED = {"dockerd": {"argv_before": ["dockerd", "--debug"], "userland_proxy": False}}


def test_setup_starts_plain_dockerd_when_the_recorded_binary_is_gone(tmp_path):
    gone = {"dockerd": {"argv_before": [str(tmp_path / "gone" / "dockerd"), "--debug"], "userland_proxy": False}}
    done, argv = _ensure_dockerd(tmp_path, gone)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _calls(tmp_path) == [""] and (tmp_path / "up").exists()  # plain dockerd, started once
    [line] = _unusable_lines(done)
    assert "gone/dockerd is not installed" in line and "starting plain dockerd" in line


def test_setup_falls_back_to_plain_dockerd_when_recorded_one_exits(tmp_path):
    done, argv = _ensure_dockerd(tmp_path, SWITCHED, FAKE_RECORDED="fail")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = _calls(tmp_path)
    assert len(calls) == 2 and calls[0].startswith("--debug") and calls[1] == ""  # recorded, then plain
    [line] = _unusable_lines(done)
    assert "did not answer" in line and str(tmp_path / "dockerd.log") in line
    assert "conflicting flag" in (tmp_path / "dockerd.log").read_text()


def test_setup_stops_a_recorded_dockerd_that_hangs_then_starts_plain(tmp_path):
    done, argv = _ensure_dockerd(tmp_path, SWITCHED, FAKE_RECORDED="hang", TRACER_DOCKERD_WAIT="2")
    hung = int((tmp_path / "hung").read_text())
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert _calls(tmp_path)[1:] == [""] and (tmp_path / "up").exists()
        assert len(_unusable_lines(done)) == 1
        assert not Path(f"/proc/{hung}").exists(), "the recorded dockerd that hung was left running"
    finally:
        if Path(f"/proc/{hung}").exists():
            os.kill(hung, 9)


def test_setup_fails_when_plain_dockerd_does_not_answer_either(tmp_path):
    done, argv = _ensure_dockerd(tmp_path, SWITCHED, FAKE_RECORDED="fail", TRACER_DOCKERD_WAIT="2", FAKE_NEVER_UP="1")
    assert done.returncode == 1
    assert len(_calls(tmp_path)) == 2 and len(_unusable_lines(done)) == 1
    assert "did not answer within 2s" in done.stderr
