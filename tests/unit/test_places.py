"""tracer/places.py: the place book the session builds and decode reads."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from tracer.inventory import NoDocker
from tracer.places import Place, PlaceBook
from tracer.sensors.tc import TcTarget

HOST, CT = 4026531840, 4026532000


def iface(ifindex, name, role):
    return SimpleNamespace(ifindex=ifindex, name=name, role=role, netns_inode=HOST)


def test_rebuilt_from_interfaces_veths_and_attachments():
    book = PlaceBook(HOST)
    web = SimpleNamespace(id="c0ffee", name="web", host_veth="veth9", host_veth_ifindex=9)
    targets = [TcTarget(3, "docker0", "bridge", HOST),
               TcTarget(2, "eth0", "container", CT, "/proc/1/ns/net", "c0ffee", "web", ("172.17.0.2",)),
               TcTarget(2, "eth0", "container", CT + 1, "/proc/2/ns/net", "beef", "db", ("172.17.0.3",))]
    book.unresolved.add(77)
    book.rebuild([iface(1, "eth9", "external"), iface(3, "docker0", "other")], [web], targets, threading.Lock())
    assert book.place(0, 1, False, None, None) == Place("eth9", "external", HOST)
    assert book.place(HOST, 3, False, None, None) == Place("docker0", "bridge", HOST)  # the attachment's role wins
    assert book.place(0, 9, False, None, None) == Place("veth9", "veth", HOST, "c0ffee", "web")
    assert book.shared(2) and not book.shared(3)
    assert book.place(0, 2, True, "10.0.0.1", "172.17.0.3").container_name == "db"
    assert not book.unresolved  # a rebuild asks again about interfaces it could not name


def test_a_new_host_interface_is_looked_up_and_kept():
    asked = []

    def interfaces():
        asked.append(1)
        return [iface(12, "new0", "external")]

    book = PlaceBook(HOST, interfaces)
    assert book.place(0, 12, False, None, None) == Place("new0", "external", HOST)
    assert book.place(0, 12, False, None, None) == Place("new0", "external", HOST)
    assert len(asked) == 1
    assert book.place(0, 13, False, None, None) == Place(None, "other", HOST)  # not on the host: 'other'


def test_no_docker_is_an_inventory_without_containers():
    none = NoDocker()
    assert list(none.containers) == [] and none.by_ip("172.17.0.2") is None
    none.watch(lambda *a: None)
    none.close()


def test_a_drop_in_a_containers_netns_names_the_container():
    """A drop hop carries its device's netns and ifindex, not the
    in-container flag tc sightings there have: in a container's netns it
    is that container's (its eth0 where the device is eth0), not 'other'."""
    book = PlaceBook(HOST)
    web = SimpleNamespace(id="c0ffee", name="web", host_veth="veth9", host_veth_ifindex=9, netns_inode=CT)
    hostnet = SimpleNamespace(id="face", name="hostnet", host_veth=None, host_veth_ifindex=None, netns_inode=HOST)
    eth0 = TcTarget(2, "eth0", "container", CT, "/proc/1/ns/net", "c0ffee", "web", ("172.17.0.2",))
    book.rebuild([iface(1, "eth9", "external")], [web, hostnet], [eth0], threading.Lock())
    assert book.place(CT, 2, False, None, None) == Place("eth0", "container", CT, "c0ffee", "web")
    assert book.place(CT, 1, False, None, None) == Place(None, "container", CT, "c0ffee", "web")  # its lo, say
    assert book.place(CT + 5, 2, False, None, None) == Place(None, "other", CT + 5)  # no container's netns
    assert book.place(0, 1, False, None, None) == Place("eth9", "external", HOST)  # the host's as before
    assert book.place(HOST, 7, False, None, None) == Place(None, "other", HOST)  # a --network host container: the host's
    assert book.place(0, 2, True, None, None) == Place("eth0", "container", CT, "c0ffee", "web")  # tc inside, as before


def test_containers_sharing_a_netns_are_named_as_its_eth0_is():
    """Containers sharing one netns (--network container:app): a drop on
    its lo names the container its attached eth0 is named after (the first
    attached, as tc names the eth0's hops and drops), whatever order the
    inventory lists them in; a shared netns without an attachment names
    its first container."""
    book = PlaceBook(HOST)
    app = SimpleNamespace(id="a1", name="app", host_veth="veth9", host_veth_ifindex=9, netns_inode=CT)
    side = SimpleNamespace(id="b2", name="sidecar", host_veth=None, host_veth_ifindex=None, netns_inode=CT)
    x = SimpleNamespace(id="c3", name="x", host_veth=None, host_veth_ifindex=None, netns_inode=CT + 1)
    y = SimpleNamespace(id="d4", name="y", host_veth=None, host_veth_ifindex=None, netns_inode=CT + 1)
    eth0 = TcTarget(2, "eth0", "container", CT, "/proc/1/ns/net", "a1", "app", ("172.17.0.2",))
    for containers in ([app, side, x, y], [side, app, x, y]):
        book.rebuild([iface(1, "eth9", "external")], containers, [eth0], threading.Lock())
        assert book.place(CT, 2, False, None, None).container_name == "app"  # its eth0
        assert book.place(CT, 1, False, None, None) == Place(None, "container", CT, "a1", "app")  # its lo: the same
    assert book.place(CT + 1, 1, False, None, None).container_name == "x"  # no attachment: the first listed
