"""The report's picture of the host's path, drawn as inline SVG by hand.

One column per path group (tracer/paths.py), the way a Docker networking
chapter draws it: the external interface, PREROUTING where DNAT happens,
FORWARD, POSTROUTING, docker0, the container's veth and its eth0, and the way
back through MASQUERADE or reverse NAT. Boxes are the places in the order the
group's packets passed them; each arrow is labelled with the packets that made
that step, its median and its p99; NAT is named at the box where it happened;
drops are marked in red at the box where the dropped packets were last seen.
"""

from __future__ import annotations

import html

from tracer.paths import Group, PathSummary
from tracer.sensors.hook_profile import unseen_after
from tracer.units import spaced_duration_text

LANE_W = 275
NODE_W = 160
NODE_H = 32
GAP = 30  # between boxes: the arrow and its label
TOP = 64  # lane title
MAX_LANES = 8
PER_ROW = 4

_HOOK_NAMES = {
    "nf_prerouting": "PREROUTING", "nf_input": "INPUT", "nf_forward": "FORWARD",
    "nf_output": "OUTPUT", "nf_postrouting": "POSTROUTING",
}
_FILL = {"tc": "#e8f1fb", "nf": "#eaf6ea", "drop": "#fdecea", "container": "#fff3e0"}
_STROKE = {"tc": "#5b8fc9", "nf": "#5aa35a", "drop": "#c62828", "container": "#e08a1e"}


duration = spaced_duration_text  # the report's durations, from the one units helper


def place_text(group: Group, label: str) -> tuple[str, str, str]:
    """(first line, second line, kind) of a place's box."""
    device = group.device(label)
    container = group.container(label)
    hook, _, rest = label.partition("@")
    if label.startswith("tc_"):
        role = rest or "?"
        kind = "container" if role == "container" else "tc"
        return device or role, f"tc {hook[3:]} · " + (container or role), kind
    if label.startswith("nf_"):
        name, _, stage = hook.partition("/")
        first = _HOOK_NAMES.get(name, name) + (f" {stage} NAT" if stage else "")
        return first, "netfilter" + (f" · {device}" if device else ""), "nf"
    return label, "", "drop"


def _text(x: float, y: float, s: str, size: float = 11, **attrs) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{extra}>{html.escape(s)}</text>'


def _lane(group: Group, x0: float, y0: float, hooks: str = "all") -> tuple[list[str], float]:
    """SVG elements of one group's column, and its height."""
    out = []
    v = group.verdicts
    out.append(_text(x0 + 4, y0 + 14, f"{group.entry} → {group.exit}", 13, font_weight="600"))
    kind = {"original": "requests", "reply": "replies"}.get(group.direction, "direction unknown")
    out.append(_text(x0 + 4, y0 + 30, f"{group.nat or 'no NAT'} · {kind}", 11, fill="#444"))
    counts = f"{group.packets:,} packet" + ("" if group.packets == 1 else "s")
    if v.get("dropped"):
        counts += f" · {v['dropped']:,} dropped"
    if v.get("unknown"):
        counts += f" · {v['unknown']:,} left our view"
    out.append(_text(x0 + 4, y0 + 45, counts, 10.5, fill="#c62828" if v.get("dropped") else "#666"))
    drops_at: dict[str, list[tuple[str, int]]] = {}
    for (where, reason), n in group.drops.most_common():
        drops_at.setdefault(where, []).append((reason, n))
    segments = {(s.src, s.dst): s for s in group.path_segments()}
    path = group.path
    y = y0 + TOP
    cx = x0 + 4 + NODE_W / 2
    named: set[str] = set()  # NAT named once, where the path's packets met it first
    for i, label in enumerate(path):
        first, second, kind = place_text(group, label)
        out.append(f'<g class="place" data-label="{html.escape(label)}"><title>{html.escape(label)}</title>'
                   f'<rect x="{x0 + 4:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="4" '
                   f'fill="{_FILL[kind]}" stroke="{_STROKE[kind]}"/>'
                   + _text(x0 + 10, y + 13, _fit(first, 24), 10.5, font_weight="600")
                   + _text(x0 + 10, y + 26, _fit(second, 30), 9, fill="#555") + "</g>")
        notes: list[tuple[str, str]] = []
        nat = group.translation(label)
        if nat and nat not in named:
            named.add(nat)
            notes += [(line, "#6a1b9a") for line in _nat_lines(group, nat)]
        for reason, n in drops_at.pop(label, []):
            # under --hooks lean, possibly at a hook after this one that has no place (drop_place)
            notes.append((f"✕ {n:,} dropped" + (" after" if unseen_after(hooks, label) else ""), "#c62828"))
            notes.append((f"  {reason}", "#c62828"))
        for j, (line, color) in enumerate(notes[:4]):
            out.append(_text(x0 + NODE_W + 9, y + 11 + 11 * j, _fit(line, 19), 9, fill=color, class_="note"))
        if i + 1 < len(path):
            seg = segments.get((label, path[i + 1]))
            y1, y2 = y + NODE_H, y + NODE_H + GAP
            out.append(f'<line x1="{cx:.1f}" y1="{y1 + 1:.1f}" x2="{cx:.1f}" y2="{y2 - 2:.1f}" stroke="#777" '
                       f'stroke-width="1.4" marker-end="url(#arrow)"/>')
            if seg is not None:
                lat = seg.latency
                text = f"{seg.packets:,} · p50 {duration(lat.value_at(50))} · p99 {duration(lat.value_at(99))}"
                out.append(_text(cx + 6, y1 + GAP / 2 + 4, text, 9.5, fill="#333", class_="edge"))
        y += NODE_H + GAP
    y -= GAP
    rest = [(where, reason, n) for where, items in drops_at.items() for reason, n in items]
    extra = []
    for where, reason, n in rest:
        extra.append((f"✕ {n:,} dropped after {where}: {reason}", "#c62828"))
    if group.off_path:
        extra.append((f"{group.off_path:,} packets took another way", "#666"))
    for j, (line, color) in enumerate(extra[:4]):
        out.append(_text(x0 + 4, y + 18 + 13 * j, _fit(line, 44), 9.5, fill=color))
    return out, y - y0 + 18 + 13 * len(extra[:4])


def _nat_lines(group: Group, nat: str) -> list[str]:
    """'dst → 172.17.0.2:8080' -> ['DNAT', '→ 172.17.0.2:8080'] (the name by the group's direction)."""
    side, _, new = nat.partition(" ")
    return [_nat_name(group.direction, side), new]


def _nat_name(direction: str, side: str) -> str:
    if direction == "reply":
        return "reverse SNAT" if side == "dst" else "reverse DNAT"
    return "DNAT" if side == "dst" else "SNAT (MASQUERADE)"


def _fit(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def path_svg(summary: PathSummary, max_lanes: int = MAX_LANES, hooks: str = "all") -> str:
    """The picture, or '' when no packet was seen."""
    groups = [g for g in summary.groups if g.path][:max_lanes]
    if not groups:
        return ""
    body, heights = [], []
    rows = [groups[i: i + PER_ROW] for i in range(0, len(groups), PER_ROW)]
    y = 0.0
    for row in rows:
        tallest = 0.0
        for k, g in enumerate(row):
            parts, h = _lane(g, k * LANE_W, y, hooks)
            body += parts
            tallest = max(tallest, h)
        y += tallest + 28
        heights.append(tallest)
    width = LANE_W * min(PER_ROW, len(groups))
    defs = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#777"/></marker></defs>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="path-picture" viewBox="0 0 {width} {y:.0f}" '
            f'width="{width}" height="{y:.0f}" font-family="system-ui, sans-serif" role="img" '
            f'aria-label="the host\'s path per group of packets">{defs}{"".join(body)}</svg>')
