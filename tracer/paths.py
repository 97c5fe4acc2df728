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

from tracer.analysis import event_rows, wall_ns
from tracer.events import FLAG_IN_CONTAINER_NS
from tracer.hdr import Histogram
from tracer.journeys import Hop, _endpoint_plain, hop_label, is_terminal

MAX_BINS = 90  # time bins per segment series: bins double in width as the capture grows
FIRST_BIN_NS = 10_000_000  # 10 ms to start with
DIRECTIONS = ("-", "original", "reply")
_PRIME = np.uint64(1_000_003)


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
    verdicts: Counter = field(default_factory=Counter)  # delivered / dropped / unknown
    exits: Counter = field(default_factory=Counter)  # where delivered packets left: container, external, host
    sequences: Counter = field(default_factory=Counter)  # tuple of labels (no drop) -> packets
    segments: dict[tuple[str, str], Segment] = field(default_factory=dict)
    end_to_end: Histogram = field(default_factory=Histogram)  # delivered packets, first to last sighting
    drops: Counter = field(default_factory=Counter)  # (last label seen, reason) -> packets
    devices: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # label -> ifname -> sightings
    containers: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # label -> container name
    translations: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # label -> 'a → b'
    cpus: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # label -> cpu -> sightings

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
        return sorted((s for k, s in self.segments.items() if k not in on), key=lambda s: -s.packets)

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


def _codes(table: pa.Table, name: str) -> tuple[np.ndarray, list]:
    """(code per row, -1 for null; distinct values) of a column."""
    if name not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64), []
    enc = pc.dictionary_encode(table[name].cast(pa.string())).combine_chunks()
    return pc.fill_null(enc.indices, -1).to_numpy().astype(np.int64), enc.dictionary.to_pylist()


def _ints(table: pa.Table, name: str, dtype=np.int64) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=dtype)
    return pc.fill_null(table[name], 0).to_numpy().astype(dtype)


_ENTRY = {"external": "external", "bridge": "bridge", "veth": "veth", "container": "container"}


def _entry_of(hook: str, role: str | None) -> str:
    if hook == "nf_output":
        return "host"  # made by the host itself
    return _ENTRY.get(role or "", "other")


def _exit_of(label: str) -> str:
    if label == "tc_ingress@container":
        return "container"
    if label == "tc_egress@external":
        return "external"
    if label.startswith("nf_input"):
        return "host"
    return "?"


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
        t = event_rows(table)
        if not t.num_rows:
            return
        t = t.filter(pc.fill_null(pc.not_equal(t["packet_id"], 0), False))
        if not t.num_rows:
            return
        hook_c, hooks = _codes(t, "hook")
        stage_c, stages = _codes(t, "nat_stage")
        role_c, roles = _codes(t, "if_role")
        in_ns = (_ints(t, "flags") & FLAG_IN_CONTAINER_NS) != 0
        if in_ns.any():
            if "container" not in roles:
                roles = roles + ["container"]
            role_c = np.where(in_ns & (role_c < 0), roles.index("container"), role_c)

        # Label each distinct (hook, stage, role) once.
        nr, ns_ = len(roles) + 1, len(stages) + 1
        combo = ((hook_c + 1) * ns_ + (stage_c + 1)) * nr + (role_c + 1)
        ucombo, inverse = np.unique(combo, return_inverse=True)
        inverse = np.asarray(inverse).ravel()
        labels, entries, terminal, exits, drop_combo = [], [], [], [], []
        for c in ucombo.tolist():
            h, rest = divmod(c, ns_ * nr)
            s, r = divmod(rest, nr)
            hook = hooks[h - 1] if h else "?"
            stage = stages[s - 1] if s else None
            role = roles[r - 1] if r else None
            label = hop_label(hook, stage, role)
            labels.append(label)
            entries.append(_entry_of(hook, role))
            terminal.append(is_terminal(Hop(hook, stage, None, role, 0, None, None, None, 0, 0, None)))
            exits.append(_exit_of(label))
            drop_combo.append(hook == "drop")
        label = inverse  # row -> index into labels
        is_drop = np.array(drop_combo, dtype=bool)[label]
        term = np.array(terminal, dtype=bool)[label]

        pid = _ints(t, "packet_id", np.uint64)
        kt = _ints(t, "ktime_ns")
        order = np.lexsort((kt, is_drop, pid))
        pid, kt, label, is_drop, term = pid[order], kt[order], label[order], is_drop[order], term[order]
        wall = wall_ns(t, self.metadata)[order]
        rows = order  # table row of each sorted row
        n = len(pid)
        starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
        ends = np.append(starts[1:], n)
        packet = np.repeat(np.arange(len(starts)), ends - starts)

        # Per packet: direction, entry, NAT, verdict, exit.
        dcodes, dvalues = _codes(t, "direction")
        dmap = np.array([DIRECTIONS.index(v) if v in DIRECTIONS else 0 for v in dvalues] + [0], dtype=np.int64)
        direction = np.maximum.reduceat(dmap[dcodes[rows]], starts)
        entry = np.array([entries[i] for i in range(len(labels))], dtype=object)[label[starts]]
        sip_c, sips = _codes(t, "src_ip")
        dip_c, dips = _codes(t, "dst_ip")
        sport, dport = _ints(t, "src_port")[rows], _ints(t, "dst_port")[rows]
        src = sip_c[rows] * 65536 + sport
        dst = dip_c[rows] * 65536 + dport
        pair = np.zeros(n, dtype=bool)  # row and the next row: one packet, neither a drop
        if n > 1:
            pair[:-1] = (packet[1:] == packet[:-1]) & ~is_drop[1:] & ~is_drop[:-1]
        nxt = np.flatnonzero(pair)
        dchg = np.zeros(n, dtype=bool)
        schg = np.zeros(n, dtype=bool)
        dchg[nxt] = (dst[nxt + 1] != dst[nxt]) & (dip_c[rows][nxt] >= 0) & (dip_c[rows][nxt + 1] >= 0)
        schg[nxt] = (src[nxt + 1] != src[nxt]) & (sip_c[rows][nxt] >= 0) & (sip_c[rows][nxt + 1] >= 0)
        p_d = np.maximum.reduceat(dchg, starts)
        p_s = np.maximum.reduceat(schg, starts)

        last = ends - 1
        last_real = last - (is_drop[last] & (last > starts))  # the last sighting that is not a drop
        after_delivery = is_drop[last] & (last > starts) & term[last_real]
        dropped = is_drop[last] & ~after_delivery
        verdict = np.where(dropped, 1, np.where(term[last] | after_delivery, 0, 2))
        e2e = kt[last_real] - kt[starts]

        # Group key per packet (a handful of distinct ones).
        nat_code = p_d.astype(np.int64) * 2 + p_s.astype(np.int64)
        entry_names, entry_codes = np.unique(entry, return_inverse=True)
        entry_names = entry_names.tolist()
        gkey = (direction * 4 + nat_code) * len(entry_names) + np.asarray(entry_codes).ravel()
        ukeys, ginv = np.unique(gkey, return_inverse=True)
        ginv = np.asarray(ginv).ravel()
        groups = []
        for k in ukeys.tolist():
            rest, e = divmod(k, len(entry_names))
            d, nc = divmod(rest, 4)
            groups.append(self._group(DIRECTIONS[d], entry_names[e], _nat_name(DIRECTIONS[d], nc)))
        row_group = ginv[packet]

        # Sequences of places (no drop rows), hashed per packet.
        pos = np.arange(n) - starts[packet]
        weight = np.power(_PRIME, pos.astype(np.uint64))
        seq_hash = np.add.reduceat(np.where(is_drop, np.uint64(0), (label.astype(np.uint64) + np.uint64(1)) * weight), starts)
        ifname_c, ifnames = _codes(t, "ifname")
        cname_c, cnames = _codes(t, "container_name")
        ifname_c, cname_c = ifname_c[rows], cname_c[rows]
        cpu = _ints(t, "cpu")[rows]
        if n > 1 and not self.cpu_varies:
            same = packet[1:] == packet[:-1]
            self.cpu_varies = bool((same & (cpu[1:] != cpu[:-1]) & ~is_drop[1:]).any())
        reason_c, reasons = _codes(t, "drop_reason")
        reason_c = reason_c[rows]

        if self.t0 is None:
            self.t0 = int(wall.min())
        p_wall = wall[starts]
        self._rebin(int(p_wall.max()))
        p_bin = (p_wall - self.t0) // self.bin_ns

        for g, grp in enumerate(groups):
            pk = np.flatnonzero(ginv == g)
            grp.packets += len(pk)
            vc = np.bincount(verdict[pk], minlength=3)
            grp.verdicts.update({v: int(c) for v, c in zip(("delivered", "dropped", "unknown"), vc) if c})
            delivered = pk[verdict[pk] == 0]
            grp.end_to_end.record(e2e[delivered])
            ex, cnt = np.unique(label[last_real[delivered]], return_counts=True)
            for li, c in zip(ex.tolist(), cnt.tolist()):
                grp.exits[exits[li]] += c
            # sequences: count per hash, labels from one packet each
            hs, first_at, cnt = np.unique(seq_hash[pk], return_index=True, return_counts=True)
            for h, fa, c in zip(hs.tolist(), first_at.tolist(), cnt.tolist()):
                p = pk[fa]
                seq = tuple(labels[i] for i, dr in zip(label[starts[p]:ends[p]], is_drop[starts[p]:ends[p]]) if not dr)
                grp.sequences[seq] += c
            # drops: where last seen, why
            dp = pk[dropped[pk]]
            if len(dp):
                seen = np.where(last[dp] > starts[dp], label[np.maximum(last[dp] - 1, starts[dp])], -1)
                why = reason_c[last[dp]]
                for (s, r), c in Counter(zip(seen.tolist(), why.tolist())).items():
                    grp.drops[(labels[s] if s >= 0 else "-", reasons[r] if r >= 0 else "unknown")] += c

        # Segments: rows with a next row of the same packet (no drops), per group.
        seg_group = row_group[nxt]
        a, b = label[nxt], label[nxt + 1]
        dt = kt[nxt + 1] - kt[nxt]
        key = (seg_group * len(labels) + a) * len(labels) + b
        ukey, sinv = np.unique(key, return_inverse=True)
        sinv = np.asarray(sinv).ravel()
        seg_bin = p_bin[packet[nxt]]
        for s, k in enumerate(ukey.tolist()):
            rest, bl = divmod(k, len(labels))
            g, al = divmod(rest, len(labels))
            grp = groups[g]
            seg = grp.segments.get((labels[al], labels[bl]))
            if seg is None:
                seg = grp.segments[(labels[al], labels[bl])] = Segment(labels[al], labels[bl], Histogram(3))
            sel = sinv == s
            values = dt[sel]
            seg.latency.record(values)
            bins = seg_bin[sel]
            for bnum in np.unique(bins).tolist():
                hist = seg.series.get(bnum)
                if hist is None:
                    hist = seg.series[bnum] = Histogram(1)
                hist.record(values[bins == bnum])

        # Devices, containers, translations and CPUs per (group, label): over distinct combinations.
        real = ~is_drop
        for codes, values, out in ((ifname_c, ifnames, "devices"), (cname_c, cnames, "containers")):
            dkey = (row_group * len(labels) + label) * (len(values) + 1) + (codes + 1)
            for k, c in zip(*np.unique(dkey[real], return_counts=True)):
                rest, d = divmod(int(k), len(values) + 1)
                g, li = divmod(rest, len(labels))
                if d:
                    getattr(groups[g], out)[labels[li]][values[d - 1]] += int(c)
        ckey = (row_group * len(labels) + label) * 4096 + np.clip(cpu, 0, 4095)
        for k, c in zip(*np.unique(ckey[real], return_counts=True)):
            rest, cp = divmod(int(k), 4096)
            g, li = divmod(rest, len(labels))
            groups[g].cpus[labels[li]][cp] += int(c)
        changed = nxt[dchg[nxt] | schg[nxt]]
        if len(changed):
            # the addresses before and after each translation, as codes; text once per distinct one
            sc, dc = sip_c[rows], dip_c[rows]
            tkey = np.stack([row_group[changed], label[changed + 1], sc[changed], sport[changed], dc[changed],
                             dport[changed], sc[changed + 1], sport[changed + 1], dc[changed + 1], dport[changed + 1]], axis=1)
            uniq, cnt = np.unique(tkey, axis=0, return_counts=True)
            for (g, li, s0, sp0, d0, dp0, s1, sp1, d1, dp1), c in zip(uniq.tolist(), cnt.tolist()):
                parts = []
                if (d0, dp0) != (d1, dp1):
                    parts.append(f"dst {_ep(dips, d0, dp0)} → {_ep(dips, d1, dp1)}")
                if (s0, sp0) != (s1, sp1):
                    parts.append(f"src {_ep(sips, s0, sp0)} → {_ep(sips, s1, sp1)}")
                groups[g].translations[labels[li]][", ".join(parts)] += c

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


def _ep(values: list, code: int, port: int) -> str | None:
    return _endpoint_plain(values[code] if code >= 0 else None, port, False)


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
