"""Docker metadata parsing and lookups: no root, no Docker engine."""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

import pytest

from tracer.errors import TracerError
from tracer.inventory import (
    Container,
    Interface,
    Inventory,
    LinkInfo,
    Published,
    bridge_name,
    classify_interfaces,
    parse_container,
    parse_published,
)

DEFAULT_NET_ID = "c3513cf8f81ffd7c699972ed0891963f21b61965d32ba9e3747b423c6fbff6c9"
USER_NET_ID = "9f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccddeeff00112233445566778899"
CUSTOM_NET_ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
NO_SUCH_PID = 999_999_999  # above pid_max: the netns walk skips it

# `docker network ls` / inspect shapes (trimmed), as recorded from Docker 20.10
NETWORKS = [
    {
        "Name": "bridge",
        "Id": DEFAULT_NET_ID,
        "Driver": "bridge",
        "Options": {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.name": "docker0",
        },
    },
    {"Name": "trct-net", "Id": USER_NET_ID, "Driver": "bridge", "Options": {}},
    {
        "Name": "custom",
        "Id": CUSTOM_NET_ID,
        "Driver": "bridge",
        "Options": {"com.docker.network.bridge.name": "labbr0"},
    },
    {"Name": "host", "Id": "ab" * 32, "Driver": "host", "Options": {}},
    {"Name": "none", "Id": "cd" * 32, "Driver": "null", "Options": {}},
]


def inspect_json(
    name: str = "web",
    cid: str = "283234c212405af7ea40b0fd49393736a0d52359e9bf14ed52f39825b8f52b80",
    network: str = "bridge",
    network_id: str = DEFAULT_NET_ID,
    ip: str = "172.17.0.2",
    pid: int = 5696,
) -> dict[str, Any]:
    """`docker inspect` of a running container (trimmed), as recorded."""
    return {
        "Id": cid,
        "Name": "/" + name,
        "State": {"Status": "running", "Running": True, "Pid": pid, "ExitCode": 0},
        "NetworkSettings": {
            "Bridge": "",
            "SandboxKey": "/var/run/docker/netns/3723a1c37027",
            "Ports": {
                "8080/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "18080"},
                    {"HostIp": "::", "HostPort": "18080"},
                ],
                "9090/tcp": None,  # EXPOSEd but not published
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "15353"}],
            },
            "IPAddress": ip if network == "bridge" else "",
            "Networks": {
                network: {
                    "NetworkID": network_id,
                    "Gateway": "172.17.0.1",
                    "IPAddress": ip,
                    "IPPrefixLen": 16,
                    "MacAddress": "02:42:ac:11:00:02",
                }
            },
        },
    }


# -- parsing ----------------------------------------------------------------


def test_parse_default_bridge_container() -> None:
    c = parse_container(inspect_json(), NETWORKS)
    assert c.name == "web"
    assert c.id.startswith("283234c2124")
    assert c.pid == 5696
    assert c.netns_path == "/proc/5696/ns/net"
    assert c.ips == ("172.17.0.2",)
    assert c.bridge == "docker0"
    # kernel facts come from netlink, not from JSON
    assert (c.host_veth, c.host_veth_ifindex, c.eth0_ifindex, c.bridge_ifindex) == (None,) * 4
    assert c.netns_inode == 0


def test_parse_published_ports() -> None:
    c = parse_container(inspect_json(), NETWORKS)
    assert c.published == (
        Published("127.0.0.1", 15353, 53, "udp"),
        Published("0.0.0.0", 18080, 8080, "tcp"),
        Published("::", 18080, 8080, "tcp"),
    )
    assert parse_published(None) == ()
    assert parse_published({"80/tcp": None}) == ()
    assert parse_published({"80/tcp": [{"HostIp": "", "HostPort": "8000"}]}) == (
        Published("0.0.0.0", 8000, 80, "tcp"),
    )


def test_bridge_name_rules() -> None:
    default, user, custom, host, none = NETWORKS
    assert bridge_name(default) == "docker0"
    assert bridge_name(user) == "br-" + USER_NET_ID[:12]
    assert bridge_name(custom) == "labbr0"
    assert bridge_name(host) is None
    assert bridge_name(none) is None
    # the default network is docker0 even if its options were not returned
    assert bridge_name({"Name": "bridge", "Id": DEFAULT_NET_ID, "Driver": "bridge"}) == "docker0"


def test_parse_user_defined_and_custom_bridge() -> None:
    user = parse_container(inspect_json(network="trct-net", network_id=USER_NET_ID), NETWORKS)
    assert user.bridge == "br-9f1e2d3c4b5a"
    custom = parse_container(inspect_json(network="custom", network_id=CUSTOM_NET_ID), NETWORKS)
    assert custom.bridge == "labbr0"
    # network list unavailable: Docker's naming rules still give the bridge
    assert parse_container(inspect_json(network="trct-net", network_id=USER_NET_ID)).bridge == (
        "br-9f1e2d3c4b5a"
    )


def test_parse_host_and_none_network() -> None:
    host = parse_container(inspect_json(network="host", network_id="ab" * 32, ip=""), NETWORKS)
    assert host.bridge is None and host.ips == ()
    none = parse_container(inspect_json(network="none", network_id="cd" * 32, ip=""), NETWORKS)
    assert none.bridge is None and none.ips == ()


# -- interface roles ----------------------------------------------------------


def test_classify_interfaces() -> None:
    links = [
        LinkInfo(1, "lo", up=True),
        LinkInfo(2, "ifb0", up=False, kind="ifb"),
        LinkInfo(4, "eth0", up=True),
        LinkInfo(5, "docker0", up=True, kind="bridge"),
        LinkInfo(7, "veth7138774", up=True, kind="veth", master=5, link=6),
        LinkInfo(9, "br-9f1e2d3c4b5a", up=False, kind="bridge"),  # no containers yet: down
        LinkInfo(11, "vethabc", up=True, kind="veth", master=5, link=10),  # Docker not told us yet
        LinkInfo(12, "lab-host", up=True, kind="veth", link=2),  # a netns of our own: outside world
        LinkInfo(13, "eth1", up=False),
        LinkInfo(14, "virbr0", up=True, kind="bridge"),  # not Docker's
    ]
    roles = {
        i.name: i.role
        for i in classify_interfaces(links, {"docker0", "br-9f1e2d3c4b5a"}, [7], netns_inode=4026531833)
    }
    assert roles == {
        "lo": "other",
        "ifb0": "other",
        "eth0": "external",
        "docker0": "bridge",
        "veth7138774": "veth",
        "br-9f1e2d3c4b5a": "bridge",
        "vethabc": "veth",
        "lab-host": "external",
        "eth1": "other",
        "virbr0": "external",
    }
    assert classify_interfaces(links[:1], (), (), 42) == [Interface(1, "lo", "other", 42)]


# -- Inventory with a fake engine ---------------------------------------------


class FakeAPI:
    """The few low-level docker API calls Inventory makes."""

    def __init__(self, inspects: list[dict[str, Any]]) -> None:
        self.inspects = {i["Id"]: i for i in inspects}

    def networks(self) -> list[dict[str, Any]]:
        return copy.deepcopy(NETWORKS)

    def containers(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [{"Id": cid} for cid in self.inspects]

    def inspect_container(self, cid: str) -> dict[str, Any]:
        return copy.deepcopy(self.inspects[cid])


class FakeClient:
    def __init__(self, inspects: list[dict[str, Any]], events: Any = None) -> None:
        self.api = FakeAPI(inspects)
        self._events = events

    def events(self, **kwargs: Any) -> Any:
        if callable(self._events):
            return self._events()
        raise ConnectionError("Connection aborted: [Errno 2] No such file or directory")

    def close(self) -> None:
        pass


WEB_ID = "aaaa1111" + "0" * 56
DB_ID = "aaaa2222" + "0" * 56


def fake_inventory(events: Any = None) -> Inventory:
    return Inventory(
        FakeClient(
            [
                inspect_json("web", WEB_ID, pid=NO_SUCH_PID),
                inspect_json("db", DB_ID, ip="172.17.0.3", pid=NO_SUCH_PID),
            ],
            events,
        )
    )


def test_find_by_name_and_id_prefix() -> None:
    inv = fake_inventory()
    assert [c.name for c in inv.refresh()] == ["db", "web"]
    assert inv.find("web").id == WEB_ID
    assert inv.find("/web").id == WEB_ID
    assert inv.find(DB_ID).name == "db"
    assert inv.find("aaaa2").name == "db"
    assert inv.by_ip("172.17.0.3").name == "db"
    assert inv.by_ip("10.0.0.1") is None
    assert inv.by_host_ifindex(7) is None  # no such pid: no kernel facts
    assert inv.by_netns(0) is None


def test_find_errors() -> None:
    inv = fake_inventory()
    with pytest.raises(TracerError, match=r"^no running container named 'nope'$"):
        inv.find("nope")
    with pytest.raises(TracerError, match="no running container named 'aaa'"):
        inv.find("aaa")  # prefixes need 4 characters
    with pytest.raises(TracerError, match="ambiguous"):
        inv.find("aaaa")


def test_docker_client_bogus_url_is_one_line(tmp_path: Any) -> None:
    from tracer.dockerd import FIX_HINT, DockerUnavailable, client

    url = f"unix://{tmp_path}/no-docker.sock"
    with pytest.raises(DockerUnavailable) as info:
        client(timeout=1, base_url=url)
    message = str(info.value)
    assert message.startswith(f"no Docker engine answers at {url} (") and message.endswith(f"); {FIX_HINT}")
    assert "\n" not in message and info.value.exit_code == 1
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_watch_tolerates_missing_engine(caplog: pytest.LogCaptureFixture) -> None:
    inv = fake_inventory()  # events() always fails
    seen: list[tuple[str, Container]] = []
    with caplog.at_level(logging.DEBUG, logger="tracer.inventory"):
        inv.watch(lambda action, c: seen.append((action, c)))
        time.sleep(2.5)  # a few reconnect attempts
        t = time.monotonic()
        inv.close()
        assert time.monotonic() - t < 1.5
    assert seen == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "one warning, not one per retry"
    assert warnings[0].exc_info is None  # no traceback


class FakeStream:
    """Yields queued events; close() ends the iteration like docker's CancellableStream."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: list[dict[str, Any]] = []
        self.closed = False

    def push(self, event: dict[str, Any]) -> None:
        with self.cond:
            self.queue.append(event)
            self.cond.notify()

    def __iter__(self) -> Any:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.queue or self.closed)
                if self.closed:
                    return
                event = self.queue.pop(0)
            yield event

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


def test_watch_reports_start_and_die_once() -> None:
    stream = FakeStream()
    inv = fake_inventory(events=lambda: stream)
    api: FakeAPI = inv.client.api
    seen: list[tuple[str, str, int]] = []
    got = threading.Event()

    def on_change(action: str, c: Container) -> None:
        seen.append((action, c.name, c.pid))
        got.set()

    def expect(n: int) -> None:
        deadline = time.monotonic() + 5
        while len(seen) < n and time.monotonic() < deadline:
            got.wait(0.05)
            got.clear()

    inv.watch(on_change)
    try:
        new_id = "bbbb" + "1" * 60
        api.inspects[new_id] = inspect_json("new", new_id, ip="172.17.0.9", pid=NO_SUCH_PID)
        stream.push({"Type": "container", "Action": "start", "id": new_id})
        expect(1)
        stream.push({"Type": "container", "Action": "start", "id": new_id})  # duplicate
        del api.inspects[WEB_ID]
        stream.push({"Type": "container", "Action": "die", "id": WEB_ID})
        stream.push({"Type": "container", "Action": "die", "id": WEB_ID})  # duplicate
        expect(2)
        time.sleep(0.3)
    finally:
        inv.close()
    assert seen == [("start", "new", NO_SUCH_PID), ("die", "web", NO_SUCH_PID)]
    assert stream.closed
