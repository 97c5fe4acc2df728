"""The lab's Docker engine mode: docker-proxy (``--userland-proxy``, Docker's
default) or hairpin NAT (``--userland-proxy=false``).

With the userland proxy on, a published port reached from the host's
loopback or from a container goes through docker-proxy; with it off, Docker
installs hairpin NAT instead (its DNAT rule also takes traffic from
docker0, a MASQUERADE for a container reaching itself, hairpin_mode on the
bridge ports). Switching means restarting dockerd with other arguments:
``lab up --no-userland-proxy`` does it and records dockerd's arguments from
before in the lab's state, so ``lab up`` (and ``lab down``) restart it with
exactly those again. An engine configured without the proxy by its owner
(not by the lab) is left alone.

Pure parts (the flag's parsing, the arguments for a mode) are separate from
the restart so they are tested without root.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tracer.lab_base import LabError, RUN_DIR, _log

FLAG = "--userland-proxy"
DAEMON_JSON = Path("/etc/docker/daemon.json")
PID_FILES = (Path("/var/run/docker.pid"), Path("/run/docker.pid"))
# as scripts/lib-dockerd.sh starts it
LOG_FILE = Path("/var/log/tracer-dockerd.log")
OUR_PID_FILE = RUN_DIR / "dockerd.pid"
STOP_TIMEOUT = 60.0
START_TIMEOUT = 60.0

# Go's strconv.ParseBool, which dockerd's flag parser uses
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def flag_value(argv: list[str]) -> bool | None:
    """The userland proxy as dockerd's arguments set it: True, False, or
    None when they do not say (the last flag wins, as in Go's flag parser).
    ``--userland-proxy false`` (a separate word) is not a bool flag's value:
    dockerd reads it as a stray argument, so it is not taken as one here."""
    value = None
    for arg in argv[1:]:
        if arg == FLAG:
            value = True
        elif arg.startswith(FLAG + "="):
            text = arg.split("=", 1)[1]
            if text in _GO_TRUE:
                value = True
            elif text in _GO_FALSE:
                value = False
            else:
                raise LabError(f"dockerd has {arg!r}, which is not a boolean")
    return value


def config_value(text: str | None) -> bool | None:
    """``userland-proxy`` in daemon.json's text, None when absent (or no file)."""
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise LabError(f"{DAEMON_JSON} is not JSON ({exc})") from None
    value = config.get("userland-proxy") if isinstance(config, dict) else None
    if value is not None and not isinstance(value, bool):
        raise LabError(f"{DAEMON_JSON}: userland-proxy is {value!r}, not true or false")
    return value


def engine_value(argv: list[str], config: bool | None) -> bool:
    """Whether dockerd runs the userland proxy (its default: on)."""
    flag = flag_value(argv)
    if flag is not None:
        return flag
    return True if config is None else config


def args_for(argv: list[str], on: bool, config: bool | None) -> list[str]:
    """dockerd's arguments with the userland proxy ``on`` or off: any flag of
    it removed, ``--userland-proxy=false`` added for off. dockerd refuses a
    flag that daemon.json also sets, so a mode daemon.json decides otherwise
    is an error, not an argument."""
    if config is not None:
        if config != on:
            raise LabError(f"{DAEMON_JSON} sets userland-proxy to {str(config).lower()}: the lab does not "
                           "override the engine's own configuration")
        return [a for a in argv if a != FLAG and not a.startswith(FLAG + "=")]
    kept = [a for a in argv if a != FLAG and not a.startswith(FLAG + "=")]
    return kept if on else kept + [f"{FLAG}=false"]


# --------------------------------------------------------------------------- the running engine


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def dockerd_pid() -> int:
    """The pid of the engine dockerd: its pid file, else the one dockerd process."""
    for f in PID_FILES:
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        if _comm(pid) == "dockerd":
            return pid
    found = [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(int(p)) == "dockerd"]
    if len(found) == 1:
        return found[0]
    if not found:
        raise LabError("no dockerd process runs; run `sudo scripts/setup.sh` to start one")
    raise LabError(f"several dockerd processes ({', '.join(map(str, sorted(found)))}) and no pid file names one")


def read_config() -> bool | None:
    try:
        return config_value(DAEMON_JSON.read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabError(f"cannot read {DAEMON_JSON}: {exc}") from None


def current() -> tuple[int, list[str], bool]:
    """(pid, argv, userland proxy on) of the running dockerd."""
    _local_engine_only()
    pid = dockerd_pid()
    argv = _cmdline(pid)
    if not argv:
        raise LabError(f"dockerd pid {pid} exited while it was being read")
    return pid, argv, engine_value(argv, read_config())


def _local_engine_only() -> None:
    host = os.environ.get("DOCKER_HOST", "")
    if host and host not in ("unix:///var/run/docker.sock", "unix:///run/docker.sock"):
        raise LabError(f"DOCKER_HOST is {host}: the lab restarts only this machine's dockerd")


def _start_ticks(pid: int) -> int | None:
    """The process's start time, None once it is gone (a zombie is gone:
    it only waits for its parent to read its status)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def restart(pid: int, argv: list[str]) -> int:
    """Stop dockerd ``pid`` (SIGTERM: it stops its containers and removes its
    iptables rules as on any shutdown), start ``argv`` in its own session as
    scripts/lib-dockerd.sh does, wait until it answers; the new pid."""
    from tracer import dockerd

    started = _start_ticks(pid)
    _log(f"stopping dockerd pid {pid}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        started = None
    deadline = time.monotonic() + STOP_TIMEOUT
    while started is not None and _start_ticks(pid) == started:
        if time.monotonic() > deadline:
            raise LabError(f"dockerd pid {pid} did not stop within {STOP_TIMEOUT:.0f}s after SIGTERM; see {LOG_FILE}")
        time.sleep(0.2)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # a dockerd an earlier switch in this process started (normally init's)
    _log(f"starting {' '.join(argv)} (log {LOG_FILE})")
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG_FILE, "ab") as log, open(os.devnull, "rb") as null:
        try:
            # setsid --fork: dockerd in a session of its own whose parent is
            # init, not this process (which would leave a zombie when it stops)
            subprocess.run(["setsid", "--fork", *argv], stdin=null, stdout=log, stderr=log, close_fds=True,
                           check=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"cannot start {argv[0]}: {exc}") from None
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            dockerd.client(timeout=5).close()
            break
        except dockerd.DockerUnavailable:
            if time.monotonic() > deadline:
                raise LabError(f"dockerd did not answer within {START_TIMEOUT:.0f}s of its start; see {LOG_FILE}") from None
            time.sleep(0.5)
    new_pid = dockerd_pid()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    OUR_PID_FILE.write_text(f"{new_pid}\n")
    return new_pid


def switch(state: dict, on: bool) -> bool:
    """Make the engine run with the userland proxy ``on`` (restarting dockerd
    when it does not), keeping in ``state`` what restoring needs; True when
    dockerd was restarted. Turning it on again is only done for an engine the
    lab switched off (``state['dockerd']``); one configured off by its owner
    is an error."""
    pid, argv, now = current()
    switched = state.get("dockerd")
    if now == on:
        if on and switched:
            state.pop("dockerd", None)  # someone restarted it in the default mode meanwhile
        return False
    if on:
        if not switched:
            raise LabError("dockerd runs with the userland proxy off by its own configuration "
                           f"({' '.join(argv[1:]) or DAEMON_JSON}); the lab leaves it so")
        restart(pid, switched.get("argv_before") or args_for(argv, True, read_config()))
        state.pop("dockerd", None)
        return True
    new_argv = args_for(argv, False, read_config())
    # Kept before the restart (a restart that fails half way still has to be
    # undone): the arguments from before the first switch, given back as they were.
    state["dockerd"] = {"argv_before": (switched or {}).get("argv_before") or argv, "userland_proxy": False}
    state["dockerd"]["pid"] = restart(pid, new_argv)
    return True
