"""Docker metadata: which container owns a host ifindex, a netns or an IP.

The kernel is the source of truth for interfaces: each container's `eth0` is
read from inside its netns (its IFLA_LINK is the host-side veth's ifindex) and
the host veth's master is the bridge. Docker supplies names, IPs and published
ports. The events stream keeps the picture current.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

from tracer.errors import TracerError, one_line
from tracer.events import BRIDGE, EXTERNAL, OTHER, VETH
from tracer.kernel import rtnl
from tracer.kernel.netns import setns
from tracer.kernel.rtnl import LinkInfo

log = logging.getLogger(__name__)

# Seconds a Docker request may take while tracing: a stuck engine must not
# hold up the trace (the lab's pulls and builds wait longer).
DOCKER_TIMEOUT = 5
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: int
    container_port: int
    proto: str


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    pid: int
    netns_path: str
    netns_inode: int
    ips: tuple[str, ...]
    bridge: str | None
    bridge_ifindex: int | None
    host_veth: str | None
    host_veth_ifindex: int | None
    eth0_ifindex: int | None
    published: tuple[Published, ...]

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class Interface:
    ifindex: int
    name: str
    role: str  # 'external' | 'bridge' | 'veth' | 'other'
    netns_inode: int


# --------------------------------------------------------------------------
# Docker engine


# --------------------------------------------------------------------------
# Pure parsing (unit tested with recorded inspect JSON)


def bridge_name(network: Mapping[str, Any]) -> str | None:
    """Host bridge ifname of a Docker network, None for non-bridge drivers."""
    if network.get("Driver") != "bridge":
        return None
    custom = (network.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    if custom:
        return str(custom)
    if network.get("Name") == "bridge":
        return "docker0"
    return "br-" + str(network["Id"])[:12]


def parse_published(ports: Mapping[str, Any] | None) -> tuple[Published, ...]:
    """NetworkSettings.Ports -> Published; exposed-only ports (value None) are skipped."""
    out: set[Published] = set()
    for key, bindings in (ports or {}).items():
        port, _, proto = key.partition("/")
        for b in bindings or ():
            if not b.get("HostPort"):
                continue
            out.add(Published(b.get("HostIp") or "0.0.0.0", int(b["HostPort"]), int(port), proto or "tcp"))
    return tuple(sorted(out, key=lambda p: (p.container_port, p.proto, p.host_port, p.host_ip)))


def parse_container(
    inspect: Mapping[str, Any], networks: Iterable[Mapping[str, Any]] = ()
) -> Container:
    """Container from `docker inspect` JSON; kernel facts (ifindexes, netns inode)
    are left empty and filled in by Inventory from netlink."""
    by_id = {n["Id"]: n for n in networks}
    settings = inspect.get("NetworkSettings") or {}
    attached = settings.get("Networks") or {}
    ips: list[str] = []
    bridge = None
    for name, endpoint in attached.items():
        if endpoint.get("IPAddress"):
            ips.append(endpoint["IPAddress"])
        if endpoint.get("GlobalIPv6Address"):  # networks with IPv6 enabled
            ips.append(endpoint["GlobalIPv6Address"])
        network = by_id.get(endpoint.get("NetworkID", "")) or _guess_network(name, endpoint)
        # with several networks, the kernel (eth0's veth master) picks the real one later
        bridge = bridge or bridge_name(network)
    pid = int((inspect.get("State") or {}).get("Pid") or 0)
    return Container(
        id=inspect["Id"],
        name=str(inspect.get("Name", "")).lstrip("/"),
        pid=pid,
        netns_path=f"/proc/{pid}/ns/net",
        netns_inode=0,
        ips=tuple(ips),
        bridge=bridge,
        bridge_ifindex=None,
        host_veth=None,
        host_veth_ifindex=None,
        eth0_ifindex=None,
        published=parse_published(settings.get("Ports")),
    )


def _guess_network(name: str, endpoint: Mapping[str, Any]) -> dict[str, Any]:
    # Network vanished between list and inspect: Docker's own naming rules still apply.
    driver = None if name in ("host", "none") else "bridge"
    return {"Name": name, "Id": endpoint.get("NetworkID") or "", "Driver": driver}


def host_interfaces_without_docker() -> list[Interface]:
    """Host links and their roles when no Docker engine answers (no bridges
    or veths known: every up link but lo is external)."""
    host_inode, links, _ = _snapshot(())
    return classify_interfaces(links, (), (), host_inode)


class NoDocker:
    """The inventory when no Docker engine answers: no containers, the host's
    interfaces without Docker's bridges and veths, nothing to watch."""

    containers: tuple = ()

    def host_interfaces(self) -> list[Interface]:
        return host_interfaces_without_docker()

    def by_ip(self, ip: str) -> None:
        return None

    def watch(self, on_change: Callable[[str, "Container"], None]) -> None:
        pass

    def close(self) -> None:
        pass


def classify_interfaces(
    links: Iterable[LinkInfo],
    bridge_names: Iterable[str],
    veth_ifindexes: Iterable[int],
    netns_inode: int,
) -> list[Interface]:
    """Give every host link a role: bridge, veth (a container's host side),
    external (up, carries traffic from outside) or other (lo, down...)."""
    links = list(links)
    bridges = set(bridge_names)
    bridge_idx = {l.ifindex for l in links if l.name in bridges}
    veths = set(veth_ifindexes)
    out = []
    for l in sorted(links, key=lambda l: l.ifindex):
        if l.name == "lo":
            role = OTHER
        elif l.ifindex in bridge_idx:
            role = BRIDGE
        elif l.ifindex in veths or (l.kind == "veth" and l.master in bridge_idx):
            role = VETH  # the second test catches a container seen by netlink before Docker
        elif l.up:
            role = EXTERNAL
        else:
            role = OTHER
        out.append(Interface(l.ifindex, l.name, role, netns_inode))
    return out


# --------------------------------------------------------------------------
# Netlink, namespace by namespace


@dataclass(frozen=True)
class _NetnsView:
    inode: int
    eth0: LinkInfo | None


def _snapshot(pids: Iterable[int]) -> tuple[int, list[LinkInfo], dict[int, _NetnsView]]:
    """Host links plus each pid's netns inode and eth0, without forking.

    A netlink socket belongs to the netns of the thread that creates it, and
    setns(CLONE_NEWNET) only moves the calling thread; so a throwaway thread
    walks the namespaces and takes its namespace with it when it ends.
    """
    result: dict[str, Any] = {}

    def walk() -> None:
        try:
            host = os.stat("/proc/self/ns/net").st_ino  # the main thread's netns
            if os.stat("/proc/thread-self/ns/net").st_ino != host:
                fd = os.open("/proc/self/ns/net", os.O_RDONLY)
                try:
                    setns(fd)
                finally:
                    os.close(fd)
            result["host"] = (host, rtnl.links())
            views: dict[int, _NetnsView] = {}
            for pid in pids:
                try:
                    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
                except OSError:
                    continue  # exited since Docker listed it, or not ours to see
                try:
                    inode = os.fstat(fd).st_ino
                    if inode != host:
                        setns(fd)
                finally:
                    os.close(fd)
                eth0 = None
                if inode != host:  # --network host has no eth0 of its own
                    try:
                        eth0 = rtnl.link_named("eth0")
                    except rtnl.LinkNotFound:
                        pass  # --network none: only lo
                views[pid] = _NetnsView(inode, eth0)
            result["views"] = views
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    t = threading.Thread(target=walk, name="tracer-netns-walk", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    host_inode, host_links = result["host"]
    return host_inode, host_links, result["views"]


def _resolve(c: Container, view: _NetnsView | None, host: Mapping[int, LinkInfo]) -> Container:
    """Fill a parsed container with what the kernel says about it."""
    if view is None:
        return c
    c = replace(c, netns_inode=view.inode)
    eth0 = view.eth0
    if eth0 is None:
        return c
    c = replace(c, eth0_ifindex=eth0.ifindex)
    peer = host.get(eth0.link) if eth0.link else None
    # ifindexes are per netns: accept the host link only if it points back at eth0
    if peer is None or peer.link != eth0.ifindex:
        return c
    c = replace(c, host_veth=peer.name, host_veth_ifindex=peer.ifindex)
    master = host.get(peer.master) if peer.master else None
    if master is not None:
        c = replace(c, bridge=master.name, bridge_ifindex=master.ifindex)
    return c


# --------------------------------------------------------------------------
# The inventory


@dataclass(frozen=True)
class _State:
    containers: tuple[Container, ...]
    by_id: Mapping[str, Container]
    by_veth: Mapping[int, Container]
    by_netns: Mapping[int, Container]
    by_ip: Mapping[str, Container]

    @classmethod
    def build(cls, containers: Iterable[Container], host_inode: int) -> "_State":
        cs = tuple(sorted(containers, key=lambda c: c.name))
        return cls(
            containers=cs,
            by_id={c.id: c for c in cs},
            by_veth={c.host_veth_ifindex: c for c in cs if c.host_veth_ifindex},
            # --network host shares our netns: that netns is not the container's
            by_netns={c.netns_inode: c for c in cs if c.netns_inode and c.netns_inode != host_inode},
            by_ip={ip: c for c in cs for ip in c.ips},
        )


class Inventory:
    """Running containers and host interfaces, indexed the ways sensors need."""

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._own_client = client is None
        self._reads: Any = None  # tracer/engine_api.EngineReads, when the engine is on a unix socket
        self._state: _State | None = None
        self._bridge_names: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # one refresh at a time (caller vs watch thread)
        self._stop = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._events: Any = None
        self.host_netns_inode: int = os.stat("/proc/self/ns/net").st_ino

    @property
    def client(self) -> Any:
        if self._client is None:
            from tracer.dockerd import client

            self._client = client(timeout=DOCKER_TIMEOUT)
        return self._client

    @property
    def reads(self) -> Any:
        """What a refresh reads the engine with: the given client's API, else
        the engine's unix socket without the SDK (its import is ~60 ms of
        every start: tracer/engine_api.py), else the SDK client's API."""
        if self._client is not None:
            return self._client.api
        if self._reads is None:
            from tracer.dockerd import engine_reads

            self._reads = engine_reads(timeout=DOCKER_TIMEOUT)
            if self._reads is None:  # DOCKER_HOST is not a unix socket
                return self.client.api
        return self._reads

    # -- refresh and lookups ---------------------------------------------

    def refresh(self) -> list[Container]:
        """Re-read running containers from Docker and their links from netlink."""
        with self._lock:
            api = self.reads
            networks = api.networks()
            parsed = []
            for summary in api.containers(filters={"status": "running"}):
                try:
                    inspect = api.inspect_container(summary["Id"])
                except Exception as exc:  # removed between list and inspect
                    log.debug("skipping container %s: %s", summary["Id"][:12], exc)
                    continue
                if (inspect.get("State") or {}).get("Running"):
                    parsed.append(parse_container(inspect, networks))
            host_inode, links, views = _snapshot(c.pid for c in parsed if c.pid > 0)
            host = {l.ifindex: l for l in links}
            containers = [_resolve(c, views.get(c.pid), host) for c in parsed]
            self.host_netns_inode = host_inode
            self._bridge_names = frozenset(filter(None, (bridge_name(n) for n in networks)))
            self._state = _State.build(containers, host_inode)
            return list(self._state.containers)

    def _current(self) -> _State:
        state = self._state
        if state is None:
            self.refresh()
            state = self._state
        assert state is not None
        return state

    @property
    def containers(self) -> list[Container]:
        return list(self._current().containers)

    def find(self, name_or_id: str) -> Container:
        """Exact name, exact id or an id prefix of 4+ characters; refreshes once on a miss."""
        for attempt in range(2):
            if attempt:
                self.refresh()  # it may have started since the last refresh
            found = self._match(self._current().containers, name_or_id)
            if found is not None:
                return found
        raise TracerError(f"no running container named '{name_or_id}'")

    @staticmethod
    def _match(containers: Iterable[Container], key: str) -> Container | None:
        key = key.lstrip("/")
        containers = list(containers)
        for c in containers:
            if key in (c.name, c.id):
                return c
        if len(key) < 4:
            return None
        hits = [c for c in containers if c.id.startswith(key.lower())]
        if len(hits) > 1:
            names = ", ".join(c.name for c in hits)
            raise TracerError(f"container id prefix '{key}' is ambiguous ({names}): give more of it")
        return hits[0] if hits else None

    def by_host_ifindex(self, ifindex: int) -> Container | None:
        return self._current().by_veth.get(ifindex)

    def by_netns(self, inode: int) -> Container | None:
        return self._current().by_netns.get(inode)

    def by_ip(self, ip: str) -> Container | None:
        return self._current().by_ip.get(ip)

    def host_interfaces(self) -> list[Interface]:
        """Every link in the host netns, read fresh, with its role."""
        state = self._current()
        host_inode, links, _ = _snapshot(())
        veths = [c.host_veth_ifindex for c in state.containers if c.host_veth_ifindex]
        bridges = self._bridge_names | {c.bridge for c in state.containers if c.bridge}
        return classify_interfaces(links, bridges, veths, host_inode)

    # -- events ----------------------------------------------------------

    def watch(self, on_change: Callable[[str, Container], None]) -> None:
        """Follow Docker start/die events in a background thread."""
        if self._watch_thread is not None and self._watch_thread.is_alive():
            raise TracerError("this inventory is already being watched")
        self._current()  # a baseline, so the first 'die' has a record to report
        self._stop.clear()
        self._watch_thread = threading.Thread(
            target=self._watch_loop, args=(on_change,), name="tracer-docker-events", daemon=True
        )
        self._watch_thread.start()

    def _watch_loop(self, on_change: Callable[[str, Container], None]) -> None:
        # What the subscriber has been told: container id -> record. Events are
        # checked against it, so a resync and a late event never report twice.
        announced = {c.id: c for c in self._current().containers}
        complained = False
        while not self._stop.is_set():
            try:
                stream = self.client.events(
                    decode=True, filters={"type": "container", "event": ["start", "die"]}
                )
            except Exception as exc:
                if not complained:
                    log.warning("docker events unavailable (%s); retrying", _one_line(exc))
                complained = True
                self._stop.wait(1.0)
                continue
            self._events = stream
            if self._stop.is_set():  # close() raced with the connect
                _quiet_close(stream)
                break
            if complained:
                log.info("docker events back")
                complained = False
            # changes before the subscription (first connect, or the engine was away)
            self._resync(announced, on_change)
            try:
                for event in stream:
                    self._handle(event, announced, on_change)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("docker events stream lost (%s); reconnecting", _one_line(exc))
                    complained = True
            finally:
                self._events = None
                _quiet_close(stream)
            self._stop.wait(0.5)  # the stream ends quietly when dockerd goes away

    def _handle(
        self,
        event: Mapping[str, Any],
        announced: dict[str, Container],
        on_change: Callable[[str, Container], None],
    ) -> None:
        action = event.get("Action") or event.get("status")
        cid = event.get("id") or (event.get("Actor") or {}).get("ID")
        if action not in ("start", "die") or not cid:
            return
        try:
            self.refresh()
        except Exception as exc:  # engine gone mid-event: the stream loop resyncs
            log.debug("refresh after %s failed: %s", action, _one_line(exc))
            return
        now = self._state.by_id.get(cid) if self._state else None
        old = announced.get(cid)
        if action == "die":
            # a die we already reported (resync) leaves the same pid running: skip it
            if old is not None and (now is None or now.pid != old.pid):
                del announced[cid]
                self._notify(on_change, "die", old)
        elif now is not None and (old is None or old.pid != now.pid):
            if old is not None:  # its die was missed
                self._notify(on_change, "die", old)
            announced[cid] = now
            self._notify(on_change, "start", now)

    def _resync(
        self, announced: dict[str, Container], on_change: Callable[[str, Container], None]
    ) -> None:
        try:
            self.refresh()
        except Exception as exc:
            log.debug("resync refresh failed: %s", _one_line(exc))
            return
        now = self._state.by_id if self._state else {}
        for cid, old in list(announced.items()):
            if cid not in now or now[cid].pid != old.pid:
                del announced[cid]
                self._notify(on_change, "die", old)
        for cid, c in now.items():
            if cid not in announced:
                announced[cid] = c
                self._notify(on_change, "start", c)

    @staticmethod
    def _notify(on_change: Callable[[str, Container], None], action: str, c: Container) -> None:
        try:
            on_change(action, c)
        except Exception:  # a callback bug must not kill the watch thread
            log.exception("inventory on_change(%r, %s) failed", action, c.name)

    def close(self) -> None:
        """Stop watching (closing the events stream wakes the blocked reader)."""
        self._stop.set()
        stream = self._events
        if stream is not None:
            _quiet_close(stream)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
            self._watch_thread = None
        if self._own_client and self._client is not None:
            _quiet_close(self._client)
            self._client = None
        if self._reads is not None:
            _quiet_close(self._reads)
            self._reads = None

    def __enter__(self) -> "Inventory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quiet_close(obj: Any) -> None:
    try:
        obj.close()
    except Exception:
        pass


def _one_line(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}")
