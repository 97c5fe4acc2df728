"""Our own nf_tables table: it marks the traced traffic with `meta nftrace
set 1`, so nf_tables reports every rule those packets traverse (in any
table: Docker's iptables-nft rules included) and nothing else pays for it.

The table is `inet tracer_<pid>`, its comment holds our pid and the process's
start time. It is deleted on exit; a run finds tables left by runs that died
(SIGKILL) by that comment and deletes them first. Nothing else in the ruleset
is touched. Commands go through libnftables (Debian's python3-nftables).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from dataclasses import dataclass

from tracer.errors import MissingCapability, TracerError

log = logging.getLogger(__name__)

TABLE_PREFIX = "tracer_"
FAMILY = "inet"
# Before conntrack (-200) and the raw table (-300): packets as they arrive,
# before any table's rules, so every rule they meet is reported.
EARLY_PRIORITY = -350
# Just after conntrack: the connection's both views (before and after NAT),
# so replies and the other side of NAT are marked too (the filter matches
# either side of NAT, as the BPF filter does).
CT_PRIORITY = -199
HOOKS = ("prerouting", "output")
COMMENT_RE = re.compile(r"^tracer pid (\d+) start (\d+)$")


def libnftables():
    """An `nftables.Nftables` context (JSON output), or MissingCapability."""
    try:
        import nftables  # Debian: python3-nftables (libnftables' own binding)
    except ImportError:
        raise MissingCapability("rule attribution needs libnftables' Python binding (apt install python3-nftables; "
                                "scripts/setup.sh installs it)") from None
    try:
        nft = nftables.Nftables()
    except OSError as exc:
        raise MissingCapability(f"rule attribution needs libnftables (apt install libnftables1): {exc}") from None
    return nft


def run(nft, command: str) -> str:
    rc, out, err = nft.cmd(command)
    if rc != 0:
        raise TracerError(f"nft: {' '.join(err.split()) or 'failed'} (command: {' '.join(command.split())[:200]})")
    return out


def list_ruleset_json(nft) -> list[dict]:
    """The ruleset as libnftables' JSON objects (the `nftables` list)."""
    nft.set_json_output(True)
    try:
        return json.loads(run(nft, "list ruleset") or '{"nftables": []}')["nftables"]
    finally:
        nft.set_json_output(False)


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22), or
    None when no such process: a pid reused by another process differs."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Match:
    """What marks traced traffic, in nft terms (tracer.targets.Targets'
    options: each given option must match; an option matches when either end
    does, at any view of the connection)."""

    ports: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()
    container_addrs: tuple[str, ...] = ()
    container_ports: tuple[int, ...] = ()
    proto: str | None = None

    def is_everything(self) -> bool:
        return not (self.ports or self.hosts or self.container_addrs or self.container_ports or self.proto)

    def rules(self, view: str) -> list[str]:
        """Rule bodies (without the trailing `meta nftrace set 1`) for one view:
        `packet` (the headers as they are) or `ct original` / `ct reply`."""
        def ports(where: str) -> str:
            return f"th {where}port" if view == "packet" else f"{view} proto-{'src' if where == 's' else 'dst'}"

        def addr(where: str) -> str:
            return f"ip {where}addr" if view == "packet" else f"{view} ip {where}addr"

        options: list[list[str]] = []
        if self.ports:
            s = _set(self.ports)
            options.append([f"{ports('s')} {s}", f"{ports('d')} {s}"])
        if self.hosts:
            s = _set(self.hosts)
            options.append([f"{addr('s')} {s}", f"{addr('d')} {s}"])
        if self.container_addrs or self.container_ports:
            either = []
            if self.container_addrs:
                s = _set(self.container_addrs)
                either += [f"{addr('s')} {s}", f"{addr('d')} {s}"]
            if self.container_ports:
                s = _set(self.container_ports)
                either += [f"{ports('s')} {s}", f"{ports('d')} {s}"]
            options.append(either)
        head = ["meta nfproto ipv4"]
        if view != "packet":
            head.append("ct state != untracked")
        if self.proto:
            head.append(f"meta l4proto {self.proto}")
        elif view != "packet" and (self.ports or self.container_ports):
            head.append("meta l4proto { tcp, udp }")  # nft needs it to read a ct port
        return [" ".join(head + list(combo)) for combo in itertools.product(*options)] if options else [" ".join(head)]


def _set(values) -> str:
    values = sorted(set(values), key=str)
    return str(values[0]) if len(values) == 1 else "{ " + ", ".join(map(str, values)) + " }"


class TraceTable:
    """Our table while it exists: `create()`, `update(match)`, `remove()`."""

    def __init__(self, match: Match, nft=None, pid: int | None = None) -> None:
        self.nft = nft or libnftables()
        self.pid = pid or os.getpid()
        self.name = f"{TABLE_PREFIX}{self.pid}"
        self.match = match
        self.created = False

    @property
    def comment(self) -> str:
        return f"tracer pid {self.pid} start {process_start(self.pid) or 0}"

    CHAINS = (("early", EARLY_PRIORITY, ("packet",)), ("ct", CT_PRIORITY, ("ct original", "ct reply")))

    def script(self) -> str:
        lines = [f'table {FAMILY} {self.name} {{', f'  comment "{self.comment}"']
        for hook in HOOKS:
            for chain, prio, views in self.CHAINS:
                lines.append(f"  chain {chain}_{hook} {{")
                lines.append(f"    type filter hook {hook} priority {prio}; policy accept;")
                for view in views:
                    lines += [f"    {body} meta nftrace set 1" for body in self.match.rules(view)]
                lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def rules_script(self) -> str:
        """New rules in the same chains, in one transaction: the chains (and
        their hooks) stay registered."""
        lines = []
        for hook in HOOKS:
            for chain, _prio, views in self.CHAINS:
                lines.append(f"flush chain {FAMILY} {self.name} {chain}_{hook}")
                for view in views:
                    lines += [f"add rule {FAMILY} {self.name} {chain}_{hook} {body} meta nftrace set 1"
                              for body in self.match.rules(view)]
        return "\n".join(lines) + "\n"

    def create(self) -> "TraceTable":
        sweep_leftovers(self.nft)
        # One transaction: the table with its chains and rules, or nothing.
        run(self.nft, f"add table {FAMILY} {self.name}\ndelete table {FAMILY} {self.name}\n" + self.script())
        self.created = True
        return self

    def update(self, match: Match) -> None:
        """Containers came or went: the same table with new rules, atomically."""
        self.match = match
        if self.created:
            run(self.nft, self.rules_script())

    def remove(self) -> None:
        if not self.created:
            return
        try:
            run(self.nft, f"delete table {FAMILY} {self.name}")
        except TracerError as exc:
            if "No such file" not in str(exc):
                log.warning("could not remove our nft table %s %s: %s", FAMILY, self.name, exc)
        self.created = False


def our_tables(ruleset: list[dict]) -> list[tuple[str, str, str]]:
    """(family, name, comment) of every table named like ours."""
    out = []
    for obj in ruleset:
        table = obj.get("table")
        if table and str(table.get("name", "")).startswith(TABLE_PREFIX):
            out.append((table["family"], table["name"], table.get("comment", "")))
    return out


def is_leftover(name: str, comment: str, alive=process_start) -> bool:
    """A table of ours whose process is gone (or whose pid now belongs to
    another process). A table named like ours without our comment is not
    ours: left alone."""
    m = COMMENT_RE.match(comment or "")
    if not m or name != f"{TABLE_PREFIX}{m.group(1)}":
        return False
    pid, start = int(m.group(1)), int(m.group(2))
    now = alive(pid)
    return now is None or (start != 0 and now != start)


_COMMENT_LINE = re.compile(r'^\s*comment "(?P<text>[^"]*)"\s*$', re.M)


def table_comment(nft, family: str, name: str) -> str:
    """A table's comment. libnftables' JSON has no table comments before
    nft 1.0.7 (Debian 12 has 1.0.6), so it is taken from the table's listing."""
    try:
        text = run(nft, f"list table {family} {name}")
    except TracerError:
        return ""  # gone meanwhile
    m = _COMMENT_LINE.search(text)
    return m.group("text") if m else ""


def sweep_leftovers(nft=None) -> list[str]:
    """Delete the tables of dead tracer runs; returns their names."""
    nft = nft or libnftables()
    removed = []
    for family, name, comment in our_tables(list_ruleset_json(nft)):
        comment = comment or table_comment(nft, family, name)
        if is_leftover(name, comment):
            try:
                run(nft, f"delete table {family} {name}")
                removed.append(name)
            except TracerError as exc:
                log.warning("could not remove leftover nft table %s %s: %s", family, name, exc)
    if removed:
        log.warning("removed nft table(s) %s left by an earlier tracer that was killed", ", ".join(removed))
    return removed
