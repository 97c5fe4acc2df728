"""Docker's userland proxy: which docker-proxy processes exist, and which two
TCP connections each one relays between (the links bpf/proxy.c records).

``curl 127.0.0.1:8000`` on the host, a container reaching a published port
and any IPv6 client of a published port reach the container through
docker-proxy: one TCP connection from the client to the proxy on the host
port (the client leg), a second from the proxy to the container port (the
backend leg). The kernel tells which client leg each backend leg relays
(bpf/proxy.c); here the link gets an id, names its proxy and container, and
is found again from either leg's addresses, so a journey on either leg can
say where it continues.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracer import addresses, procfs

COMM = "docker-proxy"


@dataclass(frozen=True)
class DockerProxy:
    """One docker-proxy process: `-proto tcp -host-ip 0.0.0.0 -host-port 8000
    -container-ip 172.17.0.2 -container-port 8080` (one per port and family)."""

    pid: int
    proto: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int


def parse_cmdline(pid: int, argv: list[str]) -> DockerProxy | None:
    """A docker-proxy from its arguments; None if they are not a proxy's."""
    opts = {}
    for flag, value in zip(argv[1:], argv[2:]):
        if flag.startswith("-"):
            opts[flag.lstrip("-")] = value
    try:
        return DockerProxy(pid, opts.get("proto", "tcp"), opts["host-ip"], int(opts["host-port"]),
                           opts["container-ip"], int(opts["container-port"]))
    except (KeyError, ValueError):
        return None


def find_proxies(proc: Path = procfs.PROC) -> list[DockerProxy]:
    """The running docker-proxy processes (TCP ones: the only kind linked)."""
    found = []
    for pid in procfs.pids_named(COMM, proc):
        argv = procfs.cmdline(pid, proc)
        proxy = parse_cmdline(pid, argv) if argv else None  # None: gone meanwhile
        if proxy is not None and proxy.proto == "tcp":
            found.append(proxy)
    return found


Endpoint = tuple[str, int]


@dataclass(frozen=True)
class ProxyLink:
    """Two legs of one relayed connection, each as its packets go from the
    side that connected: client -> host port, proxy -> container port."""

    link_id: int
    pid: int
    client: tuple[Endpoint, Endpoint]
    backend: tuple[Endpoint, Endpoint]
    container: str | None

    def to_json(self, leg: str) -> dict:
        (c, h), (p, b) = self.client, self.backend
        return {"link": self.link_id, "pid": self.pid, "leg": leg, "container": self.container,
                "client": f"{addresses.endpoint(*c)} → {addresses.endpoint(*h)}",
                "backend": f"{addresses.endpoint(*p)} → {addresses.endpoint(*b)}"}

    def to_record(self) -> dict:
        """The link as a capture's `proxy` row holds it (docs/capture-format.md)."""
        return {"link": self.link_id, "pid": self.pid, "container": self.container,
                "client": [list(e) for e in self.client], "backend": [list(e) for e in self.backend]}

    @classmethod
    def from_record(cls, info: dict) -> "ProxyLink":
        """A link read back from a `proxy` row; ValueError/KeyError/TypeError if it is not one."""
        def leg(ends) -> tuple[Endpoint, Endpoint]:
            (a, pa_), (b, pb) = ends
            return (str(a), int(pa_)), (str(b), int(pb))

        return cls(int(info["link"]), int(info["pid"]), leg(info["client"]), leg(info["backend"]),
                   info.get("container"))

    def text(self) -> str:
        (c, h), (p, b) = self.client, self.backend
        where = f"  [{self.container}]" if self.container else ""
        return (f"docker-proxy pid {self.pid}  {addresses.endpoint(*c)} → {addresses.endpoint(*h)}  ⇒  "
                f"{addresses.endpoint(*p)} → {addresses.endpoint(*b)}{where}  link {self.link_id}")


def _endpoints(words: tuple[int, ...]) -> tuple[Endpoint, Endpoint]:
    """(src, dst) of a flow_key read from the map: 2+2 address words, ports
    in network order."""
    s_hi, s_lo, d_hi, d_lo, sport, dport = words
    src = addresses.text_of(struct.pack("<QQ", s_hi, s_lo))
    dst = addresses.text_of(struct.pack("<QQ", d_hi, d_lo))
    return (src, _ntohs(sport)), (dst, _ntohs(dport))


def _ntohs(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8)


class ProxyLinks:
    """Links seen so far, found by either leg's two endpoints (in any order).
    The newest ``keep`` links are kept (a long `record` or `show` of many
    proxied connections stays bounded); an older one is forgotten, and a
    packet of its connection seen after that is shown without the hop."""

    def __init__(self, keep: int = 1 << 16) -> None:
        self.by_leg: dict[frozenset, tuple[ProxyLink, str]] = {}
        self._kept: dict[int, ProxyLink] = {}  # by insertion: oldest first
        self._keep_at_most = keep
        self._new: list[ProxyLink] = []  # made by add() since take_new()
        self._ids = itertools.count(1)
        # where each relayed stream starts (proxy_output.StreamStarts), kept with the links it serves
        self.streams = None
        self._ports: np.ndarray | None = None  # every leg endpoint's port (leg_ports), made again after a change

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def links(self) -> list[ProxyLink]:
        return list(self._kept.values())

    def take_new(self) -> list[ProxyLink]:
        """The links add() made since the last call (to write into a capture)."""
        new, self._new = self._new, []
        return new

    def add(self, pid: int, inbound: tuple[Endpoint, Endpoint], outbound: tuple[Endpoint, Endpoint],
            proxies: dict[int, DockerProxy], container_of=lambda ip: None) -> ProxyLink | None:
        """One relay the kernel saw: bytes came in on `inbound` (peer -> proxy)
        and went out on `outbound` (proxy -> peer). Which leg is the backend
        is told by the proxy's container address."""
        proxy = proxies.get(pid)
        if proxy is None:
            return None
        backend_end = (proxy.container_ip, proxy.container_port)
        if outbound[1] == backend_end:  # a request: client -> proxy -> container
            client, backend = inbound, outbound
        elif inbound[0] == backend_end:  # a reply: container -> proxy -> client
            client, backend = (outbound[1], outbound[0]), (inbound[1], inbound[0])
        else:
            return None
        known = self.by_leg.get(frozenset(client))
        if known is not None and known[0].backend == backend:
            return known[0]
        link = self._keep(ProxyLink(next(self._ids), pid, client, backend, container_of(proxy.container_ip)))
        self._new.append(link)
        return link

    def add_recorded(self, link: ProxyLink) -> None:
        """A link read from a capture (its id as recorded)."""
        known = self.by_leg.get(frozenset(link.client))
        if known is None or known[0].backend != link.backend:
            self._keep(link)

    def leg_ports(self) -> np.ndarray:
        """The ports of every kept leg's endpoints, sorted: a packet whose two
        ports are not both among them is on no leg (proxy_output's filter
        before the exact lookup)."""
        if self._ports is None:
            self._ports = np.unique(np.array([port for leg in self.by_leg for _, port in leg], np.int64))
        return self._ports

    def _keep(self, link: ProxyLink) -> ProxyLink:
        self._ports = None
        self._kept.pop(id(link), None)
        self._kept[id(link)] = link
        self.by_leg[frozenset(link.client)] = (link, "client")
        self.by_leg[frozenset(link.backend)] = (link, "backend")
        while len(self._kept) > self._keep_at_most:
            old = self._kept.pop(next(iter(self._kept)))
            for leg in (old.client, old.backend):
                if self.by_leg.get(frozenset(leg), (None,))[0] is old:
                    del self.by_leg[frozenset(leg)]
        return link

    def find(self, a: Endpoint, b: Endpoint) -> tuple[ProxyLink, str] | None:
        return self.by_leg.get(frozenset((a, b)))


def read_links(table, proxies: dict[int, DockerProxy], links: ProxyLinks, container_of=lambda ip: None,
               on_error: Callable[[OSError], None] | None = None) -> list[ProxyLink]:
    """Move the kernel's new link records (bpf/proxy.c proxy_links) into
    `links`; returns the links that are new. A failed read of the map
    (TakeFailed) still keeps the records taken before it (they are gone
    from the map); then it goes to ``on_error`` (the rest is read next
    time), or is raised without one."""
    from tracer.kernel.bpf_syscall import TakeFailed  # the kernel's module: only where links are read

    try:
        records, failed = _take(table), None
    except TakeFailed as exc:
        records, failed = _records(table, exc.taken), exc
    for key, value in records:
        inbound = _endpoints((key.inb.saddr.hi, key.inb.saddr.lo, key.inb.daddr.hi, key.inb.daddr.lo,
                              key.inb.sport, key.inb.dport))
        outbound = _endpoints((key.out.saddr.hi, key.out.saddr.lo, key.out.daddr.hi, key.out.daddr.lo,
                               key.out.sport, key.out.dport))
        links.add(int(value.pid), inbound, outbound, proxies, container_of)
    if failed is not None:
        if on_error is None:
            raise failed  # what it took is in `links`, new to the next take_new
        on_error(failed)
    return links.take_new()


def _take(table) -> list:
    """Every record of a BCC hash table, taken out of it by batch
    lookup-and-delete (one bpf() call, not three per record)."""
    import ctypes

    from tracer.kernel.bpf_syscall import take_all

    return _records(table, take_all(table.map_fd, ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)))


def _records(table, entries: list[tuple[bytes, bytes]]) -> list:
    return [(table.Key.from_buffer_copy(k), table.Leaf.from_buffer_copy(v)) for k, v in entries]


def proxies_by_pid(proxies: list[DockerProxy]) -> dict[int, DockerProxy]:
    return {p.pid: p for p in proxies}
