"""Rule attribution while tracing (`--rules`): our nft table marks the
traced traffic, nf_tables reports every rule those packets meet, and each
report becomes a RuleHit: the packet's fingerprint and addresses there, the
hook, and the rule named as iptables and nft name it (tracer/kernel/ruleset.py).
tracer/rule_join.py joins hits to the journeys of the same packets.
"""

from __future__ import annotations

import logging
import select
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

from tracer.kernel.nft_table import FAMILY as OWN_FAMILY, TABLE_PREFIX, Match, TraceTable, libnftables
from tracer.kernel.nft_trace import NEW_GENERATION, OVERRUN, TraceEvent, TraceSocket
from tracer.kernel.ruleset import FAMILIES, IPTABLES_TABLES, Ruleset, check_rule_attribution, read_ruleset

log = logging.getLogger(__name__)

HOOK_NAMES = {"prerouting": "nf_prerouting", "input": "nf_input", "forward": "nf_forward",
              "output": "nf_output", "postrouting": "nf_postrouting"}
_IP = struct.Struct(">BBHHHBBH4s4s")

# Decoding reports is slower than a busy host sends them: when the reader
# is this far behind (time since it last found the socket empty), it throws
# the oldest away unread, so memory and the wait of the journeys shown only
# once their rules are in (tracer/live.py) stay bounded.
MAX_LAG_NS = 2_000_000_000
# Decoded reports waiting for the trace loop: past this many the oldest go.
MAX_ITEMS = 50_000
# Datagrams per read: the reader sees the stop flag between reads.
BATCH = 256
# At the stop: read what is waiting for this long, then count and throw
# away the rest (for at most STOP_SKIP_S), so a backlog never delays exit.
STOP_READ_S = 0.2
STOP_SKIP_S = 0.3


@dataclass(slots=True)
class RuleHit:
    """One rule (or chain policy, or chain end) a traced packet met."""

    ktime: int  # when user space read the report (CLOCK_MONOTONIC)
    hook: str  # nf_prerouting ... (the base chain's hook)
    key: tuple  # (protocol, ip_id, length, seq, ack): the journey fingerprint's NAT-invariant part
    saddr: int  # addresses there (network order as integers, like the journey tuples)
    daddr: int
    sport: int
    dport: int
    rule: dict  # JSON-ready: family, table, chain, position, handle, type, verdict, target, iptables, nft


def packet_facts(network: bytes, transport: bytes) -> tuple | None:
    """(key, saddr, daddr, sport, dport) of an IPv4 header as nf_tables
    reported it; None for anything else. The key is what tracer's kernel
    fingerprint holds (tracer/kernel: bpf/common.h parse_ipv4): TCP seq/ack;
    UDP length; ICMP type/code and sequence; echo id as the source port."""
    if len(network) < 20 or network[0] >> 4 != 4:
        return None
    _vihl, _tos, length, ip_id, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(network)
    saddr, daddr = int.from_bytes(src, "big"), int.from_bytes(dst, "big")
    seq = ack = sport = dport = 0
    t = transport
    if frag & 0x1FFF == 0 and len(t) >= 8:
        if proto == 6 and len(t) >= 14:
            sport, dport, seq, ack = struct.unpack_from(">HHII", t)
        elif proto == 17:
            sport, dport, seq = struct.unpack_from(">HHH", t)
        elif proto == 1:
            seq, sport, ack = struct.unpack_from(">H2xHH", t)
    return (proto, ip_id, length, seq, ack), saddr, daddr, sport, dport


def rule_info(ev: TraceEvent, ruleset: Ruleset) -> dict:
    """The JSON-ready description of what an event names."""
    family = FAMILIES.get(ev.family, str(ev.family))
    rule = ruleset.rule(family, ev.table, ev.handle) if ev.handle else None
    verdict = ev.verdict or ev.policy or ("return" if ev.type == "return" else None)
    iptables = rule.iptables if rule else None
    if ev.type == "policy" and family == "ip" and ev.table in IPTABLES_TABLES and verdict:
        iptables = f"-P {ev.chain} {verdict.upper()}"
    return {"family": family, "table": ev.table, "chain": ev.chain, "type": ev.type,
            "position": rule.position if rule else None, "handle": ev.handle or None,
            "verdict": verdict, "target": ev.target, "iptables": iptables, "nft": rule.nft if rule else None}


class HitResolver:
    """Trace events -> RuleHits. The kernel sends a packet's headers, iif and
    oif with the first event of each base chain it evaluates, under an id
    per skb: later events of that id (rules in chains it jumped to) take
    them, and the hook of that base chain, from here."""

    MAX_IDS = 1 << 16

    def __init__(self, load: Callable[[], Ruleset], own_table: tuple[str, str] | None = None) -> None:
        self.load = load
        self.own = own_table
        self.ruleset = load()
        self.stale = False
        self.missed: set[tuple] = set()  # rules not found even after a reload, this generation
        self.packets: dict[int, tuple] = {}  # trace id -> (hook, facts)
        self.infos: dict[tuple, dict] = {}  # one dict per distinct rule+verdict, shared
        self.events = self.unresolved = self.reloads = 0

    def feed(self, items: list) -> list[RuleHit]:
        hits = []
        for ev in items:
            if ev is NEW_GENERATION:
                self.stale = True
                continue
            if ev is OVERRUN:  # reports lost: a packet's headers among them, perhaps a commit
                self.stale = True
                self.packets.clear()
                continue
            self.events += 1
            family = FAMILIES.get(ev.family, str(ev.family))
            if (family, ev.table) == self.own or (family == OWN_FAMILY and ev.table.startswith(TABLE_PREFIX)):
                # Marking rules, ours or another tracer's (nf_tables sends every
                # listener every report); the next base chain sends the headers again.
                continue
            if ev.network:
                facts = packet_facts(ev.network, ev.transport)
                chain = self._chain(family, ev.table, ev.chain)
                hook = HOOK_NAMES.get(chain.hook) if chain is not None and chain.hook else None
                if len(self.packets) >= self.MAX_IDS:
                    self.packets.clear()
                self.packets[ev.trace_id] = (hook, facts)
            if ev.type == "rule" and not ev.handle:
                continue  # the kernel's handle-0 entries name no rule
            hook, facts = self.packets.get(ev.trace_id, (None, None))
            if hook is None or facts is None:
                self.unresolved += 1
                continue
            hits.append(RuleHit(ev.ktime, hook, *facts, self._info(ev, family)))
        return hits

    def _fresh(self) -> None:
        if self.stale:
            self._reload()

    def _reload(self) -> None:
        try:
            self.ruleset = self.load()
        except Exception as exc:  # keep naming rules from the last good read
            log.warning("could not read the ruleset again: %s", exc)
        self.stale = False
        self.missed.clear()
        self.infos.clear()
        self.reloads += 1

    def _chain(self, family: str, table: str, name: str):
        self._fresh()
        chain = self.ruleset.chain(family, table, name)
        if chain is None and (family, table, name) not in self.missed:
            self._reload()  # a chain made since we last looked
            chain = self.ruleset.chain(family, table, name)
            if chain is None:
                self.missed.add((family, table, name))
        return chain

    def _info(self, ev: TraceEvent, family: str) -> dict:
        self._fresh()
        key = (family, ev.table, ev.chain, ev.type, ev.handle, ev.verdict, ev.target, ev.policy)
        info = self.infos.get(key)
        if info is None:
            if ev.handle and self.ruleset.rule(family, ev.table, ev.handle) is None and key not in self.missed:
                self._reload()  # a rule added since we last looked
                if self.ruleset.rule(family, ev.table, ev.handle) is None:
                    self.missed.add(key)
            info = self.infos[key] = rule_info(ev, self.ruleset)
        return info


class RuleTracer:
    """Our table plus the trace subscription: `start()`, `take()` the hits
    so far, `update(match)` when containers change, `close()` (removes the
    table). A thread of its own reads and parses the reports as they come (so
    the socket's buffer does not overflow); `take()` names their rules, on
    the caller's thread, so a hit is never later than the caller's next look
    even while the ruleset is being read again after a change."""

    def __init__(self, match: Match) -> None:
        self.match = match
        self.table: TraceTable | None = None
        self.sock: TraceSocket | None = None
        self.resolver: HitResolver | None = None
        self._items: list = []  # parsed reports (and NEW_GENERATION marks) not yet taken
        # Every report of a packet that passed before this (CLOCK_MONOTONIC
        # ns) is among the items read: the socket was empty then.
        self._watermark = time.monotonic_ns()
        self.watermark = self._watermark  # as of the last take()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.dropped = 0  # reports thrown away unread while running (the reader was behind)
        self.unread = 0  # reports still waiting at the stop, thrown away
        self.unread_more = False  # ... and the socket was still not empty

    def start(self) -> "RuleTracer":
        check_rule_attribution()
        try:
            self.sock = TraceSocket()  # subscribed before our rules exist: no report is missed
            self.table = TraceTable(self.match).create()
            self.sock.read(time.monotonic_ns)  # our own commit's notice: the ruleset read next includes it
            reader = libnftables()
            self.resolver = HitResolver(lambda: read_ruleset(reader), (OWN_FAMILY, self.table.name))
        except BaseException:
            self.close()
            raise
        self._watermark = self.watermark = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="tracer-rules", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        now = time.monotonic_ns
        sock = self.sock
        try:
            while not self._stop.is_set():
                mark = now()
                dropped = 0
                if mark - self._watermark > MAX_LAG_NS:
                    # Behind the kernel by more than MAX_LAG_NS: throw the
                    # oldest reports away unread (far cheaper than decoding
                    # them) rather than let the backlog and the journeys
                    # waiting on it grow without limit.
                    dropped = sock.skip(0.05)
                    items = [OVERRUN] if dropped else []
                else:
                    if sock.empty:  # nothing was left at the last look: wait for more
                        ready, _, _ = select.select([sock], [], [], 0.05)
                        if not ready:
                            with self._lock:
                                self._watermark = mark
                            continue
                        mark = now()
                    items = sock.read(now, BATCH)  # bounded: the stop flag is seen between batches
                with self._lock:
                    self.dropped += dropped
                    self._items += items
                    if len(self._items) > MAX_ITEMS:  # the trace loop is behind: the oldest go
                        cut = len(self._items) - MAX_ITEMS
                        self.dropped += sum(1 for item in self._items[:cut] if item)
                        self._items = [OVERRUN] + self._items[cut:]  # headers and a commit may be among them
                    if sock.empty:  # whatever came before `mark` is in
                        self._watermark = mark
        except Exception as exc:  # say it once; tracing goes on without rules
            self.error = str(exc)
            log.warning("rule attribution stopped: %s", exc)

    def take(self) -> list[RuleHit]:
        """The hits read so far; ``watermark`` says up to when they are all in."""
        with self._lock:
            items, self._items = self._items, []
            self.watermark = self._watermark
        return self.resolver.feed(items) if items else []

    def update(self, match: Match) -> None:
        self.match = match
        if self.table is not None:
            self.table.update(match)

    def stop(self) -> list[RuleHit]:
        """Stop marking and reading; the hits not yet taken. Bounded in time
        whatever the backlog: what is still waiting after a short last read
        is thrown away and counted (``unread``)."""
        if self.table is not None:
            self.table.remove()
        if self._thread is not None:
            time.sleep(0.05)  # reports of packets in flight as the table went
            self._stop.set()
            self._thread.join(1)  # it looks at the flag between batches
            reader_gone = not self._thread.is_alive()
            self._thread = None
            if self.sock is not None and reader_gone:  # never two readers at once
                try:
                    deadline = time.monotonic() + STOP_READ_S
                    while time.monotonic() < deadline and not self.sock.empty:
                        items = self.sock.read(time.monotonic_ns, BATCH)
                        with self._lock:
                            self._items += items
                    if not self.sock.empty:
                        self.unread += self.sock.skip(STOP_SKIP_S)
                        # other tracers' marking may keep it from emptying: "at least"
                        self.unread_more = not self.sock.empty
                except OSError as exc:
                    log.warning("rule attribution: %s", exc)
        return self.take() if self.resolver is not None else []

    def stats(self) -> dict:
        r = self.resolver
        return {"reports": r.events if r else 0, "unresolved": r.unresolved if r else 0,
                "ruleset_reads": (r.reloads + 1) if r else 0, "overruns": self.sock.overruns if self.sock else 0,
                "dropped": self.dropped, "unread": self.unread, "unread_more": self.unread_more}

    def close(self) -> None:
        self.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def match_for(targets, container_addrs=(), container_ports=()) -> Match:
    """The nft marking for tracer.targets.Targets, with the traced
    containers' addresses and published host ports (--container)."""
    return Match(ports=tuple(targets.ports), hosts=tuple(targets.hosts),
                 container_addrs=tuple(sorted(container_addrs)),
                 container_ports=tuple(sorted(container_ports)), proto=targets.proto)
