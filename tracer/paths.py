"""Journeys grouped by the path they took through the host: the data the
report's path picture, box plots, end-to-end distributions, time series and
CPU table are drawn from (tracer/report*.py draw; this module only counts).

A packet's path group is (conntrack direction, where it entered, the NAT it
went through): requests arriving from outside and DNATed to a container, their
replies (reverse DNAT on the way out), a container's own connections leaving
through MASQUERADE (SNAT), their replies (reverse SNAT), and whatever else
the capture holds (host-local, container to container, dropped before NAT).
Request and reply, inbound and outbound are never mixed: the same two hooks
are different places on different paths (PREROUTING on the NIC vs on docker0).

Each group keeps, per hop segment (a sighting and the next of one packet),
an HdrHistogram of latencies (3 significant digits: percentiles within 0.1 %,
tracer/hdr.py), per time bin a coarser one (1 digit) for latency over time,
one of first-to-last sighting for delivered packets, drops by where they were
last seen and why, the sightings per CPU, and how often each sequence of
places occurs (the commonest is the group's path, in order).

``PathStats.add`` takes event rows of whole packets (any number of chunks, a
packet never split across two), so the memory is bounded by the number of
groups, segments and time bins, not by the capture.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.analysis_rows import _codes, _ints, clocked, event_rows, journey_order, place_codes, wall_ns
from tracer.untimed import in_place, timed
from tracer.events import CONTAINER, EXTERNAL, OTHER, ROLES
from tracer.hdr import Histogram
from tracer.journey_rows import next_in_packet, verdict_codes
from tracer.journeys import ends_journey, hop_label
from tracer.path_segments import segment_counts

MAX_BINS = 90  # time bins per segment series: bins double in width as the capture grows
FIRST_BIN_NS = 10_000_000  # 10 ms to start with
DIRECTIONS = ("-", "original", "reply")
_PRIME = np.uint64(1_000_003)


def _weights(n: int, _cache: list = []) -> np.ndarray:  # noqa: B006 - the cache
    """_PRIME ** position (uint64, wrapping) for positions 0..n-1: a sequence's hash weights."""
    if len(_cache) < 1 or len(_cache[0]) < n:
        _cache[:] = [np.power(_PRIME, np.arange(max(n, 64), dtype=np.uint64))]
    return _cache[0]


class Tally(Counter):
    """A Counter whose ties go by key, not by which was counted first: the
    report is the same however the capture was read (in which chunks, which
    packets off the journey rows and which as sighting rows)."""

    def most_common(self, n: int | None = None) -> list:
        ranked = sorted(self.items(), key=lambda kv: (-kv[1], _sort_key(kv[0])))
        return ranked if n is None else ranked[:n]


def _sort_key(key) -> tuple:
    parts = key if isinstance(key, tuple) else (key,)
    return tuple((0, p) if isinstance(p, (int, float)) else (1, "" if p is None else str(p)) for p in parts)


def _tallies() -> defaultdict:
    return defaultdict(Tally)


@dataclass
class Segment:
    """One hop segment of a group: from one place to the next."""
    src: str  # label, as tracer stats names places: 'nf_prerouting/after', 'tc_egress@veth'
    dst: str
    latency: Histogram  # ns, 3 significant digits
    series: dict[int, Histogram] = field(default_factory=dict)  # time bin -> 1-digit histogram

    @property
    def packets(self) -> int:
        return self.latency.total


@dataclass
class Group:
    direction: str  # 'original', 'reply', '-'
    entry: str  # where packets entered: 'external', 'container', 'host', 'bridge', 'veth'
    nat: str | None  # 'DNAT', 'SNAT', 'reverse DNAT', 'reverse SNAT', combinations, or None
    packets: int = 0
    verdicts: Tally = field(default_factory=Tally)  # delivered / dropped / unknown
    exits: Tally = field(default_factory=Tally)  # where delivered packets left: container, external, host
    sequences: Tally = field(default_factory=Tally)  # tuple of labels (no drop) -> packets
    segments: dict[tuple[str, str], Segment] = field(default_factory=dict)
    end_to_end: Histogram = field(default_factory=Histogram)  # delivered packets, first to last sighting
    drops: Tally = field(default_factory=Tally)  # (last label seen, reason) -> packets
    devices: dict[str, Tally] = field(default_factory=_tallies)  # label -> ifname -> sightings
    containers: dict[str, Tally] = field(default_factory=_tallies)  # label -> container name
    translations: dict[str, Tally] = field(default_factory=_tallies)  # label -> 'a → b'
    cpus: dict[str, Tally] = field(default_factory=_tallies)  # label -> cpu -> sightings

    @property
    def exit(self) -> str:
        return self.exits.most_common(1)[0][0] if self.exits else "?"

    @property
    def name(self) -> str:
        """'external → container · DNAT · requests'."""
        kind = {"original": "requests", "reply": "replies"}.get(self.direction, "direction unknown")
        return f"{self.entry} → {self.exit}" + (f" · {self.nat}" if self.nat else "") + f" · {kind}"

    @property
    def path(self) -> tuple[str, ...]:
        """The commonest sequence of places: the group's path, in order."""
        return self.sequences.most_common(1)[0][0] if self.sequences else ()

    def path_segments(self) -> list[Segment]:
        """Segments along the path, in path order (a place twice on it: once)."""
        p, out, seen = self.path, [], set()
        for a, b in zip(p, p[1:]):
            if (a, b) in self.segments and (a, b) not in seen:
                seen.add((a, b))
                out.append(self.segments[(a, b)])
        return out

    def other_segments(self) -> list[Segment]:
        """Segments of packets that took another way (a hook skipped, a variant)."""
        on = {(s.src, s.dst) for s in self.path_segments()}
        return sorted((s for k, s in self.segments.items() if k not in on), key=lambda s: (-s.packets, s.src, s.dst))

    @property
    def off_path(self) -> int:
        """Packets whose places differ from the group's path (not the ones
        that only stopped short of its end: dropped, or left our view)."""
        p = self.path
        return sum(n for seq, n in self.sequences.items() if seq != p[: len(seq)])

    def device(self, label: str) -> str | None:
        """The interface the group's packets were seen on at that place (the commonest)."""
        c = self.devices.get(label)
        return c.most_common(1)[0][0] if c else None

    def container(self, label: str) -> str | None:
        c = self.containers.get(label)
        return c.most_common(1)[0][0] if c else None

    def translation(self, label: str) -> str | None:
        c = self.translations.get(label)
        return c.most_common(1)[0][0] if c else None

    def order_key(self) -> tuple:
        # The story of a Docker host first: inbound DNAT and its replies, then
        # a container's own connections out through MASQUERADE and theirs.
        story = {("original", "DNAT"): 0, ("reply", "reverse DNAT"): 1, ("original", "SNAT"): 2, ("reply", "reverse SNAT"): 3}
        return (story.get((self.direction, self.nat), 4), -self.packets, self.name)


@dataclass
class PathSummary:
    groups: list[Group]  # in the story's order, then most packets first
    bin_ns: int  # width of the series' time bins
    t0_ns: int  # wall clock of bin 0
    cpu_per_hop: bool  # rows of one packet carry different CPUs (per-sighting captures)

    @property
    def packets(self) -> int:
        return sum(g.packets for g in self.groups)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first row of each distinct value, its count, code of each row), by
    hashing (Arrow's dictionary_encode), not sorting."""
    enc = pc.dictionary_encode(pa.array(values))
    codes = enc.indices.to_numpy().astype(np.int64)
    k = len(enc.dictionary)
    first = np.empty(k, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return first, np.bincount(codes, minlength=k), codes


def _compact(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, code of each row) for keys in [0, size): a count and a
    lookup table instead of a sort."""
    present = np.flatnonzero(np.bincount(key, minlength=size))
    lut = np.zeros(max(size, 1), dtype=np.int64)
    lut[present] = np.arange(len(present))
    return present, lut[key]


_ENTRY = {role: role for role in ROLES}  # entered at an interface of this role


def _entry_of(hook: str, role: str | None) -> str:
    if hook == "nf_output":
        return "host"  # made by the host itself
    return _ENTRY.get(role or "", OTHER)


def _exit_of(label: str) -> str:
    if label == f"tc_ingress@{CONTAINER}":
        return CONTAINER
    if label == f"tc_egress@{EXTERNAL}":
        return EXTERNAL
    if label.startswith("nf_input"):
        return "host"
    return "?"


@dataclass
class PathRows:
    """One chunk's sightings of whole packets in journey order (by packet, a
    drop last, then time), as the path pass reads them: made of sighting rows
    (``sighting_rows``) or of journey rows as stored (tracer/journey_paths.py).
    Strings are codes into small per-chunk lists (-1: none)."""
    labels: list[str]  # each label's name (hop_label) ...
    hooks: list[str]  # ... hook ('?' unknown) ...
    roles: list  # ... interface role (None unknown) ...
    terminal: np.ndarray  # ... and whether a journey ends there (ends_journey)
    label: np.ndarray  # per row
    kt: np.ndarray  # per row, ktime ns
    starts: np.ndarray  # per packet: its first row
    direction: np.ndarray  # per packet: index into DIRECTIONS
    wall_first: np.ndarray  # per packet: wall clock ns of its first row
    src_ip: np.ndarray  # per row (per tuple with tuple_id, below): codes into src_ips
    src_ips: list
    src_port: np.ndarray  # per row (per tuple with tuple_id)
    dst_ip: np.ndarray  # per row (per tuple with tuple_id): codes into dst_ips
    dst_ips: list
    dst_port: np.ndarray  # per row (per tuple with tuple_id)
    cpu: np.ndarray  # per row
    reason: np.ndarray  # per row: drop reason, codes into reasons (read at a dropped packet's last row)
    reasons: list
    ifname: np.ndarray  # per row: codes into ifnames
    ifnames: list
    container: np.ndarray  # per row: container name, codes into containers
    containers: list
    # Per row, or None: the row's tuple, an index into the four arrays above,
    # which are then per tuple (journey rows: a packet's hops share a few).
    tuple_id: np.ndarray | None = None
    # A damaged capture's rows without a clock (None: all have one): per row
    # whether it has a ktime_ns (no latency to or from one without), per
    # packet whether wall_first is known (not 0: in no time bin).
    timed: np.ndarray | None = None
    wall_known: np.ndarray | None = None


def sighting_rows(table: pa.Table, metadata=None) -> PathRows | None:
    """PathRows of sighting rows of whole packets (rows without a packet id left out)."""
    t = event_rows(table)
    if not t.num_rows:
        return None
    known = pc.fill_null(pc.not_equal(t["packet_id"], 0), False)
    if not pc.all(known).as_py():  # rows without a packet id: not a journey's
        t = t.filter(known)
    if not t.num_rows:
        return None
    t = t.unify_dictionaries()
    hook_c, hooks, stage_c, stages, role_c, roles = place_codes(t)

    # Label each distinct (hook, stage, role) once.
    nr, ns_ = len(roles) + 1, len(stages) + 1
    combo = ((hook_c + 1) * ns_ + (stage_c + 1)) * nr + (role_c + 1)
    ucombo, label = _compact(combo, (len(hooks) + 1) * ns_ * nr)
    labels, label_hooks, label_roles, terminal = [], [], [], []
    for c in ucombo.tolist():
        h, rest = divmod(c, ns_ * nr)
        st, r = divmod(rest, nr)
        hook = hooks[h - 1] if h else "?"
        stage = stages[st - 1] if st else None
        role = roles[r - 1] if r else None
        labels.append(hop_label(hook, stage, role))
        label_hooks.append(hook)
        label_roles.append(role)
        terminal.append(ends_journey(hook, stage, role))
    is_drop = np.array([h == "drop" for h in label_hooks], dtype=bool)[label]

    pid = _ints(t, "packet_id", np.uint64)
    kt = _ints(t, "ktime_ns")
    has_kt = timed(t)
    rows = journey_order(pid, in_place(pid, kt, has_kt), is_drop)  # table row of each sorted row
    pid = pid[rows]
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    first_rows = t.take(pa.array(rows[starts]))
    dcodes, dvalues = _codes(t, "direction")
    dmap = np.array([DIRECTIONS.index(v) if v in DIRECTIONS else 0 for v in dvalues] + [0], dtype=np.int64)
    sip_c, sips = _codes(t, "src_ip")
    dip_c, dips = _codes(t, "dst_ip")
    reason_c, reasons = _codes(t, "drop_reason")
    ifname_c, ifnames = _codes(t, "ifname")
    cname_c, cnames = _codes(t, "container_name")
    return PathRows(
        labels=labels, hooks=label_hooks, roles=label_roles, terminal=np.array(terminal, dtype=bool),
        label=label[rows], kt=kt[rows], starts=starts,
        direction=np.maximum.reduceat(dmap[dcodes[rows]], starts),
        wall_first=wall_ns(first_rows, metadata), wall_known=clocked(first_rows),  # only the packets' first rows
        timed=None if has_kt is None else has_kt[rows],
        src_ip=sip_c[rows], src_ips=sips, src_port=_ints(t, "src_port")[rows],
        dst_ip=dip_c[rows], dst_ips=dips, dst_port=_ints(t, "dst_port")[rows],
        cpu=_ints(t, "cpu")[rows], reason=reason_c[rows], reasons=reasons,
        ifname=ifname_c[rows], ifnames=ifnames, container=cname_c[rows], containers=cnames)


class PathStats:
    """Accumulates PathSummary's numbers over chunks of whole packets."""

    def __init__(self, metadata=None) -> None:
        self.metadata = metadata
        self.groups: dict[tuple[str, str, str | None], Group] = {}
        self.bin_ns = FIRST_BIN_NS
        self.t0: int | None = None
        self.cpu_varies = False

    # -- one chunk ---------------------------------------------------------------

    def add(self, table: pa.Table) -> None:
        """Sighting rows of whole packets (any order)."""
        rows = sighting_rows(table, self.metadata)
        if rows is not None:
            self.add_rows(rows)

    def add_journeys(self, rows: "PathRows | None", rest: pa.Table | None) -> None:
        """A chunk of journey rows as CaptureAnalysis.add_journeys read it:
        the packets it took off the list columns (tracer/journey_paths.py
        made their PathRows) and the sighting rows of the others."""
        parts = [rows, sighting_rows(rest, self.metadata) if rest is not None and rest.num_rows else None]
        parts = [p for p in parts if p is not None and len(p.starts)]
        walls = [p.wall_first if p.wall_known is None else p.wall_first[p.wall_known] for p in parts]
        if self.t0 is None and any(len(w) for w in walls):  # time bins start at the chunk's first packet, whichever part
            self.t0 = int(min(w.min() for w in walls if len(w)))
        for p in parts:
            self.add_rows(p)

    def add_rows(self, r: "PathRows") -> None:
        # Every per-row step is a pass over contiguous arrays (a row against
        # the next, a mask, a repeat of per-packet values) rather than a
        # gather through row indices: the pass costs about what numpy takes
        # to read each column a few times.
        labels, label, kt, starts = r.labels, r.label, r.kt, r.starts
        nl = len(labels)
        if not nl or not len(starts):
            return
        entries = [_entry_of(h, role) for h, role in zip(r.hooks, r.roles)]
        exits = [_exit_of(lab) for lab in labels]
        label_drop = np.array([h == "drop" for h in r.hooks], dtype=bool)
        n = len(label)
        npk = len(starts)
        ends = np.append(starts[1:], n)
        sizes = ends - starts
        drop_at = np.flatnonzero(label_drop[label]) if label_drop.any() else np.zeros(0, np.int64)
        is_drop = np.zeros(n, dtype=bool)
        is_drop[drop_at] = True
        real = None if not len(drop_at) else ~is_drop  # rows that are not drops (None: all)

        # Per packet: direction, entry, NAT, verdict, exit.
        direction = r.direction
        entry_names = sorted(set(entries))
        entry = np.array([entry_names.index(e) for e in entries], dtype=np.int64)[label[starts]]
        sip_c, dip_c, sport, dport = r.src_ip, r.dst_ip, r.src_port, r.dst_port
        # A row and the next row: one packet (the next is no packet's start), neither a drop.
        same = next_in_packet(n, starts)
        pair = same.copy()
        if len(drop_at):
            pair &= real[1:] & real[:-1]
        if r.timed is not None:
            pair &= r.timed[1:] & r.timed[:-1]

        tid = r.tuple_id

        def at_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
            """An address or port array's values at these rows."""
            return values[rows] if tid is None else values[tid[rows]]

        def changed_at(codes: np.ndarray, ports: np.ndarray, rows: np.ndarray) -> np.ndarray:
            """Those of these rows (each a pair's first row) whose next row has
            another address or port, both addresses known."""
            a, b = at_rows(codes, rows), at_rows(codes, rows + 1)
            c = (a != b) | (at_rows(ports, rows) != at_rows(ports, rows + 1))
            c &= (a >= 0) & (b >= 0)
            return rows[c]

        if tid is not None:
            # Journey rows: addresses can only change where the hop's tuple
            # does (a few hops a packet), so only those are compared.
            maybe = np.flatnonzero((tid[1:] != tid[:-1]) & pair)
        else:
            maybe = np.flatnonzero(pair)
        d_at, s_at = changed_at(dip_c, dport, maybe), changed_at(sip_c, sport, maybe)
        p_d = np.zeros(npk, dtype=bool)
        p_s = np.zeros(npk, dtype=bool)
        p_d[np.searchsorted(starts, d_at, side="right") - 1] = True
        p_s[np.searchsorted(starts, s_at, side="right") - 1] = True

        last = ends - 1
        last_real = last - (is_drop[last] & (last > starts))  # the last sighting that is not a drop
        verdict, dropped = verdict_codes(r.terminal[label], is_drop, starts, last)
        e2e = kt[last_real] - kt[starts]
        timed_e2e = verdict == 0  # end to end: of delivered packets whose both ends have a ktime_ns
        if r.timed is not None:
            timed_e2e &= r.timed[starts] & r.timed[last_real]

        # Group key per packet (a handful of distinct ones).
        nat_code = p_d.astype(np.int64) * 2 + p_s.astype(np.int64)
        gkey = (direction * 4 + nat_code) * len(entry_names) + entry
        ukeys, ginv = _compact(gkey, 3 * 4 * len(entry_names))
        groups = []
        for k in ukeys.tolist():
            rest, e = divmod(k, len(entry_names))
            d, nc = divmod(rest, 4)
            groups.append(self._group(DIRECTIONS[d], entry_names[e], _nat_name(DIRECTIONS[d], nc)))
        ng = len(groups)
        # (group, label) of each row: the key of devices, containers and CPUs, and half a segment's.
        glabel = np.repeat(ginv * nl, sizes)
        glabel += label

        # Sequences of places (no drop rows), hashed per packet.
        pos = np.arange(n) - np.repeat(starts, sizes)
        weighted = label.astype(np.uint64)
        weighted += np.uint64(1)
        weighted *= _weights(int(sizes.max()))[pos]
        weighted[drop_at] = 0
        seq_hash = np.add.reduceat(weighted, starts)
        cpu = r.cpu
        if n > 1 and not self.cpu_varies:
            differs = cpu[1:] != cpu[:-1]
            differs &= same
            if len(drop_at):
                differs &= real[1:]
            self.cpu_varies = bool(differs.any())
        reason_c, reasons = r.reason, r.reasons

        wall_first = r.wall_first
        known = wall_first if r.wall_known is None else wall_first[r.wall_known]
        if len(known):
            if self.t0 is None:
                self.t0 = int(known.min())
            self._rebin(int(known.max()))
        if r.wall_known is not None:  # a packet without a clock has no segment: any bin of the chunk's
            wall_first = np.where(r.wall_known, wall_first, known.min() if len(known) else self.t0 or 0)
        p_bin = (wall_first - (self.t0 or 0)) // self.bin_ns

        # Per group: packets, verdicts, exits, end to end, sequences, drops.
        counts = np.bincount(ginv * 3 + verdict, minlength=ng * 3).reshape(ng, 3)
        delivered = verdict == 0
        exit_counts = np.bincount(ginv[delivered] * nl + label[last_real[delivered]], minlength=ng * nl).reshape(ng, nl)
        by_group = np.argsort(ginv.astype(np.int16) if ng < 1 << 15 else ginv, kind="stable")  # small ints: a radix sort
        bounds = np.r_[0, np.cumsum(np.bincount(ginv, minlength=ng))]
        for g, grp in enumerate(groups):
            pk = by_group[bounds[g]: bounds[g + 1]]
            grp.packets += len(pk)
            grp.verdicts.update({v: int(c) for v, c in zip(("delivered", "dropped", "unknown"), counts[g]) if c})
            for li in np.flatnonzero(exit_counts[g]).tolist():
                grp.exits[exits[li]] += int(exit_counts[g, li])
            grp.end_to_end.record(e2e[pk[timed_e2e[pk]]])
            first_at, cnt, _ = _factorize(seq_hash[pk])
            for fa, c in zip(first_at.tolist(), cnt.tolist()):
                p = pk[fa]
                seq = tuple(labels[i] for i, dr in zip(label[starts[p]:ends[p]].tolist(), is_drop[starts[p]:ends[p]].tolist()) if not dr)
                grp.sequences[seq] += c
            dp = pk[dropped[pk]]
            if len(dp):
                seen = np.where(last[dp] > starts[dp], label[np.maximum(last[dp] - 1, starts[dp])], -1)
                why = reason_c[last[dp]]
                for (sn, rc), c in Counter(zip(seen.tolist(), why.tolist())).items():
                    grp.drops[(labels[sn] if sn >= 0 else "-", reasons[rc] if rc >= 0 else "unknown")] += c

        # Segments: rows with a next row of the same packet (no drops), keyed
        # (group, label, next label), counted into histograms at once.
        if pair.any():
            skey = glabel[:-1] * nl
            skey += label[1:]
            skey = skey[pair]
            useg, scode = _compact(skey, ng * nl * nl)
            dt = np.diff(kt)[pair]
            one_bin = int(p_bin.min()) == int(p_bin.max())  # the usual chunk: no per-hop bins needed
            seg_bin = None if one_bin else np.repeat(p_bin, sizes)[:-1][pair]
            self._add_segments(groups, labels, useg, scode, dt, seg_bin, int(p_bin[0]))

        # Devices, containers and CPUs per (group, label): counts over compact keys.
        gl = glabel if real is None else glabel[real]
        tallies: dict[int, np.ndarray] = {}  # the same codes (journey rows: a place for both): counted once
        for codes, values, out in ((r.ifname, r.ifnames, "devices"), (r.container, r.containers, "containers")):
            m = len(values) + 1
            tally = tallies.get(id(codes))
            if tally is None or len(tally) != ng * nl * m:
                c = codes if real is None else codes[real]
                key = gl * m
                key += c
                key += 1
                tally = tallies[id(codes)] = np.bincount(key, minlength=ng * nl * m)
            for k in np.flatnonzero(tally).tolist():
                rest, d = divmod(k, m)
                if d and values[d - 1] is not None:
                    g, li = divmod(rest, nl)
                    getattr(groups[g], out)[labels[li]][values[d - 1]] += int(tally[k])
        cpus = cpu if real is None else cpu[real]
        top = int(cpus.max()) if len(cpus) else 0
        if len(cpus) and 0 <= int(cpus.min()) and top < 4096:  # a machine's CPU numbers: counted directly
            ucpu = np.arange(top + 1)
            tally = np.bincount(gl * (top + 1) + cpus, minlength=ng * nl * (top + 1))
        else:
            ucpu, cpu_code = _compact(np.clip(cpus, 0, 65535), int(cpu.max()) + 1 if n else 1)
            tally = np.bincount(gl * len(ucpu) + cpu_code, minlength=ng * nl * len(ucpu))
        for k in np.flatnonzero(tally).tolist():
            rest, ci = divmod(k, len(ucpu))
            g, li = divmod(rest, nl)
            groups[g].cpus[labels[li]][int(ucpu[ci])] += int(tally[k])

        # Translations: where addresses changed, the new address; a port only
        # where it changed too (DNAT's service port), not MASQUERADE's kept ports.
        for at, side, codes, ports, values in ((d_at, "dst", dip_c, dport, r.dst_ips),
                                               (s_at, "src", sip_c, sport, r.src_ips)):
            if not len(at):
                continue
            row_group = glabel[at] // nl
            new_port = at_rows(ports, at + 1)
            new_ip = at_rows(codes, at + 1)
            newport = np.where(new_port != at_rows(ports, at), new_port, -1)
            tkey = ((row_group * nl + label[at + 1]) * (len(values) + 1) + (new_ip + 1)) * 65537 + (newport + 1)
            first_at, cnt, _ = _factorize(tkey)
            for i, c in zip(first_at.tolist(), cnt.tolist()):
                g, li, ip, port = int(row_group[i]), int(label[at[i] + 1]), int(new_ip[i]), int(newport[i])
                where = values[ip] if ip >= 0 else "?"
                new = f"{where}:{port}" if port >= 0 else where
                groups[g].translations[labels[li]][f"{side} → {new}"] += c

    def _add_segments(self, groups: list, labels: list[str], useg: np.ndarray, scode: np.ndarray, dt: np.ndarray,
                      seg_bin: np.ndarray | None, only_bin: int) -> None:
        """Hop segments of a chunk (``scode`` into ``useg``, keys of (group,
        label, next label)) into each segment's latency histogram and its
        per-time-bin coarse one (tracer/path_segments.py counts them)."""
        per_segment, lo_bin, lo3 = segment_counts(len(useg), scode, dt, seg_bin, only_bin)
        self._segments_into(groups, labels, useg, per_segment, lo_bin, lo3)

    def _segments_into(self, groups: list, labels: list[str], useg: np.ndarray, per_segment: Iterable,
                       lo_bin: int, lo3: int = 0) -> None:
        """Each segment's counts (latency buckets from ``lo3`` on, time bin x
        coarse buckets) into its group's Segment."""
        nl = len(labels)
        for k, (counts, grid) in zip(useg.tolist(), per_segment):
            rest, bl = divmod(k, nl)
            g, al = divmod(rest, nl)
            key = (labels[al], labels[bl])
            seg = groups[g].segments.get(key)
            if seg is None:
                seg = groups[g].segments[key] = Segment(key[0], key[1], Histogram(3))
            seg.latency.counts[lo3: lo3 + len(counts)] += counts
            for b in np.flatnonzero(grid.any(axis=1)).tolist():
                hist = seg.series.get(b + lo_bin)
                if hist is None:
                    hist = seg.series[b + lo_bin] = Histogram(1)
                hist.counts += grid[b]

    def _group(self, direction: str, entry: str, nat: str | None) -> Group:
        key = (direction, entry, nat)
        if key not in self.groups:
            self.groups[key] = Group(direction, entry, nat)
        return self.groups[key]

    def _rebin(self, newest_wall: int) -> None:
        """Double the bin width (merging neighbours) until the capture so far
        fits MAX_BINS bins."""
        while (newest_wall - self.t0) // self.bin_ns >= MAX_BINS:
            self.bin_ns *= 2
            for grp in self.groups.values():
                for seg in grp.segments.values():
                    merged: dict[int, Histogram] = {}
                    for b, h in seg.series.items():
                        if b // 2 in merged:
                            merged[b // 2].add(h)
                        else:
                            merged[b // 2] = h
                    seg.series = merged

    # -- the result -----------------------------------------------------------------

    def finish(self) -> PathSummary:
        groups = sorted(self.groups.values(), key=Group.order_key)
        return PathSummary(groups, self.bin_ns, self.t0 or 0, self.cpu_varies)


def _nat_name(direction: str, code: int) -> str | None:
    dst, src = bool(code & 2), bool(code & 1)
    if direction == "reply":
        names = (["reverse SNAT"] if dst else []) + (["reverse DNAT"] if src else [])
    else:
        names = (["DNAT"] if dst else []) + (["SNAT"] if src else [])
    return " + ".join(names) or None


def path_summary(tables: Iterable[pa.Table] | pa.Table, metadata=None) -> PathSummary:
    """PathSummary of event rows given whole (one table) or as chunks of whole packets."""
    stats = PathStats(metadata)
    for t in [tables] if isinstance(tables, pa.Table) else tables:
        stats.add(t)
    return stats.finish()
