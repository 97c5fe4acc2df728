"""The lab's Docker engine mode: docker-proxy (``--userland-proxy``, Docker's
default) or hairpin NAT (``--userland-proxy=false``).

With the userland proxy on, a published port reached from the host's
loopback or from a container goes through docker-proxy; with it off, Docker
installs hairpin NAT instead (its DNAT rule also takes traffic from
docker0, a MASQUERADE for a container reaching itself, hairpin_mode on the
bridge ports). Switching means restarting dockerd with other arguments:
``lab up --no-userland-proxy`` does it and records dockerd's arguments from
before in the lab's state, so ``lab up`` (and ``lab down``) restart it with
exactly those again; scripts/setup.sh, when no dockerd runs, starts it as
that record says (print_recorded_argv). An engine configured without the proxy by its owner
(not by the lab) is left alone, and so is one the scripts did not start
(systemd's, say: it has to be reconfigured and restarted by its owner).

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
from typing import Callable

from tracer import own_env, procfs
from tracer.lab_base import LabError, RUN_DIR, STATE_FILE, _log


class NoDockerd(LabError):
    """No dockerd process runs at all."""

FLAG = "--userland-proxy"
DAEMON_JSON = Path("/etc/docker/daemon.json")
PID_FILES = (Path("/var/run/docker.pid"), Path("/run/docker.pid"))
# as scripts/lib-dockerd.sh starts it (TRACER_DOCKERD_PIDFILE overrides the pid file there and here)
LOG_FILE = Path("/var/log/tracer-dockerd.log")
DEFAULT_PID_FILE = RUN_DIR / "dockerd.pid"
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


def pid_file() -> Path:
    """Where scripts/lib-dockerd.sh (and the lab after a restart) keeps the
    pid of the dockerd it started."""
    return Path(os.environ.get("TRACER_DOCKERD_PIDFILE") or DEFAULT_PID_FILE)


def pid_file_names(text: str | None, pid: int) -> bool:
    """Whether a pid file's text names ``pid``."""
    try:
        return int((text or "").split()[0]) == pid
    except (ValueError, IndexError):
        return False


def stopped_for_good(containers: list[dict], live_restore: bool) -> list[str]:
    """The running containers (docker inspect's dicts) a dockerd restart
    stops and does not start again: stopping dockerd stops every container
    (unless live-restore keeps them), and only a restart policy of
    ``always`` or ``unless-stopped`` brings one back."""
    if live_restore:
        return []
    names = []
    for c in containers:
        policy = ((c.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        if (c.get("State") or {}).get("Running") and policy not in ("always", "unless-stopped"):
            names.append((c.get("Name") or c.get("Id", "")[:12]).lstrip("/"))
    return sorted(names)


# --------------------------------------------------------------------------- the running engine


def _dockerd_processes() -> list[int]:
    return procfs.pids_named("dockerd")


def dockerd_pid() -> int:
    """The pid of the engine dockerd: its pid file, else the one dockerd process."""
    for f in PID_FILES:
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        if procfs.comm(pid) == "dockerd":
            return pid
    found = _dockerd_processes()
    if len(found) == 1:
        return found[0]
    if not found:
        raise NoDockerd("no dockerd process runs; run `sudo scripts/setup.sh` to start one")
    raise LabError(f"several dockerd processes ({', '.join(map(str, found))}) and no pid file names one")


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
    argv = procfs.cmdline(pid)
    if not argv:
        raise LabError(f"dockerd pid {pid} exited while it was being read")
    return pid, argv, engine_value(argv, read_config())


def started_by_tracer(pid: int) -> bool:
    """Whether dockerd ``pid`` is the one scripts/lib-dockerd.sh or the lab
    started (its pid file names it). Only such an engine is restarted: one a
    service manager runs may need what only it provides (systemd's socket
    activation for ``-H fd://``, its environment and limits) and would race
    our copy with its own restart."""
    try:
        text = pid_file().read_text()
    except OSError:
        return False
    return pid_file_names(text, pid)


def service_unit(pid: int) -> str | None:
    """The service manager's unit that runs process ``pid`` (systemd's
    ``docker.service``, from its cgroup path), or None when none does."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        unit = line.rsplit("/", 1)[-1]
        if unit.endswith(".service"):
            return unit
    return None


def restartable(pid: int) -> bool:
    """Whether the lab may restart dockerd ``pid``: one tracer's scripts
    started (the pid file), or one no service manager runs (started by
    hand or by an init script with nothing to restart it behind our back,
    as docker.io's package may do on a machine without systemd)."""
    return started_by_tracer(pid) or service_unit(pid) is None


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


def warn_stopped_containers() -> None:
    """One line on stderr naming the running containers the restart stops
    for good (no restart policy brings them back); nothing when there are
    none or the engine cannot be asked."""
    from tracer import dockerd

    try:
        dc = dockerd.client(timeout=10)
        try:
            live_restore = bool(dc.info().get("LiveRestoreEnabled"))
            names = stopped_for_good([c.attrs for c in dc.containers.list()], live_restore)
        finally:
            dc.close()
    except Exception:  # a warning only: never a reason not to switch
        return
    if names:
        _log(f"warning: restarting dockerd stops {len(names)} running container(s) without a restart policy "
             f"that brings them back: {', '.join(names)} (`docker start` them afterwards)")


def stop(pid: int) -> None:
    """Stop dockerd ``pid`` (SIGTERM: it stops its containers and removes its
    iptables rules as on any shutdown) and wait until it is gone."""
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


def start(argv: list[str]) -> int:
    """Start dockerd ``argv`` in its own session as scripts/lib-dockerd.sh
    does, wait until it answers, note its pid in its pid file; its pid."""
    from tracer import dockerd

    _log(f"starting {' '.join(argv)} (log {LOG_FILE})")
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG_FILE, "ab") as log, open(os.devnull, "rb") as null:
        try:
            # setsid --fork: dockerd in a session of its own whose parent is
            # init, not this process (which would leave a zombie when it stops)
            # without the variables tracer set for itself: dockerd outlives us
            subprocess.run(["setsid", "--fork", *argv], stdin=null, stdout=log, stderr=log, close_fds=True,
                           check=True, timeout=10, env=own_env.child_env())
        except (OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"cannot start {argv[0]}: {exc}") from None
    began = time.monotonic()
    while True:
        try:
            dockerd.client(timeout=5).close()
            break
        except dockerd.DockerUnavailable:
            waited = time.monotonic() - began
            if waited > 3 and not _dockerd_processes():  # it exited (bad arguments, say): no use waiting
                raise LabError(f"dockerd exited right after its start; see {LOG_FILE}") from None
            if waited > START_TIMEOUT:
                raise LabError(f"dockerd did not answer within {START_TIMEOUT:.0f}s of its start; see {LOG_FILE}") from None
            time.sleep(0.5)
    new_pid = dockerd_pid()
    f = pid_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(f"{new_pid}\n")
    return new_pid


def restart(pid: int, argv: list[str]) -> int:
    """Stop dockerd ``pid``, start ``argv``; the new pid."""
    stop(pid)
    return start(argv)


def _not_ours(pid: int, what: str) -> LabError:
    return LabError(f"dockerd (pid {pid}) runs under a service manager ({service_unit(pid) or 'systemd?'}), "
                    "so the lab does not restart it; "
                    f"{what} in {DAEMON_JSON} and restart it yourself")


def switch(state: dict, on: bool, save: Callable[[dict], None] = lambda state: None) -> bool:
    """Make the engine run with the userland proxy ``on`` (restarting dockerd
    when it does not), keeping in ``state`` what restoring needs and handing
    it to ``save`` before any restart (a `lab up` killed during the restart
    must not lose it); True when dockerd was (re)started. Turning it on again
    is only done for an engine the lab switched off (``state['dockerd']``);
    one configured off by its owner is an error, and so is one the scripts
    did not start."""
    switched = state.get("dockerd")
    try:
        pid, argv, now = current()
    except NoDockerd:
        if not switched:
            raise
        return _start_from_record(state, on, save)
    if now == on:
        if on and switched:
            state.pop("dockerd", None)  # someone restarted it in the default mode meanwhile
        return False
    if on:
        if not switched:
            raise LabError("dockerd runs with the userland proxy off by its own configuration "
                           f"({' '.join(argv[1:]) or DAEMON_JSON}); the lab leaves it so")
        if not restartable(pid):
            raise _not_ours(pid, 'remove "userland-proxy": false (or the flag)')
        warn_stopped_containers()
        restart(pid, switched.get("argv_before") or args_for(argv, True, read_config()))
        state.pop("dockerd", None)
        return True
    new_argv = args_for(argv, False, read_config())
    if not restartable(pid):
        raise _not_ours(pid, 'set "userland-proxy": false')
    # Kept before the restart (a restart that fails half way, or a `lab up`
    # killed during it, still has to be undone): the arguments from before
    # the first switch, given back as they were.
    before = (switched or {}).get("argv_before") or argv
    state["dockerd"] = {"argv_before": before, "userland_proxy": False}
    save(state)
    warn_stopped_containers()
    stop(pid)
    try:
        state["dockerd"]["pid"] = start(new_argv)
    except LabError as exc:
        if _dockerd_processes():
            raise  # one runs, if slowly: the record stays, `lab up` restores it
        _log("dockerd did not start without the userland proxy; starting it again with its arguments from before")
        start(before)
        state.pop("dockerd", None)
        raise LabError(f"{exc}; dockerd runs again with its arguments from before") from None
    return True


def _start_from_record(state: dict, on: bool, save: Callable[[dict], None]) -> bool:
    """No dockerd runs, but the lab had switched it (its restart failed, or
    was cut short): start it from the arguments kept then, not bare."""
    try:
        recorded_argv(state, None)  # the record's shape, before anything of it is used
    except ValueError as exc:
        raise NoDockerd(f"no dockerd process runs, and the lab's record of its arguments ({STATE_FILE}) "
                        f"cannot be used: {exc}; run `sudo scripts/setup.sh` to start one") from None
    switched = state["dockerd"]
    before = switched.get("argv_before")
    if not before:
        raise NoDockerd("no dockerd process runs, and the lab's record of its arguments is empty; "
                        "run `sudo scripts/setup.sh` to start one")
    argv = before if on else recorded_argv(state, read_config())
    _log(f"no dockerd runs; starting it {'with its arguments from before the lab switched it' if on else 'without the userland proxy'}"
         f" (from {STATE_FILE})")
    pid = start(argv)
    if on:
        state.pop("dockerd", None)
    else:
        switched["pid"] = pid
    save(state)
    return True


def recorded_argv(state: dict, config: bool | None) -> list[str] | None:
    """The arguments the lab's record says dockerd runs with: with the lab
    having switched the userland proxy off (``state['dockerd']``), its
    arguments from before without the proxy; None when the lab switched
    nothing (or kept no arguments). A record of another shape (hand-edited,
    or from another version) is a ValueError: its arguments cannot be told."""
    if "dockerd" not in state:
        return None
    switched = state["dockerd"]
    if not isinstance(switched, dict):
        raise ValueError(f'"dockerd" is {type(switched).__name__}, not an object')
    before = switched.get("argv_before")
    if before is None:
        return None
    if not isinstance(before, list) or not all(isinstance(a, str) for a in before):
        raise ValueError('"dockerd": "argv_before" is not a list of strings')
    return args_for(before, False, config) if before else None


def print_recorded_argv(state_file: str | None = None) -> int:
    """For scripts/lib-dockerd.sh, which starts dockerd when none runs:
    recorded_argv of the lab's state (``state_file``, else the lab's own),
    each argument ended by a NUL; nothing when the lab switched nothing. A
    record it cannot use is one line on stderr and exit status 1."""
    import sys

    path = Path(state_file) if state_file else STATE_FILE
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        argv = recorded_argv(state, read_config())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, TypeError, LabError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    if argv:
        sys.stdout.write("".join(f"{a}\0" for a in argv))
    return 0
