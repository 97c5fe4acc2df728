"""The lab's container, ``tracer-lab-web`` (created again when its config
changes), its address and host-side veth, and the end-to-end check that
its paths (client -> DNAT -> container, container -> MASQUERADE ->
client, container -> host port -> itself) answer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from typing import Any, Callable

from tracer.errors import one_line
from tracer.lab_base import (CLIENT_ADDRESS, CONFIG_LABEL, CONTAINER, CONTAINER_CMD, CONTAINER_PORT, CONTAINER_PORTS,
                             HOST_ADDRESS, INDEX_MARKER, LABEL, LabError, NETNS, PORT, RECIPE_VERSION, SERVER_MARKER,
                             SERVER_PORT, VERIFY_TIMEOUT, _ip_json, _log, _run, busybox)

# --------------------------------------------------------------------------- container


def _container_config_digest(image_id: str) -> str:
    blob = json.dumps({"image": image_id, "cmd": CONTAINER_CMD, "ports": CONTAINER_PORTS, "v": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _get_container(dc: Any, name: str = CONTAINER) -> Any:
    from docker.errors import NotFound

    try:
        return dc.containers.get(name)
    except NotFound:
        return None


def _container_ip(c: Any) -> str | None:
    nets = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ip = (nets.get("bridge") or {}).get("IPAddress")
    return ip or None


def _ensure_container(dc: Any, image_id: str) -> Any:
    from docker.errors import APIError

    want = _container_config_digest(image_id)
    c = _get_container(dc)
    if c is not None and ((c.labels or {}).get(CONFIG_LABEL) != want or c.attrs.get("Image") != image_id):
        _log(f"container {CONTAINER} is from another recipe: recreating it")
        c.remove(force=True)
        c = None
    try:
        if c is None:
            _log(f"starting container {CONTAINER} (host :{PORT} -> :{CONTAINER_PORT})")
            c = dc.containers.run(
                image_id,
                command=CONTAINER_CMD,
                name=CONTAINER,
                hostname=CONTAINER,
                detach=True,
                ports=CONTAINER_PORTS,
                labels={LABEL: "1", CONFIG_LABEL: want},
                restart_policy={"Name": "unless-stopped"},
            )
        elif c.status == "paused":
            _log(f"unpausing container {CONTAINER}")
            c.unpause()
        elif c.status != "running":
            _log(f"container {CONTAINER} was {c.status}: starting it")
            c.start()
    except APIError as exc:
        raise LabError(f"docker could not run {CONTAINER}: {one_line(exc.explanation or exc, 200)}") from exc
    deadline = time.monotonic() + 15
    while True:
        c.reload()
        if c.status == "running" and _container_ip(c):
            return c
        if time.monotonic() > deadline:
            raise LabError(f"container {CONTAINER} is {c.status} after start; see `docker logs {CONTAINER}`")
        time.sleep(0.1)


def _container_veth(c: Any) -> str | None:
    """Host-side veth of the container's eth0 (its peer ifindex is eth0's iflink)."""
    pid = (c.attrs.get("State") or {}).get("Pid")
    if not pid:
        return None
    # (not /sys/class/net/eth0/iflink: under nsenter -n, /sys is still the host's)
    out = _run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show", "eth0"], check=False).stdout
    iflink = 0
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        iflink = int(json.loads(out, strict=False)[0]["link_index"])
    if not iflink:
        return None
    for link in _ip_json("link", "show"):
        if link.get("ifindex") == iflink:
            return link.get("ifname")
    return None


# --------------------------------------------------------------------------- verification


# NB: busybox 1.35 (Debian 12 busybox-static) wget segfaults with -T; bound it with timeout(1)
def _client_get(url: str, timeout: int = 2) -> subprocess.CompletedProcess:
    return _run(["ip", "netns", "exec", NETNS, "timeout", str(timeout), busybox(), "wget", "-q", "-O-", url],
                check=False, timeout=timeout + 5)


def _container_get(c: Any, url: str, timeout: int = 2) -> tuple[int, str]:
    res = c.exec_run(["timeout", str(timeout), "wget", "-q", "-O-", url])
    return res.exit_code, (res.output or b"").decode(errors="replace")


def _until(deadline: float, attempt: Callable[[], tuple[bool, str]], failure: Callable[[str], str]) -> None:
    """Call ``attempt`` (ok, what it got) every 0.2 s until it succeeds; past
    ``deadline``, a LabError of ``failure(what it got last)``."""
    while True:
        ok, got = attempt()
        if ok:
            return
        if time.monotonic() > deadline:
            raise LabError(failure(got))
        time.sleep(0.2)


def _verify(c: Any, timeout: float = VERIFY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout

    def from_client(url: str, marker: str) -> Callable[[], tuple[bool, str]]:
        def attempt() -> tuple[bool, str]:
            cp = _client_get(url)
            return cp.returncode == 0 and marker in cp.stdout, one_line(cp.stderr, 120) or "no answer"
        return attempt

    def from_container(url: str, marker: str) -> Callable[[], tuple[bool, str]]:
        def attempt() -> tuple[bool, str]:
            rc, out = _container_get(c, url)
            return rc == 0 and marker in out, one_line(out, 120) or str(rc)
        return attempt

    url = f"http://{HOST_ADDRESS}:{PORT}/"
    _until(deadline, from_client(url, INDEX_MARKER),
           lambda got: f"from netns {NETNS}, GET {url} did not return the lab page ({got}); "
                       "check DNAT/FORWARD rules (iptables -t nat -S DOCKER)")
    back = f"http://{CLIENT_ADDRESS}:{SERVER_PORT}/"
    _until(deadline, from_container(back, SERVER_MARKER),
           lambda got: f"from {CONTAINER}, GET {back} failed ({got}); check ip_forward, FORWARD and MASQUERADE rules")
    # The container back to itself through the host's published port:
    # docker-proxy relays it, or (userland proxy off) hairpin NAT on docker0.
    _until(deadline, from_container(url, INDEX_MARKER),
           lambda got: f"from {CONTAINER}, GET {url} failed ({got}); check docker-proxy, or with the userland "
                       "proxy off hairpin_mode on its veth and the MASQUERADE for it")
