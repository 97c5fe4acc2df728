"""A connection's way through the host, in words (`tracer explain`): from the
journeys of its first packet and of the first reply, with the rules each
netfilter hook applied (journey JSON with `rules` per hop, README).

Each step is one sentence: where the packet arrived, what each hook's rules
decided (the DNAT that sent it to a container, the FORWARD rule that let it
through, the MASQUERADE that rewrote its source, the rule that dropped it),
where it was delivered or left. Translations with no rule behind them are
conntrack applying the connection's NAT (replies never pass the nat rules).
"""

from __future__ import annotations

from tracer.journeys import hop_label
from tracer.rule_render import rule_label, rule_text, unsighted
from tracer.sensors.hook_profile import unseen_after

HOOK_WORDS = {"nf_prerouting": "PREROUTING", "nf_input": "INPUT", "nf_forward": "FORWARD",
              "nf_output": "OUTPUT", "nf_postrouting": "POSTROUTING"}
# A tc hop in a sentence ("Dropped after tc ingress on trc-host").
TC_WORDS = {"tc_ingress": "tc ingress", "tc_egress": "tc egress"}
FLAG_WORDS = {"S": "SYN", "SA": "SYN-ACK", "A": "ACK", "PA": "data", "FA": "FIN", "R": "RST", "RA": "RST"}


def ref(rule: dict) -> str:
    """`filter/DOCKER-USER #1 (-A DOCKER-USER ... -j DROP)`."""
    text = rule_text(rule)
    return f"{rule_label(rule)} ({text})" if text else rule_label(rule)


def packet_name(journey: dict) -> str:
    flags = journey.get("tcp_flags") or ""
    proto = journey.get("protocol") or "packet"
    return f"{proto} {FLAG_WORDS.get(flags, flags)}".strip() if proto == "tcp" else proto


def _hook_groups(hops: list[dict]) -> list[tuple[str, list[dict], dict | None]]:
    """Consecutive hops of one netfilter hook (before/after NAT together),
    each with the hop before them (None: the first), whose addresses its
    NAT is told against: under --hooks lean, PREROUTING's hop before NAT is
    the tc hop before it. Rules met at a hook the journey has no hop for
    (``at_hook``: FORWARD under lean, a raw PREROUTING drop on the tc hop
    before it) are a group of their own after their hop's, with its
    addresses (no NAT between them), marked ``untraced``."""
    groups: list[tuple[str, list[dict], dict | None]] = []
    prev = None
    for hop in hops:
        rules = hop.get("rules", [])
        if hop["hook"] in HOOK_WORDS:
            own = dict(hop, rules=[r for r in rules if not r.get("at_hook")])
            if groups and groups[-1][0] == hop["hook"]:
                groups[-1][1].append(own)
            else:
                groups.append((hop["hook"], [own], prev))
        for at in dict.fromkeys(r["at_hook"] for r in rules if r.get("at_hook") in HOOK_WORDS):
            groups.append((at, [dict(hop, rules=[r for r in rules if r.get("at_hook") == at], untraced=True)], hop))
        prev = hop
    return groups


def _nat_change(before: dict, after: dict, back: str = "") -> list[str]:
    out = []
    if before["dst"] != after["dst"]:
        out.append(f"destination{back} to {after['dst']}")
    if before["src"] != after["src"]:
        out.append(f"source{back} to {after['src']}")
    return out


def hook_sentence(hook: str, hops: list[dict], prev: dict | None, direction: str | None, profile: str = "all") -> str:
    rules = [r for h in hops for r in h.get("rules", [])]
    where = HOOK_WORDS[hook] + (f" ({unsighted(profile, hook)})" if hops[0].get("untraced") else "")
    start = prev if prev is not None else hops[0]
    changes = _nat_change(start, hops[-1])
    back = _nat_change(start, hops[-1], " back") if direction == "reply" else changes
    parts = []
    dropped = next((r for r in rules if r.get("verdict") == "drop"), None)
    nat_rule = next((r for r in rules if r.get("table") == "nat" and r.get("type") == "rule"
                     and r.get("verdict") in ("accept", "stop")), None)
    if changes:
        how = " and ".join(changes)
        if nat_rule is not None:
            parts.append(f"{ref(nat_rule)} translated its {how}")
        else:
            parts.append(f"conntrack translated its {' and '.join(back)} (the connection's NAT, set up by its first "
                         "packet; later packets do not pass the nat rules)")
    if nat_rule is not None and not changes:
        parts.append(f"{ref(nat_rule)} matched")
    if dropped is not None:
        parts.append(f"dropped by {ref(dropped)}")
    else:
        decided = [r for r in rules if r.get("table") != "nat" and r.get("verdict") in ("accept", "drop")]
        if decided:
            r = decided[-1]
            parts.append(("accepted by " if r.get("type") == "rule" else "no rule decided: ") + ref(r))
    if not parts:
        if rules:
            parts.append("no rule matched" + (f" ({', '.join(rule_label(r) for r in rules if r.get('type') == 'policy')})"
                                              if any(r.get("type") == "policy" for r in rules) else ""))
        else:
            parts.append("no rule of any table matched")
    jumps = [r for r in rules if r.get("verdict") in ("jump", "goto")]
    via = " (via " + ", ".join(f"{rule_label(r)} → {r.get('target')}" for r in jumps) + ")" if jumps else ""
    return f"{where}: {'; '.join(parts)}{via}."


def journey_steps(journey: dict, hooks: str = "all") -> list[str]:
    """The sentences of one journey; ``hooks``: the hook profile it was
    traced with (where a drop can be placed)."""
    hops = [h for h in journey["hops"] if h["hook"] != "drop"]
    if not hops:
        return ["No sighting."]
    first, last = hops[0], hops[-1]
    steps = []
    if first.get("container") and first["hook"].startswith("tc_"):
        steps.append(f"Left container {first['container']}'s {first['ifname']} from {first['src']} to {first['dst']}.")
    else:
        steps.append(f"Arrived on {first['ifname']} from {first['src']} for {first['dst']}.")
    for hook, group, prev in _hook_groups(journey["hops"]):
        steps.append(hook_sentence(hook, group, prev, journey.get("direction"), hooks))
    if journey.get("verdict") == "dropped":
        reason = journey.get("drop_reason") or "dropped"
        where = HOOK_WORDS.get(last["hook"]) or TC_WORDS.get(last["hook"], last["hook"])
        rule = next((r for h in hops for r in h.get("rules", []) if r.get("verdict") == "drop"), None)
        if rule is not None and rule.get("at_hook") in HOOK_WORDS:  # its rule says where: a hook with no hop
            unseen = f" in {HOOK_WORDS[rule['at_hook']]} ({unsighted(hooks, rule['at_hook'])}),"
        elif rule is None and (hooks_unseen := unseen_after(hooks, hop_label(last["hook"], last.get("nat_stage"), None))):
            # No rule said where: the profile's left-out hooks it may have been dropped in.
            unseen = f" in {' or '.join(hooks_unseen)} (not traced: --hooks {hooks}),"
        else:  # dropped at its last hop, by the rule reported there if any
            unseen = ""
        steps.append(f"Dropped{unseen} after {where} on {last['ifname']} (kernel reason {reason}).")
    elif last.get("container") and last["hook"] == "tc_ingress":
        path = [h["ifname"] for h in hops if h["hook"] == "tc_egress" and h["ifname"]]
        through = f" through {' and '.join(dict.fromkeys(path))}" if path else ""
        steps.append(f"Delivered{through} to container {last['container']}'s {last['ifname']} at {last['dst']}.")
    elif last["hook"] == "nf_input":
        steps.append(f"Delivered to a local socket at {last['dst']}.")
    elif last["hook"] == "tc_egress":
        steps.append(f"Left on {last['ifname']} from {last['src']} toward {last['dst']}.")
    else:
        steps.append(f"Last seen at {last['hook']} on {last['ifname']} ({journey.get('verdict')}).")
    return steps


def explain(request: dict, reply: dict | None, waited_s: float | None = None, hooks: str = "all") -> str:
    """The explanation of a connection from its first packet's journey and
    the first reply's (None: none came), traced with hook profile ``hooks``."""
    h0 = next(h for h in request["hops"] if h["hook"] != "drop")
    lines = [f"Connection {request.get('protocol')} {h0['src']} → {h0['dst']}"
             + (f"  [{request['container']}]" if request.get("container") else "")]
    lines.append(f"The first packet ({packet_name(request)}):")
    lines += [f"  {i}. {s}" for i, s in enumerate(journey_steps(request, hooks), 1)]
    if reply is not None:
        lines.append(f"The reply ({packet_name(reply)}):")
        lines += [f"  {i}. {s}" for i, s in enumerate(journey_steps(reply, hooks), 1)]
    elif request.get("verdict") != "dropped":
        lines.append(f"No reply seen{f' within {waited_s:.0f} s' if waited_s else ''}.")
    return "\n".join(lines)
