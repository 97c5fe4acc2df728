"""Which interfaces the tc sensor is attached to, as the host changes.

At the start: the host's external interfaces (or the --iface ones), the
bridges of the traced containers and each container's two ends (its
host-side veth, its eth0). Then containers come and go (Docker events) and
host interfaces appear, vanish or are renamed (netlink link events): the
``Attachments`` follow them. They only attach and detach; the session
rebuilds the place book when they say something changed.
"""

from __future__ import annotations

import logging
import os
import threading

from tracer.errors import TracerError
from tracer.events import BRIDGE, CONTAINER, EXTERNAL, OTHER, VETH
from tracer.sensors.tc import TcSensor, TcTarget
from tracer.text import printable

log = logging.getLogger(__name__)


def host_netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def container_targets(c) -> list[TcTarget]:
    """The container's host-side veth and its eth0 inside its netns."""
    targets = []
    if c.host_veth_ifindex:
        targets.append(TcTarget(c.host_veth_ifindex, c.host_veth, VETH, host_netns_inode(), None, c.id, c.name, c.ips))
    if c.eth0_ifindex:
        targets.append(TcTarget(c.eth0_ifindex, "eth0", CONTAINER, c.netns_inode, c.netns_path, c.id, c.name, c.ips))
    return targets


def sweep_leftovers(targets: list[TcTarget]) -> None:
    """Remove clsact filters left by a tracer killed with SIGKILL (tcx and
    netfilter links die with their process; clsact filters do not)."""
    from tracer.kernel.links import sweep_clsact_leftovers

    for netns in {t.netns_path for t in targets}:
        try:
            removed = sweep_clsact_leftovers(netns)
        except TracerError as exc:
            log.warning("could not sweep old tc filters in %s: %s", netns or "the host netns", exc)
            continue
        if removed:
            log.warning("removed %d tc filter(s) left by an earlier tracer that was killed", removed)


class Attachments:
    """The tc sensor's targets, following the host. ``host_interfaces``:
    the host's interfaces now (inventory.Interface); ``ifaces``: --iface
    (none: every external interface)."""

    def __init__(self, tc: TcSensor, host_interfaces, ifaces: tuple[str, ...], bridges: bool = True) -> None:
        self.tc, self.host_interfaces, self.ifaces = tc, host_interfaces, ifaces
        self.bridges = bridges  # tc on the containers' bridges (not with --hooks lean)
        self._host_keys: set[tuple[int, int]] = set()  # tc targets that are host interfaces (followed by link events)
        self._lock = threading.Lock()

    def initial(self, containers) -> list[TcTarget]:
        """Where to attach at the start (the traced ``containers``' ends and bridges)."""
        host = self.host_interfaces()
        by_name = {i.name: i for i in host}
        missing = [n for n in self.ifaces if n not in by_name]
        if missing:
            raise TracerError(f"no interface named {printable(missing[0])!r} in the host netns")
        targets = self._host_targets(host)
        self._host_keys = {t.key for t in targets}
        bridges = {c.bridge for c in containers if c.bridge} if self.bridges else set()
        targets += [TcTarget(i.ifindex, i.name, BRIDGE, i.netns_inode) for i in host if i.name in bridges and i.name not in self.ifaces]
        for c in containers:
            targets += container_targets(c)
        return targets

    def _host_targets(self, host) -> list[TcTarget]:
        """Where outside traffic arrives: the --iface interfaces, or every
        external one (up, not a bridge or a container's veth, not lo)."""
        if self.ifaces:
            chosen = [i for i in host if i.name in self.ifaces]
        else:
            chosen = [i for i in host if i.role == EXTERNAL]
        return [TcTarget(i.ifindex, i.name, i.role if i.role != OTHER else EXTERNAL, i.netns_inode) for i in chosen]

    def sync_host_interfaces(self) -> bool:
        """A new (or re-created: new ifindex) interface is attached, a
        deleted one let go, a renamed one shown by its new name. True when
        something changed."""
        from tracer.kernel.links import TargetGone

        with self._lock:
            wanted = {t.key: t for t in self._host_targets(self.host_interfaces())}
            attached = {t.key: t for t in self.tc.targets()}
            changed = False
            for key in list(self._host_keys):
                now, was = wanted.get(key), attached.get(key)
                if was is None or now is None or now.role != was.role:
                    self.tc.remove(lambda t, key=key: t.key == key)  # gone (its links went with it) or another role
                    self._host_keys.discard(key)
                    changed = True
                elif now.ifname != was.ifname:  # renamed: same links, new name
                    self.tc.replace_target(now)
                    changed = True
            for key, target in wanted.items():
                if key in self._host_keys or key in attached:  # attached already (a container's bridge, say)
                    continue
                try:
                    self.tc.add(target)
                except TargetGone:
                    continue  # came and went again
                except TracerError as exc:
                    log.warning("could not attach to %s: %s", target.ifname, exc)
                    continue
                self._host_keys.add(key)
                changed = True
            return changed

    def container_died(self, container) -> None:
        self.tc.remove(lambda t: t.container_id == container.id)

    def container_started(self, container) -> None:
        """Its two ends (those of an earlier container of that name let go)
        and its network's bridge (not with --hooks lean)."""
        self.tc.remove(lambda t: t.container_id is not None and t.container_name == container.name)
        bridge = None
        if container.bridge and container.bridge_ifindex:
            bridge = TcTarget(container.bridge_ifindex, container.bridge, BRIDGE, host_netns_inode())
        targets = container_targets(container)
        if bridge is not None and self.bridges:
            targets.append(bridge)
        with self._lock:
            # A network created after the start: its bridge and its first
            # container's veth came up before inventory knew the bridge, so
            # link events attached them as external interfaces (where
            # journeys end). They take their real role in place (no moment
            # untraced); a bridge the profile leaves out is let go (as the
            # full profile's would be re-added as a bridge).
            if bridge is not None and not self.bridges and bridge.key in self._host_keys and bridge.ifname not in self.ifaces:
                self.tc.remove(lambda t: t.key == bridge.key)
                self._host_keys.discard(bridge.key)
            for target in targets:
                if target.key in self._host_keys:
                    self.tc.replace_target(target)
                    self._host_keys.discard(target.key)
                self.tc.add(target)
