"""The docker-proxy processes a trace goes through. docker-proxy relays a
published host port to its container as a second TCP connection: with
--port or --container the kernel filter follows the relayed leg to the
proxy's backend, and the proxy sensor (bpf/proxy.c) links the two legs.
``DockerProxies`` knows which proxies matter, writes their backends into the
filter and reads the kernel's links; proxies restart with their containers,
so the session has it look again when a container starts or dies."""

from __future__ import annotations

import ctypes
import logging

from tracer.kernel.kernel_filter import write_proxy_backends
from tracer.proxies import ProxyLinks, find_proxies, proxies_by_pid, read_links

log = logging.getLogger(__name__)


class DockerProxies:
    """``targets``: what is traced (targets.Targets); ``enabled``: look for
    proxies at all (trace and record; not latency or the per-sighting build)."""

    def __init__(self, targets, enabled: bool) -> None:
        self.targets = targets
        self.by_pid: dict = proxies_by_pid(self._relevant(find_proxies())) if enabled else {}
        self.links = ProxyLinks()  # every link the kernel made so far (read_links skips those it knows)
        self.read_failures = 0  # failed reads of the kernel's links (warned about once)
        self._taken_at: int | None = None  # the kernel's count of links made when all were last taken

    def __bool__(self) -> bool:
        return bool(self.by_pid)

    def _relevant(self, proxies):
        """Proxies of the traced host ports (every proxy without --port:
        --container's are picked once Docker named its addresses)."""
        ports = self.targets.ports
        return [p for p in proxies if not ports or p.host_port in ports or self.targets.containers]

    def backends(self, container_ips) -> tuple[tuple[str, int], ...]:
        """Backends of the proxies whose host port or container the filter
        names (all, when neither is named: then everything is traced)."""
        ports = self.targets.ports
        return tuple(sorted({(p.container_ip, p.container_port) for p in self.by_pid.values()
                             if p.host_port in ports or p.container_ip in container_ips}))

    def write_backends(self, bpf, container_ips) -> None:
        write_proxy_backends(bpf, self.backends(container_ips))

    def refresh(self, bpf, sensor, follow: bool, container_ips) -> None:
        """Proxies restart with their containers: new pids, maybe new
        backends. ``sensor``: the proxy sensor (None: not linking legs);
        ``follow``: the filter follows the proxies' backends."""
        if not follow and sensor is None:
            return
        self.by_pid = proxies_by_pid(self._relevant(find_proxies()))
        if sensor is not None:
            sensor.set_pids(self.by_pid)
        if follow:
            self.write_backends(bpf, container_ips)

    def read_links(self, bpf, inventory) -> list:
        """New links between proxy legs the kernel saw (bpf/proxy.c)."""

        def container_of(ip: str) -> str | None:
            c = inventory.by_ip(ip)
            return c.name if c is not None else None

        made = links_made(bpf)
        if made == self._taken_at:
            return []  # no link made since the last whole take: the map's walk is skipped
        failures = self.read_failures
        new = read_links(bpf["proxy_links"], self.by_pid, self.links, container_of, self._read_failed)
        if self.read_failures == failures:  # a failed take leaves links in the map: taken next pass
            self._taken_at = made
        return new

    def _read_failed(self, exc) -> None:
        """Linking proxy legs is a side feature: a failed read of the
        kernel's links (ENOMEM in its batch op, say) does not end the run.
        What it took is kept, the rest stays in the map for the next pass;
        the user is told once."""
        self.read_failures += 1
        if self.read_failures == 1:
            log.warning("docker-proxy links: reading the kernel's proxy_links map failed (%s), %d links taken "
                        "before it kept; trying again each pass (further failures are not reported)",
                        exc.strerror or exc, len(exc.taken))


def links_made(bpf) -> int:
    """How many links the proxy sensor has put into proxy_links so far
    (bpf/proxy.c px_links_made, read before the links: a link is in the map
    before it is counted)."""
    return int(bpf["px_links_made"][ctypes.c_int(0)].value)
