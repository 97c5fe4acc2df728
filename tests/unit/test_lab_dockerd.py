"""The lab's dockerd mode switch (tracer/lab_dockerd.py): the userland-proxy
flag as dockerd parses it, daemon.json, and the arguments for each mode.
Pure logic, no root; the restart itself is exercised by
tests/e2e/test_lab.py's hairpin test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer import lab_dockerd as ld
from tracer.lab_base import LabError


@pytest.mark.parametrize("argv, value", [
    (["dockerd"], None),
    (["dockerd", "--userland-proxy"], True),
    (["dockerd", "--userland-proxy=false"], False),
    (["dockerd", "--userland-proxy=0"], False),
    (["dockerd", "--userland-proxy=F"], False),
    (["dockerd", "--userland-proxy=TRUE"], True),
    (["dockerd", "--userland-proxy=false", "--userland-proxy=true"], True),  # the last one wins
    (["dockerd", "--userland-proxy=true", "--debug", "--userland-proxy=false"], False),
    (["dockerd", "--userland-proxy-path=/usr/bin/docker-proxy"], None),  # another flag
    (["--userland-proxy=false"], None),  # argv[0] is the program, never a flag
])
def test_flag_value(argv, value):
    assert ld.flag_value(argv) is value


def test_flag_value_not_a_boolean():
    with pytest.raises(LabError, match="not a boolean"):
        ld.flag_value(["dockerd", "--userland-proxy=maybe"])


@pytest.mark.parametrize("text, value", [
    (None, None), ("", None), ("  \n", None), ("{}", None),
    ('{"userland-proxy": false}', False), ('{"userland-proxy": true, "debug": true}', True),
    ("[]", None),
])
def test_config_value(text, value):
    assert ld.config_value(text) is value


@pytest.mark.parametrize("text, needle", [("{not json", "not JSON"), ('{"userland-proxy": "false"}', "not true or false")])
def test_config_value_bad(text, needle):
    with pytest.raises(LabError, match=needle):
        ld.config_value(text)


@pytest.mark.parametrize("argv, config, on", [
    (["dockerd"], None, True),
    (["dockerd"], False, False),
    (["dockerd", "--userland-proxy=false"], None, False),
    (["dockerd", "--userland-proxy=true"], False, True),  # the flag over the file (dockerd refuses both; not ours to fix)
])
def test_engine_value(argv, config, on):
    assert ld.engine_value(argv, config) is on


def test_args_for_off_adds_the_flag_and_keeps_the_rest():
    argv = ["/usr/sbin/dockerd", "-H", "unix:///var/run/docker.sock", "--debug"]
    off = ld.args_for(argv, False, None)
    assert off == argv + ["--userland-proxy=false"]
    assert ld.engine_value(off, None) is False
    assert ld.args_for(off, True, None) == argv  # and back


def test_args_for_replaces_an_existing_flag():
    argv = ["dockerd", "--userland-proxy=true", "--log-level=warn", "--userland-proxy"]
    assert ld.args_for(argv, False, None) == ["dockerd", "--log-level=warn", "--userland-proxy=false"]
    assert ld.args_for(argv, True, None) == ["dockerd", "--log-level=warn"]


def test_args_for_leaves_a_mode_daemon_json_sets_to_it():
    # dockerd refuses a flag that daemon.json also sets: no flag then
    assert ld.args_for(["dockerd", "--userland-proxy=false"], False, False) == ["dockerd"]
    with pytest.raises(LabError, match="does not override"):
        ld.args_for(["dockerd"], False, True)
    with pytest.raises(LabError, match="does not override"):
        ld.args_for(["dockerd"], True, False)


class _Engine:
    """dockerd as switch() sees it: the process (current, stop, start) and
    its pid file replaced; ``ours`` is whether tracer's scripts started it."""

    def __init__(self, monkeypatch, argv, config=None, ours=True):
        self.argv, self.config, self.ours = list(argv), config, ours
        self.running, self.pid = True, 100
        self.events: list = []  # ("stop", pid) / ("start", argv) / ("save", state) / ("warn",)
        self.fail_start: list[bool] = []  # per start: True = it exits at once
        self.restarts: list = []
        monkeypatch.setattr(ld, "current", self._current)
        monkeypatch.setattr(ld, "read_config", lambda: self.config)
        monkeypatch.setattr(ld, "stop", self._stop)
        monkeypatch.setattr(ld, "start", self._start)
        monkeypatch.setattr(ld, "restartable", lambda pid: self.ours and pid == self.pid)
        monkeypatch.setattr(ld, "warn_stopped_containers", lambda: self.events.append(("warn",)))
        monkeypatch.setattr(ld, "_dockerd_processes", lambda: [self.pid] if self.running else [])

    def save(self, state):
        self.events.append(("save", json.loads(json.dumps(state))))

    def _current(self):
        if not self.running:
            raise ld.NoDockerd("no dockerd process runs; run `sudo scripts/setup.sh` to start one")
        return self.pid, self.argv, ld.engine_value(self.argv, self.config)

    def _stop(self, pid):
        assert self.running and pid == self.pid
        self.events.append(("stop", pid))
        self.running = False

    def _start(self, argv):
        assert not self.running, "two engines"
        self.events.append(("start", list(argv)))
        if self.fail_start and self.fail_start.pop(0):
            raise LabError("dockerd exited right after its start; see /var/log/tracer-dockerd.log")
        self.restarts.append(list(argv))
        self.argv, self.running, self.pid = list(argv), True, 200 + len(self.restarts)
        return self.pid

    def kinds(self):
        return [e[0] for e in self.events]


def test_switch_off_then_on_gives_the_arguments_back(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd", "--debug"])
    state: dict = {}
    assert ld.switch(state, False)
    assert engine.argv == ["dockerd", "--debug", "--userland-proxy=false"]
    assert state["dockerd"] == {"argv_before": ["dockerd", "--debug"], "userland_proxy": False, "pid": 201}
    assert not ld.switch(state, False), "already off: no second restart"
    assert len(engine.restarts) == 1
    assert ld.switch(state, True)
    assert engine.argv == ["dockerd", "--debug"] and "dockerd" not in state
    assert not ld.switch(state, True)
    assert len(engine.restarts) == 2


def test_switch_off_saves_the_record_before_stopping_dockerd(monkeypatch):
    """A `lab up --no-userland-proxy` killed during the restart has already
    written what restoring needs."""
    engine = _Engine(monkeypatch, ["dockerd", "--debug"])
    ld.switch({"server_pid": 7}, False, save=engine.save)
    kinds = engine.kinds()
    assert kinds.index("save") < kinds.index("stop"), kinds
    saved = engine.events[kinds.index("save")][1]
    assert saved == {"server_pid": 7, "dockerd": {"argv_before": ["dockerd", "--debug"], "userland_proxy": False}}
    assert kinds.index("warn") < kinds.index("stop"), "the warning comes before anything is stopped"


@pytest.mark.parametrize("on", [False, True])
def test_switch_refuses_an_engine_tracer_did_not_start(monkeypatch, on):
    argv = ["/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"]
    engine = _Engine(monkeypatch, argv if not on else argv + ["--userland-proxy=false"], ours=False)
    state = {} if not on else {"dockerd": {"argv_before": argv, "userland_proxy": False, "pid": 100}}
    before = json.loads(json.dumps(state))
    with pytest.raises(LabError, match=r"runs under a service manager.*daemon\.json.*restart it yourself"):
        ld.switch(state, on, save=engine.save)
    assert engine.events == [] and state == before, "nothing stopped, nothing recorded"


def test_switch_off_that_fails_to_start_gives_the_engine_back(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd", "--debug"])
    engine.fail_start = [True]
    state: dict = {}
    with pytest.raises(LabError, match="exited right after its start.*runs again with its arguments from before"):
        ld.switch(state, False, save=engine.save)
    assert engine.running and engine.argv == ["dockerd", "--debug"]
    assert "dockerd" not in state


def test_switch_off_keeps_the_record_when_a_slow_dockerd_still_runs(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd"])

    def slow(argv):
        engine.running = True  # a process, but not answering
        raise LabError("dockerd did not answer within 60s of its start")

    monkeypatch.setattr(ld, "start", slow)
    state: dict = {}
    with pytest.raises(LabError, match="did not answer"):
        ld.switch(state, False, save=engine.save)
    assert state["dockerd"]["argv_before"] == ["dockerd"]


@pytest.mark.parametrize("on, expect", [
    (True, ["dockerd", "--debug"]),
    (False, ["dockerd", "--debug", "--userland-proxy=false"]),
])
def test_no_dockerd_with_a_record_starts_it_from_the_record(monkeypatch, capsys, on, expect):
    """The switched dockerd died (or its start failed): `lab up` starts it
    from the arguments kept then, not a bare dockerd."""
    engine = _Engine(monkeypatch, ["dockerd", "--debug", "--userland-proxy=false"])
    engine.running = False
    state = {"dockerd": {"argv_before": ["dockerd", "--debug"], "userland_proxy": False, "pid": 5}}
    assert ld.switch(state, on, save=engine.save)
    assert engine.restarts == [expect]
    assert ("dockerd" in state) is (not on)
    assert engine.events[-1] == ("save", state)
    assert "no dockerd runs; starting it" in capsys.readouterr().err


def test_no_dockerd_without_a_record_is_an_error(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd"])
    engine.running = False
    with pytest.raises(ld.NoDockerd, match="no dockerd process runs"):
        ld.switch({}, True)
    assert engine.events == []


def test_switch_on_leaves_an_engine_the_lab_did_not_switch(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd", "--userland-proxy=false"])
    with pytest.raises(LabError, match="by its own configuration"):
        ld.switch({}, True)
    assert engine.restarts == []


def test_switch_on_when_someone_restarted_it_in_the_default_mode(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd"])
    state = {"dockerd": {"argv_before": ["dockerd"], "userland_proxy": False, "pid": 5}}
    assert not ld.switch(state, True)
    assert engine.restarts == [] and "dockerd" not in state


def test_switch_with_daemon_json_deciding(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd"], config=True)
    with pytest.raises(LabError, match="does not override"):
        ld.switch({}, False)
    assert engine.restarts == []


def test_remote_engine_is_refused(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    with pytest.raises(LabError, match="only this machine's dockerd"):
        ld.current()


# --------------------------------------------------------------------------- whose engine


def test_pid_file_honours_the_scripts_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TRACER_DOCKERD_PIDFILE", raising=False)
    assert ld.pid_file() == Path("/run/tracer/dockerd.pid")
    monkeypatch.setenv("TRACER_DOCKERD_PIDFILE", str(tmp_path / "d.pid"))
    assert ld.pid_file() == tmp_path / "d.pid"


def test_started_by_tracer_reads_the_pid_file(monkeypatch, tmp_path):
    f = tmp_path / "d.pid"
    monkeypatch.setenv("TRACER_DOCKERD_PIDFILE", str(f))
    assert not ld.started_by_tracer(4242), "no pid file: not ours"
    f.write_text("4242\n")
    assert ld.started_by_tracer(4242)
    assert not ld.started_by_tracer(4243), "a stale pid file names another process"
    f.write_text("garbage")
    assert not ld.started_by_tracer(4242)


def test_the_scripts_and_the_lab_use_the_same_pid_file():
    text = (Path(__file__).parents[2] / "scripts" / "lib-dockerd.sh").read_text()
    assert f"TRACER_DOCKERD_PIDFILE=${{TRACER_DOCKERD_PIDFILE:-{ld.DEFAULT_PID_FILE}}}" in text


# --------------------------------------------------------------------------- containers a restart stops


def _ctr(name, policy, running=True):
    return {"Name": "/" + name, "State": {"Running": running}, "HostConfig": {"RestartPolicy": {"Name": policy}}}


def test_stopped_for_good_lists_running_containers_no_policy_restarts():
    containers = [_ctr("db", ""), _ctr("web", "always"), _ctr("lab", "unless-stopped"), _ctr("job", "on-failure"),
                  _ctr("cache", "no"), _ctr("old", "", running=False), {"Id": "0123456789abcdef", "State": {"Running": True}}]
    assert ld.stopped_for_good(containers, live_restore=False) == ["0123456789ab", "cache", "db", "job"]
    assert ld.stopped_for_good(containers, live_restore=True) == [], "live-restore keeps them running"


def test_lab_up_writes_the_record_to_disk_before_dockerd_stops(monkeypatch, tmp_path):
    """`lab up --no-userland-proxy` killed while dockerd restarts (no
    `finally` runs on SIGKILL): the state file already says what to restore."""
    from tracer import lab

    engine = _Engine(monkeypatch, ["dockerd", "--debug"])
    monkeypatch.setattr(lab, "_require_root", lambda what: None)
    monkeypatch.setattr(lab, "RUN_DIR", tmp_path)
    monkeypatch.setattr(lab, "LOCK_FILE", tmp_path / "lab.lock")
    monkeypatch.setattr(lab, "STATE_FILE", tmp_path / "lab.json")
    on_disk = []

    def killed(pid):
        on_disk.append(json.loads((tmp_path / "lab.json").read_text()))
        raise KeyboardInterrupt  # the process ends here

    monkeypatch.setattr(ld, "stop", killed)
    with pytest.raises(KeyboardInterrupt):
        lab.up(userland_proxy=False)
    assert on_disk == [{"dockerd": {"argv_before": ["dockerd", "--debug"], "userland_proxy": False}}]
    assert engine.restarts == []


def test_an_engine_a_service_manager_runs_is_not_restartable(monkeypatch, tmp_path):
    """systemd's docker.service is refused; an engine with no service unit
    (started by hand or by an init script, as on these machines) or the
    one the scripts' pid file names is restartable."""
    cgroups = {1: "0::/system.slice/docker.service\n", 2: "0::/\n", 3: "0::/user.slice/session-2.scope\n"}
    real = Path.read_text

    def read_text(self, *a, **k):
        parts = self.parts
        if len(parts) == 4 and parts[1] == "proc" and parts[3] == "cgroup":
            return cgroups[int(parts[2])]
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setenv("TRACER_DOCKERD_PIDFILE", str(tmp_path / "none.pid"))
    assert ld.service_unit(1) == "docker.service" and not ld.restartable(1)
    assert ld.service_unit(2) is None and ld.restartable(2)
    assert ld.restartable(3)
    (tmp_path / "none.pid").write_text("1\n")
    assert ld.restartable(1), "the pid file names it: tracer's scripts started it"
