"""Rule hits on the journeys' hops: which hop each rule belongs to, and the
rules in the human text and the JSON (README: rule attribution).

A packet's hits at a hook belong to the last hop of the journey at that hook
(`nf_prerouting/after` for the rules of PREROUTING, which is where the DNAT
they made shows); a hit at a hook the journey has no hop for goes to the
last hop before a drop. Live (`trace --rules`) and replayed (`show` of a
capture recorded with --rules) journeys go through the same functions.
"""

from __future__ import annotations

import json

import click

from tracer.journey_rows import JourneyRows
from tracer.sensors.hook_profile import DEFAULT, left_out
from tracer.text import printable


class RuleBook:
    """Rule hits per packet id, in the order they were met, until the packet
    is shown; ``profile``: the hook profile the journeys were traced with
    (what a rule at a hook without a hop says about it: unsighted)."""

    def __init__(self, profile: str = DEFAULT) -> None:
        self.by_packet: dict[int, list[tuple[str, dict]]] = {}
        self.profile = profile

    def add(self, pairs) -> None:
        """(packet_id, hit) pairs (tracer/rule_join.py) or (packet_id, hook, info) triples."""
        for item in pairs:
            if len(item) == 2:
                pid, hit = item
                hook, info = hit.hook, hit.rule
            else:
                pid, hook, info = item
            self.by_packet.setdefault(int(pid), []).append((hook, info))

    def pop(self, packet_ids) -> dict[int, list[tuple[str, dict]]]:
        return {pid: hits for pid in packet_ids if (hits := self.by_packet.pop(pid, None))}

    def forget_older(self, keep: int = 1 << 16) -> None:
        """Hits of packets never shown (--count reached, say) do not pile up."""
        if len(self.by_packet) > keep:
            for pid in list(self.by_packet)[: len(self.by_packet) - keep]:
                del self.by_packet[pid]


def hop_rules(jr: JourneyRows, hits_by_packet: dict[int, list[tuple[str, dict]]]) -> dict[int, list[dict]]:
    """Hop index (into jr's hops) -> the rules met there, in order."""
    out: dict[int, list[dict]] = {}
    if not hits_by_packet:
        return out
    hooks = jr.hook.values
    for j, pid in enumerate(jr.packet_id.tolist()):
        hits = hits_by_packet.get(pid)
        if not hits:
            continue
        s, e = int(jr.starts[j]), int(jr.starts[j + 1])
        names = [hooks[c] for c in jr.hook.codes[s:e].tolist()]
        last_at = {name: s + i for i, name in enumerate(names)}
        fallback = s + max((i for i, name in enumerate(names) if name != "drop"), default=e - s - 1)
        for hook, info in hits:
            at = last_at.get(hook)
            if at is None:
                # No hop at that hook (FORWARD under --hooks lean, or a lost
                # sighting): the hop before it in a pass, marked as such.
                before = [last_at[h] for h in _BEFORE.get(hook, ()) if h in last_at]
                at = max(before) if before else fallback
                info = {**info, "at_hook": hook}
            out.setdefault(at, []).append(info)
    return out


# The netfilter hooks a packet passes before each one in a pass.
_BEFORE = {"nf_forward": ("nf_prerouting",), "nf_input": ("nf_prerouting",),
           "nf_postrouting": ("nf_prerouting", "nf_forward", "nf_output")}
_HOOK_WORDS = {"nf_prerouting": "PREROUTING", "nf_input": "INPUT", "nf_forward": "FORWARD", "nf_output": "OUTPUT",
               "nf_postrouting": "POSTROUTING"}


def rule_label(info: dict) -> str:
    """`filter/DOCKER-USER #1` (the family only where it is not ip)."""
    family = "" if info.get("family") == "ip" else f"{info.get('family')} "
    where = f"{family}{info.get('table')}/{info.get('chain')}"
    kind = info.get("type")
    if kind == "policy":
        return f"{where} policy"
    if kind == "return":
        return f"{where} end"
    return f"{where} #{info['position']}" if info.get("position") else f"{where} handle {info.get('handle')}"


def rule_text(info: dict) -> str:
    """The rule as iptables prints it where iptables made it, else as nft does."""
    if info.get("iptables"):
        return info["iptables"]
    if info.get("nft"):
        return f"nft: {info['nft']}"
    return ""


def verdict_text(info: dict) -> str:
    verdict = info.get("verdict") or "?"
    return f"{verdict} {info['target']}" if info.get("target") else verdict


def unsighted(profile: str, hook: str) -> str:
    """Why a journey has no hop at ``hook`` whose rules were met: the
    profile leaves that hook out (FORWARD under --hooks lean), or it is
    traced but the packet was not sighted there: its rule ran before the
    hook's probe (filter INPUT, raw PREROUTING) or the sighting was lost."""
    return "no hop traced there" if left_out(profile, hook, None, None) else "no sighting there"


def rule_line(info: dict, color: bool, profile: str = DEFAULT) -> str:
    """One rule hit as a line of text; ``profile``: the hook profile traced
    (for a hit at a hook without a hop: why there is none)."""
    text = rule_text(info)
    verdict = verdict_text(info)
    if color and info.get("verdict") == "drop":
        verdict = click.style(verdict, fg="red", bold=True)
    # Chain names and rule comments are anyone's text: escaped for the terminal.
    hook = info.get("at_hook")
    at = f"  (at {_HOOK_WORDS.get(hook, printable(hook))}: {unsighted(profile, hook)})" if hook else ""
    return f"{printable(rule_label(info))}  {printable(text) + '  ' if text else ''}⇒ {verdict}{at}"


RULE_INDENT = " " * 15


def with_rules_text(block: memoryview, jr: JourneyRows, per_hop: dict[int, list[dict]], color: bool,
                    profile: str = DEFAULT) -> bytes:
    """The journeys' text with each hop's rules on lines of their own below
    it; ``profile``: the hook profile traced (rule_line)."""
    lines = bytes(block).decode().split("\n")
    if not per_hop:
        return bytes(block)
    out: list[str] = []
    hop_of_line = {}
    for j in range(len(jr)):
        s, e = int(jr.starts[j]), int(jr.starts[j + 1])
        for h in range(s, e):
            hop_of_line[j + 1 + h] = h  # one header line per journey, then its hops
    for i, line in enumerate(lines):
        out.append(line)
        h = hop_of_line.get(i)
        if h is not None and h in per_hop:
            out += [RULE_INDENT + rule_line(info, color, profile) for info in per_hop[h]]
    return "\n".join(out).encode()


def with_rules_json(block: memoryview, jr: JourneyRows, per_hop: dict[int, list[dict]]) -> bytes:
    """The JSON lines with `rules` on every hop and `drop_rule` on the journey."""
    lines = bytes(block).decode().split("\n")
    out = []
    for j, line in enumerate(lines[: len(jr)]):
        obj = json.loads(line)
        s = int(jr.starts[j])
        drop_rule = None
        for k, hop in enumerate(obj["hops"]):
            rules = per_hop.get(s + k, [])
            hop["rules"] = rules
            for info in rules:
                if info.get("verdict") == "drop":
                    drop_rule = info
        obj["drop_rule"] = drop_rule
        out.append(json.dumps(obj))
    return ("\n".join(out) + "\n").encode() if out else b""
