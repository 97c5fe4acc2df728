"""Hook profiles: which hooks the sensors attach to (`--hooks`).

``all`` (the default) is every hop a packet passes: tc on the external
interfaces, the Docker bridges, the containers' veths and eth0, and the
netfilter hooks on both sides of NAT. ``lean`` leaves out the hops whose
facts the next hop shows too, so a forwarded packet costs 5 BPF runs
instead of 9: PREROUTING and POSTROUTING before NAT (the addresses before
NAT are the previous hop's: a NAT label compares consecutive hops), INPUT
before NAT (nothing acts between PREROUTING after NAT and it but routing),
FORWARD (no NAT there), and tc on the bridges (docker0: between
POSTROUTING and the veth's egress on the way in, between PREROUTING and
FORWARD on the way out). OUTPUT before NAT stays: it is a host-sent
packet's first sighting, the only one with its addresses before OUTPUT's
DNAT. With --iface, PREROUTING before NAT stays too: a packet arriving on
an interface tc does not watch has no earlier hop. Journeys end at the same sightings (a container's eth0 ingress, an
external interface's egress, INPUT after NAT, a drop): the kernel's
assembly does not depend on which hops come before those.
"""

from __future__ import annotations

from typing import Sequence

HOOK_PROFILES = ("all", "lean")
DEFAULT = "all"

# The hops a profile leaves out as the journeys name them: (hook, nat_stage
# or None, the interface role of a tc hop or None). The one statement of a
# profile: the sensors' choices below are read from it.
LEFT_OUT_HOPS = {
    "all": (),
    "lean": (("nf_prerouting", "before", None), ("nf_input", "before", None), ("nf_forward", None, None),
             ("nf_postrouting", "before", None), ("tc_ingress", None, "bridge"), ("tc_egress", None, "bridge")),
}


def check(profile: str) -> str:
    if profile not in HOOK_PROFILES:
        raise ValueError(f"unknown hook profile {profile!r} (one of: {', '.join(HOOK_PROFILES)})")
    return profile


def nf_probe_kept(profile: str, hook: str, nat_stage: str | None, tc_narrowed: bool = False) -> bool:
    """Whether the netfilter probe at ``hook`` (as journeys name it:
    nf_prerouting, ...) and ``nat_stage`` is attached in this profile.
    ``tc_narrowed`` (--iface): tc does not see every packet before
    PREROUTING, so PREROUTING before NAT stays, or a packet arriving on
    another interface would have no hop with its addresses before DNAT."""
    if tc_narrowed and (hook, nat_stage) == ("nf_prerouting", "before"):
        return True
    return not left_out(profile, hook, nat_stage, None)


def kept_anyway(profile: str, tc_narrowed: bool) -> tuple[str, ...]:
    """The hops ``profile`` leaves out that are attached all the same, as
    `stats` labels them: ("nf_prerouting/before",) for lean with --iface.
    A capture says so in ``hooks_kept`` (docs/capture-format.md)."""
    return tuple(hook if stage is None else f"{hook}/{stage}" for hook, stage, _ in LEFT_OUT_HOPS[check(profile)]
                 if hook.startswith("nf_") and nf_probe_kept(profile, hook, stage, tc_narrowed))


def named(metadata: dict) -> str:
    """A capture's hook profile as `stats` and the report name it: its
    ``hooks`` (``all`` when absent: older captures), then the hops it
    attached beyond the profile, ``hooks_kept`` (``lean + nf_prerouting/before``)."""
    kept = metadata.get("hooks_kept")
    return with_kept(metadata.get("hooks", "all"), [k.strip() for k in kept.split(",")] if kept else ())


def with_kept(profile: str, kept: Sequence[str]) -> str:
    """A profile, then the hops attached beyond it (kept_anyway): ``lean + nf_prerouting/before``."""
    return profile + (f" + {', '.join(kept)}" if kept else "")


def start_words(profile: str, kept: tuple[str, ...] = ()) -> str:
    """What a live run's first line says of its profile: nothing for every
    hook, else ", lean hooks" and the hops kept anyway (kept_anyway)."""
    return f", {profile} hooks" + "".join(f" + {hop}" for hop in kept) if profile != "all" else ""


def traces_bridges(profile: str) -> bool:
    """Whether tc attaches to the Docker bridges in this profile."""
    return not (left_out(profile, "tc_ingress", None, "bridge") or left_out(profile, "tc_egress", None, "bridge"))


def left_out(profile: str, hook: str, nat_stage: str | None, role: str | None) -> bool:
    """Whether a hop (hook, NAT stage, interface role) is one the profile
    does not attach to: what a full journey has that a lean one lacks."""
    for h, stage, r in LEFT_OUT_HOPS[check(profile)]:
        if hook == h and (stage is None or stage == nat_stage) and (r is None or r == role):
            return True
    return False


# Under lean, the left-out hooks where a packet last seen at a kept hop may
# have been dropped: the filter table's FORWARD and INPUT run after
# PREROUTING after NAT, and neither has a hop of its own.
_DROPPED_UNSEEN_AFTER = {"lean": {"nf_prerouting/after": ("FORWARD", "INPUT")}}


def placed_by(*profiles: str) -> str:
    """The profile drops are placed by, from the profiles of the files read
    (recorded_hooks.RecordedHooks.placing): lean if any file is, since any
    lean file's FORWARD drop is last seen at PREROUTING after NAT, and
    "after" that hop is true of every file's; else every hook (a profile
    this version does not know included)."""
    return "lean" if "lean" in profiles else DEFAULT


def unseen_after(profile: str, last_seen: str) -> tuple[str, ...] | None:
    """The left-out hooks (as netfilter names them: ("FORWARD", "INPUT")) where a
    packet of ``profile`` (placed_by: RecordedHooks.placing) last
    seen at the hop labelled ``last_seen`` may have been dropped, or None:
    the drop was where it was last seen."""
    return _DROPPED_UNSEEN_AFTER.get(profile, {}).get(last_seen)


def left_out_place(profile: str, name: str, roles: dict[str, str | None] | None = None) -> bool:
    """Whether ``name``, as `export --at` takes it (a hop label such as
    ``nf_forward`` or ``tc_egress@bridge``, ``IFNAME:LABEL``, an interface
    name or role), is a place the profile does not attach to; ``roles``:
    the interface role of each interface name the capture has."""
    label = name.split(":", 1)[1] if ":" in name else name
    if label.startswith(("nf_", "tc_")):
        hook_stage, _, role = label.partition("@")
        hook, _, stage = hook_stage.partition("/")
        return left_out(profile, hook, stage or None, role or None)
    role = (roles or {}).get(name, name)
    return role is not None and left_out(profile, "tc_ingress", None, role)


def drop_place(profile: str, last_seen: str, seen: str | None = None) -> str:
    """Where a capture of ``profile`` can place a drop last seen at the
    hop labelled ``last_seen``: under lean a drop after PREROUTING after
    NAT may be the filter table's in FORWARD or INPUT, which it does not
    trace, so it says "after" that hop and why, not the hop itself.
    ``seen``: the words when the drop is placed at ``last_seen`` itself
    (default: the label alone)."""
    unseen = unseen_after(profile, last_seen)
    if unseen:
        return f"after {last_seen} ({'/'.join(unseen)} not traced: --hooks {profile})"
    return last_seen if seen is None else seen
