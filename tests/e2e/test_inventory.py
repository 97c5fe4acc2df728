"""Inventory against the real engine and kernel: root and a running dockerd.

Everything made here is named trct-inv-* and removed at the end, even on failure;
the lab's tracer-lab-* objects are never touched.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from typing import Any, Iterator

import pytest

from tracer.errors import TracerError
from tracer.dockerd import client as docker_client
from tracer.inventory import Container, Inventory, Published

pytestmark = pytest.mark.root

PREFIX = "trct-inv-"
OWN_IMAGE = "trct-inv:latest"
SLEEP = ["/bin/busybox", "sleep", "3600"]
HOST_PORT = 18080
CUSTOM_BRIDGE = "trctinvbr0"  # <= 15 characters: an ifname


def _docker() -> Any:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        return docker_client()
    except TracerError as exc:
        pytest.skip(str(exc))


def _cleanup(dc: Any) -> None:
    for c in dc.containers.list(all=True, filters={"name": PREFIX}):
        if c.name.startswith(PREFIX):  # the name filter matches substrings
            c.remove(force=True)
    for n in dc.networks.list(names=[PREFIX]):
        if n.name.startswith(PREFIX):
            n.remove()


def _build_own_image(dc: Any) -> str:
    """A busybox-only image via `docker import`, as the lab does (no registry here)."""
    with tempfile.TemporaryDirectory(prefix="trct-inv-") as root:
        os.makedirs(f"{root}/bin")
        shutil.copy2("/bin/busybox", f"{root}/bin/busybox")
        tar_path = f"{root}.tar"
        with tarfile.open(tar_path, "w") as tf:
            tf.add(root, arcname=".")
        try:
            with open(tar_path, "rb") as f:
                dc.api.import_image_from_data(f.read(), repository="trct-inv", tag="latest")
        finally:
            os.unlink(tar_path)
    return dc.images.get(OWN_IMAGE).id


@pytest.fixture(scope="module")
def dc() -> Iterator[Any]:
    client = _docker()
    _cleanup(client)  # leftovers of an interrupted run
    yield client
    _cleanup(client)
    client.close()


@pytest.fixture(scope="module")
def image(dc: Any) -> Iterator[str]:
    built = False
    try:
        from tracer.lab_image import ensure_image  # the lab's image, if that module is there
    except ImportError:
        ensure_image = None
    image_id = None
    if ensure_image is not None:
        try:
            image_id = ensure_image(dc)
        except Exception:  # lab code in flux: the test does not depend on it
            image_id = None
    if image_id is None:
        image_id = _build_own_image(dc)
        built = True
    yield image_id
    if built:
        _cleanup(dc)
        dc.images.remove(OWN_IMAGE, force=True)


def _run(dc: Any, image: str, name: str, **kwargs: Any) -> Any:
    c = dc.containers.run(image, SLEEP, name=PREFIX + name, detach=True, **kwargs)
    c.reload()
    assert c.status == "running"
    return c


@pytest.fixture(scope="module")
def lab(dc: Any, image: str) -> Iterator[dict[str, Any]]:
    user_net = dc.networks.create(PREFIX + "net", driver="bridge")
    custom_net = dc.networks.create(
        PREFIX + "custom", driver="bridge", options={"com.docker.network.bridge.name": CUSTOM_BRIDGE}
    )
    objs = {
        "user_net": user_net,
        "custom_net": custom_net,
        "pub": _run(dc, image, "pub", ports={"8080/tcp": HOST_PORT}),
        "user": _run(dc, image, "user", network=user_net.name),
        "custom": _run(dc, image, "custom", network=custom_net.name),
    }
    yield objs
    _cleanup(dc)


@pytest.fixture
def inv(dc: Any, lab: dict[str, Any]) -> Iterator[Inventory]:
    inventory = Inventory(dc)
    inventory.refresh()
    yield inventory
    inventory.close()


# -- ground truth from iproute2 ------------------------------------------------

def ip_links(pid: int | None = None) -> dict[str, dict[str, Any]]:
    """name -> {ifindex, peer ('if7'), master} from `ip -o link`, host or a pid's netns."""
    cmd = ["ip", "-o", "link", "show"]
    if pid is not None:
        cmd = ["nsenter", "-t", str(pid), "-n", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    links = {}
    for line in out.splitlines():
        m = re.match(r"^(\d+): ([^:@\s]+)(?:@(\S+?))?: ", line)
        assert m, line
        master = re.search(r" master (\S+) ", line)
        links[m.group(2)] = {
            "ifindex": int(m.group(1)),
            "peer": m.group(3),
            "master": master.group(1) if master else None,
        }
    return links


def check_kernel_facts(c: Container, docker_obj: Any) -> None:
    docker_obj.reload()
    state = docker_obj.attrs["State"]
    assert c.pid == state["Pid"]
    assert c.netns_path == f"/proc/{c.pid}/ns/net"
    assert c.netns_inode == os.stat(c.netns_path).st_ino
    ips = [n["IPAddress"] for n in docker_obj.attrs["NetworkSettings"]["Networks"].values()]
    assert list(c.ips) == ips and ips[0]

    eth0 = ip_links(c.pid)["eth0"]  # eth0@ifN: N is the host veth's ifindex
    assert c.eth0_ifindex == eth0["ifindex"]
    assert eth0["peer"] == f"if{c.host_veth_ifindex}"

    host = ip_links()
    assert c.host_veth is not None
    veth = host[c.host_veth]
    assert veth["ifindex"] == c.host_veth_ifindex
    assert veth["peer"] == f"if{c.eth0_ifindex}"
    assert veth["master"] == c.bridge
    assert c.bridge_ifindex == socket.if_nametoindex(c.bridge)


# -- tests ---------------------------------------------------------------------


def test_default_bridge_container(inv: Inventory, lab: dict[str, Any]) -> None:
    c = inv.find(PREFIX + "pub")
    check_kernel_facts(c, lab["pub"])
    assert c.bridge == "docker0"
    assert Published("0.0.0.0", HOST_PORT, 8080, "tcp") in c.published
    assert inv.by_host_ifindex(c.host_veth_ifindex) == c
    assert inv.by_netns(c.netns_inode) == c
    assert inv.by_ip(c.ips[0]) == c
    assert inv.by_netns(inv.host_netns_inode) is None
    assert inv.host_netns_inode == os.stat("/proc/self/ns/net").st_ino


def test_user_defined_network(inv: Inventory, lab: dict[str, Any]) -> None:
    c = inv.find(PREFIX + "user")
    check_kernel_facts(c, lab["user"])
    assert c.bridge == "br-" + lab["user_net"].id[:12]
    assert c.published == ()


def test_custom_bridge_name(inv: Inventory, lab: dict[str, Any]) -> None:
    c = inv.find(PREFIX + "custom")
    check_kernel_facts(c, lab["custom"])
    assert c.bridge == CUSTOM_BRIDGE


def test_find_by_id_prefix(inv: Inventory, lab: dict[str, Any]) -> None:
    assert inv.find(lab["user"].id[:12]).name == PREFIX + "user"
    assert inv.find(lab["user"].id).name == PREFIX + "user"
    with pytest.raises(TracerError, match="no running container named 'trct-inv-nope'"):
        inv.find(PREFIX + "nope")


def test_host_interfaces(inv: Inventory, lab: dict[str, Any]) -> None:
    roles = {i.name: i for i in inv.host_interfaces()}
    assert {i.netns_inode for i in roles.values()} == {inv.host_netns_inode}
    assert set(roles) == set(ip_links())  # every host link, nothing from a container
    assert roles["lo"].role == "other"
    assert roles["docker0"].role == "bridge"
    assert roles["docker0"].ifindex == socket.if_nametoindex("docker0")
    assert roles["br-" + lab["user_net"].id[:12]].role == "bridge"
    assert roles[CUSTOM_BRIDGE].role == "bridge"
    for name in ("pub", "user", "custom"):
        c = inv.find(PREFIX + name)
        assert roles[c.host_veth].role == "veth"
        assert roles[c.host_veth].ifindex == c.host_veth_ifindex
    assert any(i.role == "external" for i in roles.values())  # the host's uplink


def test_refresh_is_fast(inv: Inventory) -> None:
    timings = []
    for _ in range(5):
        t = time.perf_counter()
        inv.refresh()
        timings.append(time.perf_counter() - t)
    assert sorted(timings)[len(timings) // 2] < 0.3, timings


def _next(events: "queue.Queue[tuple[str, Container]]", action: str, name: str) -> Container:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            got, c = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if got == action and c.name == name:
            return c
    raise AssertionError(f"no {action!r} for {name} within 10 s")


def test_watch_start_restart_die(dc: Any, image: str, lab: dict[str, Any]) -> None:
    events: queue.Queue[tuple[str, Container]] = queue.Queue()
    name = PREFIX + "watch"
    inv = Inventory(dc)
    try:
        inv.watch(lambda action, c: events.put((action, c)))
        obj = _run(dc, image, "watch")
        started = _next(events, "start", name)
        assert started.id == obj.id
        assert started.host_veth_ifindex is not None
        assert inv.by_host_ifindex(started.host_veth_ifindex) == started
        check_kernel_facts(started, obj)

        obj.restart(timeout=0)  # busybox sleep as PID 1 ignores SIGTERM: kill at once
        died = _next(events, "die", name)
        assert died == started  # the record as it was, for the caller to forget
        restarted = _next(events, "start", name)
        assert restarted.pid != started.pid
        assert restarted.host_veth_ifindex != started.host_veth_ifindex
        check_kernel_facts(restarted, obj)

        obj.stop(timeout=0)
        assert _next(events, "die", name) == restarted
        assert inv.by_host_ifindex(restarted.host_veth_ifindex) is None
        time.sleep(0.5)
        leftovers = [(a, c.name) for a, c in list(events.queue) if c.name == name]
        assert leftovers == [], "each change reported once"
    finally:
        t = time.monotonic()
        inv.close()
        closed_in = time.monotonic() - t
    assert closed_in < 1.0
