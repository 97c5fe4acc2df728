"""tracer/own_env.py: variables tracer sets for itself are kept out of the
children that outlive it (the lab's dockerd and server); a user's own
settings of the same names stay, in tracer and in those children."""

import os
import subprocess
import sys

from tracer import allocator, own_env


def test_a_key_tracer_sets_is_dropped_from_a_long_lived_childs_env():
    env, own = {"PATH": "/bin"}, set()
    assert own_env.set_default("OPENBLAS_NUM_THREADS", "1", env, own)
    assert env == {"PATH": "/bin", "OPENBLAS_NUM_THREADS": "1", own_env.MARK: "OPENBLAS_NUM_THREADS=1"}
    assert own_env.child_env(env, own) == {"PATH": "/bin"}


def test_a_tracer_started_by_a_tracer_process_still_knows_the_keys_as_tracers():
    parent_env, parent_own = {"PATH": "/bin"}, set()
    own_env.set_default("OPENBLAS_NUM_THREADS", "1", parent_env, parent_own)
    own_env.set_default("MIMALLOC_PURGE_DELAY", "-1", parent_env, parent_own)
    env, own = dict(parent_env), set()  # what a child tracer inherits
    assert not own_env.set_default("OPENBLAS_NUM_THREADS", "1", env, own)
    assert own == {"OPENBLAS_NUM_THREADS"}
    assert own_env.child_env(env, own) == {"PATH": "/bin"}, "neither key nor the mark reaches dockerd"
    env, own = dict(parent_env, OPENBLAS_NUM_THREADS="4"), set()  # the user's, for this child
    assert not own_env.set_default("OPENBLAS_NUM_THREADS", "1", env, own) and own == set()
    assert own_env.child_env(env, own) == {"PATH": "/bin", "OPENBLAS_NUM_THREADS": "4"}


def test_a_key_the_user_set_stays_and_is_passed_on():
    env, own = {"OPENBLAS_NUM_THREADS": "4"}, set()
    assert not own_env.set_default("OPENBLAS_NUM_THREADS", "1", env, own)
    assert env["OPENBLAS_NUM_THREADS"] == "4" and own == set()
    assert own_env.child_env(env, own) == {"OPENBLAS_NUM_THREADS": "4"}


def test_arrow_memory_settings_are_noted_as_tracers_own():
    env, own = {}, set()
    allocator.keep_arrow_memory(env, own)
    assert env == {"ARROW_DEFAULT_MEMORY_POOL": "system", "MIMALLOC_PURGE_DELAY": "-1",
                   own_env.MARK: "ARROW_DEFAULT_MEMORY_POOL=system,MIMALLOC_PURGE_DELAY=-1"}
    assert own == {"ARROW_DEFAULT_MEMORY_POOL", "MIMALLOC_PURGE_DELAY"}
    env, own = {"MIMALLOC_PURGE_DELAY": "10", "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}, set()
    allocator.keep_arrow_memory(env, own)
    assert env == {"MIMALLOC_PURGE_DELAY": "10", "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"} and own == set()


def test_the_header_tree_bcc_is_pointed_at_is_tracers_own(monkeypatch):
    """BCC_KERNEL_SOURCE, set before the first compile, does not reach the
    lab's dockerd or server; a user's own setting does, and a set but empty
    one (no tree for BCC) is replaced."""
    from pathlib import Path

    from tracer.kernel import headers

    tree = headers.HeaderSource(Path("/var/cache/tracer/kheaders/x"), "distro:x")
    monkeypatch.setattr(headers, "header_source", lambda: tree)
    for start in ({"PATH": "/bin"}, {"PATH": "/bin", "BCC_KERNEL_SOURCE": ""}):
        env, own = dict(start), set()
        assert headers.ensure_bcc_headers(env, own) == tree
        assert env["BCC_KERNEL_SOURCE"] == str(tree.path) and own == {"BCC_KERNEL_SOURCE"}
        assert own_env.child_env(env, own) == {"PATH": "/bin"}
    mine = headers.HeaderSource(Path("/mine"), "env")
    monkeypatch.setattr(headers, "header_source", lambda: mine)
    env, own = {"BCC_KERNEL_SOURCE": "/mine"}, set()
    headers.ensure_bcc_headers(env, own)
    assert env == {"BCC_KERNEL_SOURCE": "/mine"} and own_env.child_env(env, own) == env


_PROBE = r"""
import os, sys
sys.argv = ["tracer", "record"]
import tracer.cli
from tracer import own_env
print(os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("MIMALLOC_PURGE_DELAY"),
      "OPENBLAS_NUM_THREADS" in own_env.child_env(), "MIMALLOC_PURGE_DELAY" in own_env.child_env())
"""


def _probe(**extra) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MIMALLOC_PURGE_DELAY")}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                          env={**env, **extra})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_live_command_sets_both_for_itself_and_not_for_long_lived_children():
    assert _probe() == "1 -1 False False"


def test_what_the_user_exported_reaches_the_children():
    assert _probe(OPENBLAS_NUM_THREADS="2", MIMALLOC_PURGE_DELAY="5") == "2 5 True True"


def test_the_lab_starts_dockerd_without_tracers_own_variables(monkeypatch, tmp_path):
    import pytest

    from tracer import lab_dockerd
    from tracer.lab_base import LabError

    monkeypatch.setattr(lab_dockerd, "LOG_FILE", tmp_path / "dockerd.log")
    monkeypatch.setattr(own_env, "OWN", {"TRACER_TEST_OWN"})
    monkeypatch.setenv("TRACER_TEST_OWN", "1")
    monkeypatch.setenv("TRACER_TEST_USERS", "2")
    seen = {}

    def run(argv, **kw):  # the start itself is not wanted here: only what it would be given
        seen.update(argv=argv, env=kw.get("env"))
        raise OSError("not started in a unit test")

    monkeypatch.setattr(lab_dockerd.subprocess, "run", run)
    with pytest.raises(LabError):
        lab_dockerd.start(["dockerd"])
    assert seen["argv"][-1] == "dockerd"
    assert seen["env"] is not None and "TRACER_TEST_OWN" not in seen["env"] and seen["env"]["TRACER_TEST_USERS"] == "2"
