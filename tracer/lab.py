"""The lab: a small, fully offline Docker setup whose packets tracer follows.

    client netns ``tracer-client``            host                      container ``tracer-lab-web``
    trc-client 198.18.0.2/30  <-- veth -->  trc-host 198.18.0.1/30
               fd00:198:18::2/64                 fd00:198:18::1/64 (docker-proxy listens on [::]:8000)
                                            :8000 --DNAT--> docker0 --> veth --> eth0 :8080 (busybox httpd)
    :9000 busybox httpd  <--MASQUERADE (src 198.18.0.1)-- docker0 <-- veth <-- eth0 (wget)

* The image ``tracer-lab:latest`` is made without a registry: a rootfs tar built
  from host binaries (static busybox and its applets, iperf3 with the shared
  libraries ``ldd`` lists) is fed to ``docker import``. A hash of the recipe is
  kept as an image label; the image is rebuilt only when that hash changes.
* The client netns' only non-connected route is its default via the host, so
  its connections to 198.18.0.1:8000 take PREROUTING DNAT -> FORWARD -> docker0,
  the path tracer exists to show (a connection from the host itself would go
  through OUTPUT or docker-proxy instead).
* The server in the client netns (port 9000) gives the container somewhere to
  connect to, so the MASQUERADE path has traffic too.

The lab adds no iptables rules of its own: Docker's port publishing and
MASQUERADE do all the NAT. ``up`` is idempotent and verifies reachability end
to end before it reports success; ``down`` removes everything it made (the
image stays as a cache).

``up --no-userland-proxy`` restarts dockerd with ``--userland-proxy=false``
(Docker's hairpin NAT instead of docker-proxy); a plain ``up`` or ``down``
gives it back its arguments from before (lab_dockerd).

This module holds ``up``, ``status``, ``down`` and the state file; the parts
are lab_base (names, addresses, shell helpers), lab_image, lab_netns (client
netns, veth, server), lab_container (container, end-to-end check) and
lab_dockerd (the engine's mode).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from tracer import lab_dockerd
from tracer.errors import TracerError
from tracer.lab_base import (BRIDGE, CLIENT_ADDRESS, CLIENT_ADDRESS6, CLIENT_IFACE, CONTAINER, CONTAINER_PORT,
                             HOST_ADDRESS, HOST_ADDRESS6, HOST_IFACE, IMAGE, IPERF_PORT, LAB_DIR, LOCK_FILE, LabError,
                             NETNS, PORT, PREFIX_LEN, RUN_DIR, SERVER_PORT, SERVER_ROOT, STATE_FILE, _ip_json, _log,
                             _require_root)
from tracer.lab_container import _container_ip, _container_veth, _ensure_container, _get_container, _verify
from tracer.lab_image import ensure_image
from tracer.lab_netns import (_create_netns, _delete_netns, _ensure_ipv6, _ipv6_ready, _kill_server, _netns_exists,
                              _netns_inode, _netns_problems, _server_alive, _start_server, _sysctl_write,
                              _tune_client_netns)
from tracer.proxies import find_proxies

# --------------------------------------------------------------------------- state


def _read_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(state: dict) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(STATE_FILE)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise up/down between processes (tests and engineers share the lab)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- public API


def up(userland_proxy: bool | None = None) -> dict:
    """Bring the lab up (idempotent), verify it end to end, return its status.

    ``userland_proxy``: False restarts dockerd with ``--userland-proxy=false``
    (hairpin NAT) unless it already runs so; True restarts it with the
    arguments it had before, if the lab switched it; None (plain ``lab up``)
    is True when the lab switched it, and leaves an engine the lab did not
    touch as it is (lab_dockerd)."""
    _require_root("up")
    from tracer import dockerd

    with _locked():
        state = _read_state()
        want = userland_proxy
        if want is None and state.get("dockerd"):
            want = True  # plain `lab up` restores what `lab up --no-userland-proxy` changed
        if want is not None:
            try:
                lab_dockerd.switch(state, want, save=_write_state)
            finally:
                _write_state(state)  # what restoring needs, even when the restart failed half way
        dc = dockerd.client()
        image_id = ensure_image(dc)
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
            _log("enabling net.ipv4.ip_forward")
            _sysctl_write("/proc/sys/net/ipv4/ip_forward", "1")
        c = _ensure_container(dc, image_id)

        problems = _netns_problems()
        if problems:
            if _netns_exists() or _ip_json("link", "show", "dev", HOST_IFACE):
                _log(f"client netns needs rebuilding ({'; '.join(problems)})")
                _kill_server(state)
                _delete_netns()
            _log(f"creating netns {NETNS}: {CLIENT_IFACE} {CLIENT_ADDRESS}/{PREFIX_LEN} <-> {HOST_IFACE} {HOST_ADDRESS}/{PREFIX_LEN}")
            _create_netns()
        _tune_client_netns()
        _ensure_ipv6()
        if not _server_alive(state):
            _kill_server(state)
            _log(f"starting server {CLIENT_ADDRESS}:{SERVER_PORT} in netns {NETNS}")
            state.update(_start_server())
        state.update({"container_id": c.id, "image_id": image_id, "netns": NETNS})
        _write_state(state)
        _verify(c)
        state["verified_at"] = time.time()
        _write_state(state)
    return status(dc)


def status(dc: Any = None) -> dict:
    """Describe the lab (without changing it). ``up`` is True when every part is in place."""
    _require_root("status")
    from tracer import dockerd

    problems: list[str] = []
    state = _read_state()
    c = None
    try:
        dc = dc or dockerd.client(timeout=10)
        c = _get_container(dc)
    except TracerError as exc:
        problems.append(str(exc))
    if c is None and not problems:
        problems.append(f"container {CONTAINER} missing")
    elif c is not None and c.status != "running":
        problems.append(f"container {CONTAINER} is {c.status}")
    problems += _netns_problems()
    server_alive = _server_alive(state)
    if not server_alive:
        problems.append(f"server {CLIENT_ADDRESS}:{SERVER_PORT} in {NETNS} not running")
    running = c is not None and c.status == "running"
    host_link = _ip_json("link", "show", "dev", HOST_IFACE)
    bridge = _ip_json("link", "show", "dev", BRIDGE)
    ipv6 = _ipv6_ready()
    userland_proxy = _engine_userland_proxy()
    if running:
        proxied = any(p.host_port == PORT for p in find_proxies())
        if userland_proxy is None:  # dockerd not readable here (another pid namespace, say): what it does
            userland_proxy = proxied
        elif proxied != userland_proxy:
            problems.append(f"dockerd runs with the userland proxy {'on' if userland_proxy else 'off'} but "
                            f"docker-proxy for :{PORT} is {'missing' if userland_proxy else 'running'}")
    return {
        "up": not problems,
        "netns": NETNS,
        "host_address": HOST_ADDRESS,
        "client_address": CLIENT_ADDRESS,
        "prefix_len": PREFIX_LEN,
        # IPv6 is reported, not required: a lab brought up by an older version
        # has none until the next `lab up` adds it.
        "host_address6": HOST_ADDRESS6 if ipv6 else None,
        "client_address6": CLIENT_ADDRESS6 if ipv6 else None,
        "port": PORT,
        "url": f"http://{HOST_ADDRESS}:{PORT}/",
        "container": CONTAINER,
        "container_id": c.id if c is not None else None,
        "container_port": CONTAINER_PORT,
        "container_ip": _container_ip(c) if running else None,
        "container_pid": (c.attrs.get("State") or {}).get("Pid") or None if running else None,
        "container_veth": _container_veth(c) if running else None,
        "image": IMAGE,
        "bridge": BRIDGE,
        "bridge_ifindex": bridge[0]["ifindex"] if bridge else None,
        "server_address": CLIENT_ADDRESS,
        "server_port": SERVER_PORT,
        "server_pid": state.get("server_pid") if server_alive else None,
        "iperf_port": IPERF_PORT,
        "host_iface": HOST_IFACE,
        "host_ifindex": host_link[0]["ifindex"] if host_link else None,
        "client_iface": CLIENT_IFACE,
        "state_file": str(STATE_FILE),
        # The engine's mode: docker-proxy (true, Docker's default) or hairpin
        # NAT (false); null when dockerd could not be read. `dockerd_switched`:
        # `lab up --no-userland-proxy` restarted it so, and `lab up` restores it.
        "userland_proxy": userland_proxy,
        "dockerd_switched": bool(state.get("dockerd")),
        "problems": problems,
    }


def _engine_userland_proxy() -> bool | None:
    try:
        return lab_dockerd.current()[2]
    except LabError:
        return None


def down() -> list[str]:
    """Remove everything ``up`` made (the image stays as a build cache). Idempotent.
    Returns what was removed."""
    _require_root("down")
    from tracer import dockerd

    removed: list[str] = []
    engine_error: TracerError | None = None
    restore_error: LabError | None = None
    with _locked():
        state = _read_state()
        if state.get("dockerd"):  # the lab restarted dockerd without the proxy: give it back as it was
            try:
                lab_dockerd.switch(state, True, save=_write_state)
                removed.append("dockerd's --userland-proxy=false (restarted with its arguments from before)")
            except LabError as exc:
                restore_error = exc
        try:
            dc = dockerd.client(timeout=30)
            # by name only: containers others run from the lab image inherit its labels
            for c in dc.containers.list(all=True, filters={"name": "tracer-lab-"}):
                if not c.name.startswith("tracer-lab-"):  # the name filter matches substrings
                    continue
                c.remove(force=True)
                removed.append(f"container {c.name}")
        except TracerError as exc:
            engine_error = exc
        pid = _kill_server(state)
        if pid:
            removed.append(f"server pid {pid}")
        ns_ino = _netns_inode(f"/run/netns/{NETNS}")
        removed += _delete_netns()
        if ns_ino is not None:
            stragglers = [p for p in _pids() if _netns_inode(f"/proc/{p}/ns/net") == ns_ino]
            if stragglers:
                _log(f"processes not started by the lab still run in the deleted netns: {stragglers}")
        if restore_error:
            _write_state({"dockerd": state["dockerd"]})  # kept: what a later `lab up`/`down` restores
        elif STATE_FILE.exists():
            STATE_FILE.unlink()
            removed.append(str(STATE_FILE))
        with contextlib.suppress(FileNotFoundError):
            (SERVER_ROOT / "index.html").unlink()
        for d in (SERVER_ROOT, LAB_DIR):
            with contextlib.suppress(OSError):
                d.rmdir()
    if restore_error:
        raise LabError(f"lab removed, but dockerd was not restored to its arguments from before: {restore_error}")
    if engine_error:
        raise LabError(f"lab partly removed; containers could not be: {engine_error}")
    return removed


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
