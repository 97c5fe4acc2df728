"""tc sensor: ingress and egress on host interfaces, Docker bridges, the
containers' host-side veths and eth0 inside each container's netns.

Targets can be added and removed while tracing (containers restart)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from tracer import events
from tracer.kernel.links import TargetGone, attach_tc
from tracer.text import printable
from tracer.kernel.hop_codes import IF_ROLE_SLOTS, ROLES
from tracer.sensors.base import Sensor, load_program

BPF_PROG_TYPE_SCHED_CLS = 3

log = logging.getLogger(__name__)
# Interface roles as the kernel codes them (ROLE_* from tracer/kernel/hop_codes.py).
# (ingress, egress) programs: on host interfaces, and on eth0 inside a container's netns.
PROGRAMS = {False: ("trc_tc_in", "trc_tc_eg"), True: ("trc_tc_in_ct", "trc_tc_eg_ct")}
# One body (bpf/tc.c trc_tc) serves the four programs: hook | flags << 8
# written in at load (Sensor.variants).
VARIANTS = {
    name: ("trc_tc", events.HOOKS.index(hook) | (events.FLAG_IN_CONTAINER_NS if in_ct else 0) << 8)
    for in_ct, pair in PROGRAMS.items() for name, hook in zip(pair, ("tc_ingress", "tc_egress"))
}
ROLE_CODES = {role: code for code, role in enumerate(ROLES)}  # ROLE_*, generated into the C by tracer/kernel/hop_codes.py



@dataclass(frozen=True)
class TcTarget:
    ifindex: int
    ifname: str
    role: str  # external, bridge, veth, container (eth0 inside its netns)
    netns_inode: int
    netns_path: str | None = None  # None: the host netns
    container_id: str | None = None
    container_name: str | None = None
    container_ips: tuple[str, ...] = field(default=())

    @property
    def in_container_ns(self) -> bool:
        return self.netns_path is not None

    @property
    def key(self) -> tuple[int, int]:
        return (self.netns_inode, self.ifindex)


class TcSensor(Sensor):
    name = "tc"
    source_file = "tc.c"
    needs = ("tc",)  # tcx links or clsact filters

    def __init__(self, targets: list[TcTarget], mode: str = "auto", latency: bool = False) -> None:
        self.mode = mode
        self.latency = latency
        self.pending = list(targets)
        self.links: dict[tuple[int, int], tuple[TcTarget, list]] = {}
        self.fds: dict[tuple[bool, str], int] = {}
        self.lock = threading.Lock()
        self.roles = None

    def programs(self):
        return [(name, BPF_PROG_TYPE_SCHED_CLS, -1) for pair in PROGRAMS.values() for name in pair]

    def variants(self):
        return dict(VARIANTS)

    def attach(self, bpf) -> None:
        # Interface roles in the kernel (bpf/common.h if_role): journeys end
        # at external interfaces; latency mode keys hop codes by role.
        self.roles = (bpf["if_roles"], bpf["if_roles_high"])
        for in_ct, (ingress, egress) in PROGRAMS.items():
            self.fds[(in_ct, "ingress")] = load_program(bpf, ingress, BPF_PROG_TYPE_SCHED_CLS).fd
            self.fds[(in_ct, "egress")] = load_program(bpf, egress, BPF_PROG_TYPE_SCHED_CLS).fd
        try:
            for target in self.pending:
                try:
                    self.add(target)
                except TargetGone as exc:
                    # Removed between listing and attaching (a container
                    # stopped, a veth deleted): nothing left there to trace.
                    owner = f" of container {target.container_name}" if target.container_id else ""
                    log.warning("not tracing %s%s: %s", printable(target.ifname), printable(owner), exc)
                except Exception as exc:
                    if target.container_id is None:
                        raise
                    # The container stopped between listing and attaching.
                    log.warning("not tracing %s of container %s: %s", printable(target.ifname), printable(target.container_name), exc)
        except BaseException:
            self.detach()
            raise
        self.pending = []

    def add(self, target: TcTarget) -> None:
        with self.lock:
            if target.key in self.links:
                return
            links = []
            # The role first: until it is set, a bridge or veth would read as
            # external, where journeys end (bpf/tc.c).
            host_side = self.roles is not None and not target.in_container_ns
            if host_side:
                self._set_role(target.ifindex, ROLE_CODES.get(target.role, 0) + 1)
            try:
                for direction in ("ingress", "egress"):
                    fd = self.fds[(target.in_container_ns, direction)]
                    links.append(attach_tc(fd, target.ifindex, direction, netns=target.netns_path, mode=self.mode))
            except BaseException:
                for link in links:
                    link.close()
                if host_side:
                    self._set_role(target.ifindex, 0)
                raise
            self.links[target.key] = (target, links)

    def _set_role(self, ifindex: int, value: int) -> None:
        """Role + 1 of a host interface (0: none) in the array, or in the
        hash for interfaces numbered beyond it (see if_role in bpf/common.h)."""
        low, high = self.roles
        table = low if ifindex < IF_ROLE_SLOTS else high
        table[table.Key(ifindex)] = table.Leaf(value)

    def remove(self, predicate) -> list[TcTarget]:
        """Detach targets matching predicate(target); returns them."""
        removed = []
        with self.lock:
            for key, (target, links) in list(self.links.items()):
                if predicate(target):
                    for link in links:
                        link.close()
                    if self.roles is not None and not target.in_container_ns:
                        self._set_role(target.ifindex, 0)
                    del self.links[key]
                    removed.append(target)
        return removed

    def replace_target(self, target: TcTarget) -> None:
        """The same attachment under new facts (a renamed interface, or a
        role now known: an interface taken for an external one)."""
        with self.lock:
            if target.key in self.links:
                if self.roles is not None and not target.in_container_ns:
                    self._set_role(target.ifindex, ROLE_CODES.get(target.role, 0) + 1)
                self.links[target.key] = (target, self.links[target.key][1])

    def targets(self) -> list[TcTarget]:
        with self.lock:
            return [target for target, _ in self.links.values()]

    def detach(self) -> None:
        self.remove(lambda target: True)
