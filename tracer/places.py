"""Where a sighting happened, as user space knows it: the place book.

One ``PlaceBook`` a host owns (netns inode, ifindex) -> ``Place`` (interface,
role, container) and its fallbacks. Whoever knows the host (the trace
session) rebuilds it from the host interfaces, the containers' host-side
veths and the tc attachments as they change; decode only looks places up.
A host interface missing from the book (one that appeared since the last
rebuild) is looked for once among the host's interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tracer.events import CONTAINER, OTHER, VETH


@dataclass(frozen=True)
class Place:
    """Where a sighting happened, as user space knows it."""

    ifname: str | None
    role: str
    netns: int
    container_id: str | None = None
    container_name: str | None = None


UNKNOWN_PLACE = Place(None, OTHER, 0)


class PlaceBook:
    def __init__(self, host_netns: int, host_interfaces: Callable[[], Iterable[Any]] | None = None) -> None:
        self.host_netns = host_netns
        # The host's interfaces now (inventory.Interface: name, role,
        # netns_inode, ifindex), for interfaces not in the book; None: no fallback.
        self.host_interfaces = host_interfaces
        # (netns inode, ifindex) -> Place; netns is the host's for host interfaces.
        self.places: dict[tuple[int, int], Place] = {}
        # ifindex -> Places of container eth0s (tc events from inside a container
        # netns do not carry the netns; ifindex plus addresses disambiguate).
        self.container_places: dict[int, list[tuple[Place, tuple[str, ...]]]] = {}
        # Container netns inode -> the container's place for a device there
        # that no tc attachment names (a drop's device: lo, say).
        self.container_netns: dict[int, Place] = {}
        # Host ifindexes the fallback could not name (a veth already gone, say):
        # asked once, not on every poll, since each ask re-reads every host link.
        # Emptied when the book is rebuilt.
        self.unresolved: set[int] = set()

    def place(self, netns: int, ifindex: int, in_container_ns: bool, src: str | None, dst: str | None) -> Place:
        """src/dst: the sighting's addresses as text (only asked for when two
        containers' eth0 share an ifindex)."""
        if in_container_ns:
            candidates = self.container_places.get(ifindex, [])
            if len(candidates) > 1:
                for place, ips in candidates:
                    if src in ips or dst in ips:
                        return place
            return candidates[0][0] if candidates else UNKNOWN_PLACE
        place = self.places.get((netns or self.host_netns, ifindex))
        # ifindex 0 means no device at all: nothing to ask about.
        if (place is None and ifindex and netns in (0, self.host_netns) and self.host_interfaces is not None
                and ifindex not in self.unresolved):
            place = self._host_place(ifindex)
            if place is None:
                self.unresolved.add(ifindex)
        if place is None and netns:
            # a drop inside a container's netns (its iptables, a closed port):
            # it carries the device's netns, not the in-container flag
            place = self.container_netns.get(netns)
        if place is None:
            return Place(None, OTHER, netns or self.host_netns)
        return place

    def shared(self, ifindex: int) -> bool:
        """Whether containers' eth0s share this ifindex (their addresses tell them apart)."""
        return len(self.container_places.get(ifindex, ())) > 1

    def _host_place(self, ifindex: int) -> Place | None:
        for i in self.host_interfaces():
            if i.ifindex == ifindex:
                place = self.places[(i.netns_inode, ifindex)] = host_place(i)
                return place
        return None

    def rebuild(self, host_interfaces: Iterable[Any], containers: Iterable[Any], targets: Iterable[Any], lock) -> None:
        """From the host interfaces, the containers' host-side veths
        (inventory.Container) and the tc attachments (sensors.tc.TcTarget),
        swapped in under ``lock`` (what readers of the book hold)."""
        places: dict[tuple[int, int], Place] = {}
        for i in host_interfaces:
            places[(i.netns_inode, i.ifindex)] = host_place(i)
        # Each container netns is named after one container. Containers can
        # share a netns (--network container:web): the one its attached eth0
        # is named after (the first attached: TcSensor keeps one per key), so
        # a drop on its lo names the same container as its eth0's hops and
        # drops; then, for a netns without an attachment, the first container.
        targets = list(targets)
        container_netns: dict[int, Place] = {}
        for t in targets:
            if t.in_container_ns:
                container_netns.setdefault(t.netns_inode, Place(None, CONTAINER, t.netns_inode, t.container_id,
                                                                t.container_name))
        for c in containers:
            if c.host_veth_ifindex:
                places[(self.host_netns, c.host_veth_ifindex)] = Place(c.host_veth, VETH, self.host_netns, c.id, c.name)
            netns = getattr(c, "netns_inode", 0)
            if netns and netns != self.host_netns:  # not --network host
                container_netns.setdefault(netns, Place(None, CONTAINER, netns, c.id, c.name))
        container_places: dict[int, list] = {}
        for t in targets:
            place = Place(t.ifname, t.role, t.netns_inode, t.container_id, t.container_name)
            if t.in_container_ns:
                container_places.setdefault(t.ifindex, []).append((place, t.container_ips))
            # a drop carries its device's netns, in a container's too: found by (netns, ifindex)
            places[t.key] = place
        with lock:
            self.places = places
            self.container_places = container_places
            self.container_netns = container_netns
            self.unresolved = set()


def host_place(i) -> Place:
    """A host interface's place (inventory.Interface)."""
    return Place(i.name, i.role, i.netns_inode)
