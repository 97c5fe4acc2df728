"""Netfilter sensor: BPF netfilter links on the IPv4 and IPv6 hooks of the
host netns, one just before and one just after the priority where NAT acts
(the same priorities in both families: conntrack -200, DNAT -100, SNAT +100)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tracer import events
from tracer.errors import TracerError
from tracer.kernel.bpf_syscall import NFPROTO_IPV4, NFPROTO_IPV6
from tracer.kernel.links import NetfilterLink, PriorityTaken
from tracer.sensors.base import Sensor, load_program
from tracer.sensors.hook_profile import DEFAULT, kept_anyway, nf_probe_kept

BPF_PROG_TYPE_NETFILTER = 32
BPF_NETFILTER = 45


@dataclass(frozen=True)
class NfProbe:
    name: str
    function: str  # the hook comes from nf_hook_state at run time
    hook: str
    # Priorities to try in order: a priority already taken (another table, or
    # another tracer) is refused with EBUSY, so we step away from NAT.
    priorities: range


# Conntrack is at -200, DNAT at -100 (PREROUTING, OUTPUT), SNAT at +100
# (INPUT, POSTROUTING), the filter table at 0. "before" must stay after
# conntrack so the nf_conn is there; nf_forward runs before the filter table
# so a packet the filter drops is still seen. Two programs serve all nine
# links (each reads its hook from nf_hook_state): one program per link made
# clang compile the same body nine times, about a second of start-up.
BEFORE, AFTER = "trc_nf_b", "trc_nf_a"
# One body (bpf/netfilter.c trc_nf) serves both: the NAT stage written in at
# load (Sensor.variants).
VARIANTS = {BEFORE: ("trc_nf", events.NAT_STAGES.index("before")), AFTER: ("trc_nf", events.NAT_STAGES.index("after"))}
PROBES = (
    NfProbe("pre_b", BEFORE, "prerouting", range(-101, -150, -1)),
    NfProbe("pre_a", AFTER, "prerouting", range(-99, -50)),
    NfProbe("in_b", BEFORE, "input", range(99, 50, -1)),
    NfProbe("in_a", AFTER, "input", range(101, 150)),
    NfProbe("fwd", BEFORE, "forward", range(-1, -50, -1)),  # no NAT here: stage 0 (netfilter.c)
    NfProbe("out_b", BEFORE, "output", range(-101, -150, -1)),
    NfProbe("out_a", AFTER, "output", range(-99, -50)),
    NfProbe("post_b", BEFORE, "postrouting", range(99, 50, -1)),
    NfProbe("post_a", AFTER, "postrouting", range(101, 150)),
)


def _nat_stage(probe: NfProbe) -> str | None:
    """The probe's NAT stage as its hops name it (FORWARD has none)."""
    if probe.hook == "forward":
        return None
    return "before" if probe.function == BEFORE else "after"


class NetfilterSensor(Sensor):
    name = "netfilter"
    source_file = "netfilter.c"
    needs = ("netfilter_links",)

    def __init__(self, hooks: str = DEFAULT, tc_narrowed: bool = False) -> None:
        # The hook profile (tracer/sensors/hook_profile.py): which of PROBES
        # attach; tc_narrowed: tc watches the --iface interfaces only.
        self.probes = tuple(p for p in PROBES if nf_probe_kept(hooks, "nf_" + p.hook, _nat_stage(p), tc_narrowed))
        # Hops the profile leaves out that these probes see all the same (a
        # capture's hooks_kept): said by the sensor that attaches them.
        self.kept_anyway = kept_anyway(hooks, tc_narrowed)
        self.links: list[NetfilterLink] = []
        self.priorities: dict[str, int] = {}  # probe name (+ "6" for IPv6) -> priority
        self.ipv6 = False

    def offsets(self):
        return {
            "OFF_SKB_NFCT": ("sk_buff", "_nfct", 8),
            "OFF_STATE_IN": ("nf_hook_state", "in", 8),
            "OFF_STATE_OUT": ("nf_hook_state", "out", 8),
            "OFF_STATE_NET": ("nf_hook_state", "net", 8),
            "OFF_STATE_HOOK": ("nf_hook_state", "hook", 1),
            "OFF_CT_TUPLE_ORIG": ("nf_conn", "tuplehash[0].tuple", 40),
            "OFF_CT_TUPLE_REPLY": ("nf_conn", "tuplehash[1].tuple", 40),
            "OFF_TUPLE_SRC_U3": ("nf_conntrack_tuple", "src.u3", 16),
            "OFF_TUPLE_SRC_U": ("nf_conntrack_tuple", "src.u", 2),
            "OFF_TUPLE_SRC_L3NUM": ("nf_conntrack_tuple", "src.l3num", 2),
            "OFF_TUPLE_DST_U3": ("nf_conntrack_tuple", "dst.u3", 16),
            "OFF_TUPLE_DST_U": ("nf_conntrack_tuple", "dst.u", 2),
            "OFF_TUPLE_DST_PROTONUM": ("nf_conntrack_tuple", "dst.protonum", 1),
        }

    def programs(self):
        return [(name, BPF_PROG_TYPE_NETFILTER, BPF_NETFILTER) for name in (BEFORE, AFTER)]

    def variants(self):
        return dict(VARIANTS)

    def attach(self, bpf) -> None:
        """The IPv4 hooks are required; the IPv6 ones are attached where the
        kernel has them (a kernel without IPv6 says so once on stderr)."""
        try:
            self.links += self._attach_family(bpf, NFPROTO_IPV4, "")
            try:
                self.links += self._attach_family(bpf, NFPROTO_IPV6, "6")
                self.ipv6 = True
            except PriorityTaken:  # taken: as for IPv4, a real conflict
                raise
            except TracerError as exc:
                print(f"tracer: IPv6 netfilter hooks not available ({exc}); following IPv4 only at netfilter",
                      file=sys.stderr)
                self.ipv6 = False
        except BaseException:
            self.detach()
            raise

    def _attach_family(self, bpf, pf: int, suffix: str) -> list[NetfilterLink]:
        """Every probe on one protocol family's hooks; all or none."""
        links: list[NetfilterLink] = []
        try:
            for probe in self.probes:
                fn = load_program(bpf, probe.function, BPF_PROG_TYPE_NETFILTER, BPF_NETFILTER)
                link, priority = _attach_first_free(fn.fd, probe, pf)
                links.append(link)
                self.priorities[probe.name + suffix] = priority
        except BaseException:
            for link in links:
                link.close()
            raise
        return links

    def detach(self) -> None:
        for link in self.links:
            link.close()
        self.links.clear()


def _attach_first_free(prog_fd: int, probe: NfProbe, pf: int) -> tuple[NetfilterLink, int]:
    for priority in probe.priorities:
        try:
            return NetfilterLink(prog_fd, probe.hook, priority, pf=pf), priority
        except PriorityTaken:
            continue
    family = "IPv6" if pf == NFPROTO_IPV6 else "IPv4"
    raise PriorityTaken(f"no free {family} netfilter priority for {probe.hook} in {probe.priorities}: "
                      "is another tracer running?")
