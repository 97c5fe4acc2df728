"""The lab's dockerd mode switch (tracer/lab_dockerd.py): the userland-proxy
flag as dockerd parses it, daemon.json, and the arguments for each mode.
Pure logic, no root; the restart itself is exercised by
tests/e2e/test_lab.py's hairpin test."""

from __future__ import annotations

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
    """dockerd as switch() sees it: current() and restart() replaced."""

    def __init__(self, monkeypatch, argv, config=None):
        self.argv, self.config, self.restarts = list(argv), config, []
        monkeypatch.setattr(ld, "current", lambda: (100 + len(self.restarts), self.argv,
                                                    ld.engine_value(self.argv, self.config)))
        monkeypatch.setattr(ld, "read_config", lambda: self.config)
        monkeypatch.setattr(ld, "restart", self._restart)

    def _restart(self, pid, argv):
        self.restarts.append(list(argv))
        self.argv = list(argv)
        return 200 + len(self.restarts)


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


def test_switch_off_keeps_what_restoring_needs_when_the_restart_fails(monkeypatch):
    _Engine(monkeypatch, ["dockerd"])

    def fails(pid, argv):
        raise LabError("dockerd exited with status 1 at start")

    monkeypatch.setattr(ld, "restart", fails)
    state: dict = {}
    with pytest.raises(LabError):
        ld.switch(state, False)
    assert state["dockerd"]["argv_before"] == ["dockerd"]


def test_switch_with_daemon_json_deciding(monkeypatch):
    engine = _Engine(monkeypatch, ["dockerd"], config=True)
    with pytest.raises(LabError, match="does not override"):
        ld.switch({}, False)
    assert engine.restarts == []


def test_remote_engine_is_refused(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    with pytest.raises(LabError, match="only this machine's dockerd"):
        ld.current()
