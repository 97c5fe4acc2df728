"""Capture analysis: hop segment latencies, flows, drops, lost events, throughput,
and latency mode's interval histograms (kind='histogram' rows) merged.

Everything is computed on whole columns. The event table is sorted once by
(packet_id, drop row last, ktime_ns); a row and the next row of the same packet
form a hop segment ("nf_prerouting/after → tc_egress@bridge") whose latency is
the ktime difference. Segments, packets and flows are then grouped with numpy
(lexsort + reduceat). Python only touches distinct labels, flows and drop
reasons, never rows, so a capture of millions of events takes seconds.

Labels, verdicts and drop handling follow tracer.journeys (``Hop.label``,
``is_terminal``, the drop row ends a journey, a second drop row is ignored), so
the numbers here agree with what ``trace``/``show`` print per journey.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import FLAG_IN_CONTAINER_NS, META_PREFIX
from tracer.journeys import _DIRECTION_CODES as _DIR_CODES
from tracer.journeys import VERDICTS, Hop, Journey, _endpoint_plain, build_journeys, is_terminal

ARROW = "→"


@dataclass(frozen=True)
class SegmentStats:
    direction: str  # the packets' conntrack direction: original, reply, or '-' (unknown)
    segment: str  # "<label> → <label>", labels as Hop.label
    count: int
    p50_ns: float  # quantiles interpolate linearly (numpy's default method)
    p90_ns: float
    p99_ns: float
    max_ns: int


@dataclass(frozen=True)
class FlowStats:
    flow_id: int  # nf_conn address
    container: str | None
    protocol: str | None
    client: str | None  # source of the flow's first original-direction packet, as it arrived
    service: str | None  # its destination as it arrived (before DNAT)
    packets: int
    bytes: int  # sum of IPv4 total lengths
    first_time: str | None  # ISO 8601 UTC, first sighting
    last_time: str | None  # last sighting
    requests: int  # original-direction packets
    replies: int
    delivered: int
    dropped: int
    unknown: int
    slowest_ns: int  # slowest packet's first-to-last sighting
    slowest_packet_id: int


@dataclass(frozen=True)
class DropStats:
    reason: str
    last_seen: str  # label of the packet's last sighting before the drop ('-' if none)
    packets: int


@dataclass(frozen=True)
class LatencySegment:
    """One segment of latency mode's in-kernel histograms, all intervals merged."""
    segment: str  # "<hop> → <hop>" (latency.HOP_NAMES), or "end to end request"/"end to end reply"
    hop_from: str | None  # JSON/CSV "from"; None for end-to-end rows
    hop_to: str | None  # JSON/CSV "to"
    packets: int
    p50_ns: float | None  # interpolated inside buckets (latency.percentile); None = no packets
    p90_ns: float | None
    p99_ns: float | None
    max_ns: float | None  # upper edge of the highest nonzero bucket

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["from"], d["to"] = d.pop("hop_from"), d.pop("hop_to")
        return {k: d[k] for k in ("segment", "from", "to", "packets", "p50_ns", "p90_ns", "p99_ns", "max_ns")}


E2E_LABELS = {"original": "end to end request", "reply": "end to end reply"}
LATENCY_COLUMNS = ("segment", "from", "to", "packets", "p50_ns", "p90_ns", "p99_ns", "max_ns")


@dataclass
class LatencySummary:
    """The capture's histogram rows (`tracer latency -w`) merged exactly."""
    intervals: int
    seconds: float  # sum of the intervals' lengths
    start: str | None  # ISO 8601 UTC: first interval's start
    end: str | None  # last interval's end
    packets: int  # packets first seen in the recorded intervals
    segments: list[LatencySegment]  # most packets first
    end_to_end: dict[str, LatencySegment]  # "original"/"reply"
    missing: dict[str, int]  # hop -> packets that never reached a next hop (per recording, summed)
    sightings: dict[str, int]  # hop -> sightings

    def rows(self) -> list[LatencySegment]:
        """Segments, then the end-to-end request and reply rows."""
        return self.segments + [self.end_to_end[d] for d in ("original", "reply") if d in self.end_to_end]

    def to_dict(self) -> dict[str, Any]:
        return {
            "intervals": self.intervals,
            "seconds": round(self.seconds, 6),
            "start": self.start,
            "end": self.end,
            "packets": self.packets,
            "segments": [s.to_dict() for s in self.segments],
            "end_to_end": {d: s.to_dict() for d, s in self.end_to_end.items()},
            "missing": self.missing,
            "sightings": self.sightings,
        }


def _latency_segment(d: Mapping[str, Any], segment: str | None = None) -> LatencySegment:
    return LatencySegment(segment or d["segment"], d.get("from"), d.get("to"), int(d["packets"]),
                          d.get("p50_ns"), d.get("p90_ns"), d.get("p99_ns"), d.get("max_ns"))


def latency_summary(rows: pa.Table | None) -> LatencySummary | None:
    """Histogram rows (kind='histogram', with ``info`` and time columns) merged
    with tracer.latency.merge_intervals; None when there are none."""
    if rows is None or rows.num_rows == 0 or "info" not in rows.column_names:
        return None
    from tracer.latency import merge_intervals

    infos, starts, ends = [], [], []
    wall = wall_ns(rows)
    kt = _ints(rows, "ktime_ns")
    for info, w, k in zip(rows["info"].to_pylist(), wall.tolist(), kt.tolist()):
        if not info:
            continue
        try:
            d = json.loads(info)
        except ValueError:
            continue
        if not isinstance(d, dict):
            continue
        infos.append(d)
        offset = w - k  # the row's time is the interval's end ktime on the wall clock
        end_kt = int(d.get("end_ktime_ns") or k)
        start_kt = int(d.get("start_ktime_ns") or end_kt - int(float(d.get("seconds") or 0) * 1e9))
        starts.append(start_kt + offset)
        ends.append(end_kt + offset)
    if not infos:
        return None
    merged = merge_intervals(infos)
    return LatencySummary(
        intervals=merged["intervals"],
        seconds=merged["seconds"],
        start=iso(min(starts)),
        end=iso(max(ends)),
        packets=merged["packets"],
        segments=[_latency_segment(s) for s in merged["segments"]],
        end_to_end={d: _latency_segment(v, E2E_LABELS[d]) for d, v in merged["end_to_end"].items()},
        missing=merged["missing"],
        sightings=merged["sightings"],
    )


def histogram_rows(table: pa.Table) -> pa.Table | None:
    """Latency-mode interval rows of a capture table (None if it has no ``kind``)."""
    if "kind" not in table.column_names:
        return None
    return table.filter(pc.fill_null(pc.equal(table["kind"].cast(pa.string()), "histogram"), False))


@dataclass
class Analysis:
    events: int
    packets: int
    flows_total: int
    verdicts: dict[str, int]
    start: str | None
    end: str | None
    segments: list[SegmentStats]
    flows: list[FlowStats]  # slowest first
    drops: list[DropStats]  # most packets first
    lost: dict[str, dict[str, int]] | None  # sensor -> {"events", "lost"}; None = not reported
    metadata: dict[str, str]
    # For plots: each segment's latencies (ns, sorted), keyed (direction, segment).
    samples: dict[tuple[str, str], np.ndarray]
    # Latency mode's histogram rows merged (None: the capture has none).
    latency: LatencySummary | None = None
    # What `lost` counts: "journeys", or "events" (per-sighting and older captures).
    record_unit: str = "events"

    @property
    def duration_s(self) -> float:
        if not self.start or not self.end:
            return 0.0
        return (datetime.fromisoformat(self.end) - datetime.fromisoformat(self.start)).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "packets": self.packets,
            "flows": self.flows_total,
            "verdicts": self.verdicts,
            "start": self.start,
            "end": self.end,
            "segments": [dict(vars(s)) for s in self.segments],
            "flow_summary": [dict(vars(f)) for f in self.flows],
            "drops": [dict(vars(d)) for d in self.drops],
            "lost_events": self.lost,
            "metadata": self.metadata,
            "latency": self.latency.to_dict() if self.latency is not None else None,
        }


# --- column helpers ------------------------------------------------------------


def _ints(table: pa.Table, name: str, dtype=np.int64) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=dtype)
    return pc.fill_null(table[name], 0).to_numpy().astype(dtype, copy=False)


def _codes(table: pa.Table, name: str) -> tuple[np.ndarray, list]:
    """A string column as (dictionary indices with -1 for null, values)."""
    if name not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64), []
    col = table[name]
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    idx = pc.fill_null(col.indices, -1).to_numpy().astype(np.int64)
    return idx, col.dictionary.to_pylist()


def _lut(values: list, default: Any = None) -> np.ndarray:
    """values as an object array with one extra slot at [-1] for null codes."""
    out = np.empty(len(values) + 1, dtype=object)
    out[:-1] = values
    out[-1] = default
    return out


def wall_ns(table: pa.Table, metadata: Mapping[str, str] | None = None) -> np.ndarray:
    """Wall clock ns per row: the ``time`` column, or ktime plus the capture's
    ktime-to-wall offset where a row has no time."""
    kt = _ints(table, "ktime_ns")
    if "time" not in table.column_names:
        return kt + int((metadata or {}).get("ktime_offset_ns") or 0)
    tcol = table["time"].cast(pa.int64())
    t = pc.fill_null(tcol, 0).to_numpy().astype(np.int64)
    missing = pc.is_null(tcol).to_numpy(zero_copy_only=False)
    if missing.any():
        t[missing] = kt[missing] + int((metadata or {}).get("ktime_offset_ns") or 0)
    return t


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    sec, rem = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem:09d}Z"


def clean_metadata(metadata: Mapping | None) -> dict[str, str]:
    """Schema metadata with bytes decoded and the 'tracer.' prefix dropped."""
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        k = k.decode() if isinstance(k, bytes) else str(k)
        v = v.decode(errors="replace") if isinstance(v, bytes) else ("" if v is None else v)
        out[k[len(META_PREFIX):] if k.startswith(META_PREFIX) else k] = v if isinstance(v, str) else json.dumps(v)
    return out


def event_rows(table: pa.Table) -> pa.Table:
    """Packet sightings only (a capture also holds container/stats rows)."""
    if "kind" not in table.column_names:
        return table
    return table.filter(pc.fill_null(pc.equal(table["kind"].cast(pa.string()), "event"), False))


# --- the vectorised pass -------------------------------------------------------


class _Sorted:
    """Event rows of identified packets, sorted by (packet_id, drop last, ktime),
    plus per-packet arrays. The shared first step of every analysis."""

    def __init__(self, table: pa.Table, metadata: Mapping[str, str]) -> None:
        table = event_rows(table)
        table = table.filter(pc.fill_null(pc.not_equal(table["packet_id"], 0), False)) if table.num_rows else table
        table = table.unify_dictionaries().combine_chunks() if table.num_rows else table
        self.table = table
        n = table.num_rows

        hook, hooks = _codes(table, "hook")
        stage, stages = _codes(table, "nat_stage")
        role, roles = _codes(table, "if_role")
        # A tc program inside a container's netns is a container sighting (as in journeys).
        in_ns = (_ints(table, "flags") & FLAG_IN_CONTAINER_NS) != 0
        if in_ns.any():
            if "container" not in roles:
                roles = roles + ["container"]
            role = np.where(in_ns & (role < 0), roles.index("container"), role)

        # Label each distinct (hook, stage, role) once with Hop.label / is_terminal.
        ns_, nr = len(stages) + 1, len(roles) + 1
        combo = (hook + 1) * ns_ * nr + (stage + 1) * nr + (role + 1)
        ucombo, inverse = np.unique(combo, return_inverse=True)
        labels: list[str] = []
        combo_label = np.empty(len(ucombo), dtype=np.int64)
        combo_terminal = np.zeros(len(ucombo), dtype=bool)
        for i, c in enumerate(ucombo.tolist()):
            h, rest = divmod(c, ns_ * nr)
            s, r = divmod(rest, nr)
            hop = Hop(
                hook=hooks[h - 1] if h else "?", nat_stage=stages[s - 1] if s else None, ifname=None,
                if_role=roles[r - 1] if r else None, netns=0, container=None, src=None, dst=None,
                ktime_ns=0, dt_ns=0, drop_reason=None,
            )
            if hop.label not in labels:
                labels.append(hop.label)
            combo_label[i] = labels.index(hop.label)
            combo_terminal[i] = is_terminal(hop)
        self.labels = labels
        label = combo_label[inverse] if n else np.zeros(0, dtype=np.int64)
        terminal = combo_terminal[inverse] if n else np.zeros(0, dtype=bool)
        is_drop = hook == (hooks.index("drop") if "drop" in hooks else -2)

        pid = _ints(table, "packet_id", np.uint64)
        kt = _ints(table, "ktime_ns")
        order = np.lexsort((kt, is_drop, pid))
        # Only the first drop row of a packet counts (journeys do the same).
        pid_o, drop_o = pid[order], is_drop[order]
        dup = np.zeros(n, dtype=bool)
        if n > 1:
            dup[1:] = drop_o[1:] & drop_o[:-1] & (pid_o[1:] == pid_o[:-1])
        self.order = order[~dup]
        o = self.order
        self.pid, self.kt, self.label = pid[o], kt[o], label[o]
        self.is_drop, self.terminal = is_drop[o], terminal[o]
        self.wall = wall_ns(table, metadata)[o]

        m = len(o)
        self.pstart = np.flatnonzero(np.r_[True, self.pid[1:] != self.pid[:-1]]) if m else np.zeros(0, np.int64)
        self.pend = np.append(self.pstart[1:], m)
        self.psize = self.pend - self.pstart


def _reduce(func: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return func.reduceat(values, starts) if len(starts) else values[:0]


def _quantiles(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Per group quantile of ``values`` sorted within groups (numpy 'linear')."""
    pos = starts + q * (counts - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    v = values.astype(np.float64)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _segments(s: _Sorted, direction: np.ndarray) -> tuple[list[SegmentStats], dict[tuple[str, str], np.ndarray]]:
    """Per (direction, label pair): the same two hooks are different places in
    the path for requests and replies (PREROUTING on the NIC vs on docker0)."""
    if len(s.pid) < 2:
        return [], {}
    idx = np.flatnonzero(s.pid[1:] == s.pid[:-1])
    if not len(idx):
        return [], {}
    nl = len(s.labels)
    row_packet = np.repeat(np.arange(len(s.pstart)), s.psize)[idx]
    dir_rank = np.array([2, 0, 1])[direction[row_packet]]  # original, reply, unknown
    key = (dir_rank * nl + s.label[idx]) * nl + s.label[idx + 1]
    dt = s.kt[idx + 1] - s.kt[idx]
    order = np.lexsort((dt, key))
    key, dt, idx, row_packet = key[order], dt[order], idx[order], row_packet[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.append(starts, len(key)))
    q = {p: _quantiles(dt, starts, counts, p) for p in (0.5, 0.9, 0.99)}
    maxes = dt[starts + counts - 1]

    # Order along the path: by direction, then by the segment's average
    # position within its packets' journeys.
    position = (idx - s.pstart[row_packet]).astype(np.float64)
    mean_pos = np.add.reduceat(position, starts) / counts
    rank = np.lexsort((-counts, mean_pos, key[starts] // (nl * nl)))

    out, samples = [], {}
    for g in rank.tolist():
        d, rest = divmod(int(key[starts[g]]), nl * nl)
        a, b = divmod(rest, nl)
        name = f"{s.labels[a]} {ARROW} {s.labels[b]}"
        dname = ("original", "reply", "-")[d]
        out.append(SegmentStats(dname, name, int(counts[g]), float(q[0.5][g]), float(q[0.9][g]), float(q[0.99][g]), int(maxes[g])))
        samples[(dname, name)] = dt[starts[g]: starts[g] + counts[g]]
    return out, samples


class CaptureAnalysis:
    """All the numbers of one capture (or several files read as one)."""

    def __init__(self, table: pa.Table, metadata: Mapping | None = None, stats: Mapping | None = None,
                 histograms: pa.Table | None = None) -> None:
        self.metadata = clean_metadata(metadata)
        self.stats = dict(stats) if stats else None
        # Latency-mode rows: given, else whatever the table holds (a full capture table).
        self.histograms = histograms if histograms is not None else histogram_rows(table)
        self.s = _Sorted(table, self.metadata)
        s, t = self.s, self.s.table
        o = s.order
        ps, pe = s.pstart, s.pend

        # Per-packet facts (as journeys: taken from whichever row knows them).
        dcodes, dvalues = _codes(t, "direction")
        dmap = np.array([_DIR_CODES.get(v, 0) for v in dvalues] + [0], dtype=np.int8)
        self.p_direction = _reduce(np.maximum, dmap[dcodes][o], ps).astype(np.int64)
        self.p_flow = _reduce(np.maximum, _ints(t, "flow_id", np.uint64)[o], ps)
        self.p_first_kt = s.kt[ps]
        self.p_duration = _reduce(np.maximum, s.kt, ps) - self.p_first_kt if len(ps) else s.kt[:0]
        self.p_wall = s.wall[ps]
        self.p_length = _ints(t, "length")[o][ps]
        last = pe - 1
        # As journeys.verdict_of: a drop right after a terminal sighting (e.g.
        # QUEUE_PURGE at the receiving socket) is a delivered packet.
        self.p_verdict = ps
        if len(ps):
            after_delivery = s.is_drop[last] & (last > ps) & s.terminal[np.maximum(last - 1, ps)]
            dropped = s.is_drop[last] & ~after_delivery
            self.p_verdict = np.where(dropped, 1, np.where(s.terminal[last] | after_delivery, 0, 2))
        names, name_values = _codes(t, "container_name")
        ids, id_values = _codes(t, "container_id")
        # container name, else short id (codes offset past the names)
        ccode = np.where(names >= 0, names, np.where(ids >= 0, ids + len(name_values), -1))
        self.container_values = name_values + [v[:12] if v else None for v in id_values]
        self.p_container = _reduce(np.maximum, ccode[o], ps)
        self._drop_reason = _codes(t, "drop_reason")

    # -- the summary ------------------------------------------------------------

    def analyse(self) -> Analysis:
        s = self.s
        segments, samples = _segments(s, self.p_direction)
        counts = np.bincount(self.p_verdict, minlength=3) if len(self.p_verdict) else np.zeros(3, int)
        flows = self.flows()
        wall = s.wall
        return Analysis(
            events=int(len(s.pid)),
            packets=int(len(s.pstart)),
            flows_total=len(flows),
            verdicts={v: int(c) for v, c in zip(VERDICTS, counts)},
            start=iso(int(wall.min())) if len(wall) else None,
            end=iso(int(wall.max())) if len(wall) else None,
            segments=segments,
            flows=flows,
            drops=self.drops(),
            lost=self.lost(),
            record_unit=self.record_unit,
            metadata=self.metadata,
            samples=samples,
            latency=self.latency(),
        )

    def latency(self) -> LatencySummary | None:
        """Latency mode's interval histograms merged (None without any)."""
        return latency_summary(self.histograms)

    def drops(self) -> list[DropStats]:
        s = self.s
        dropped = np.flatnonzero(self.p_verdict == 1)
        if not len(dropped):
            return []
        codes, values = self._drop_reason
        reason = codes[s.order][s.pend[dropped] - 1]
        before = s.pend[dropped] - 2
        seen = np.where(s.psize[dropped] > 1, s.label[np.maximum(before, 0)], -1)
        key = (reason + 1) * (len(s.labels) + 1) + (seen + 1)
        ukey, count = np.unique(key, return_counts=True)
        out = []
        for k, c in zip(ukey.tolist(), count.tolist()):
            r, l = divmod(k, len(s.labels) + 1)
            out.append(DropStats(values[r - 1] if r else "unknown", s.labels[l - 1] if l else "-", int(c)))
        return sorted(out, key=lambda d: (-d.packets, d.reason, d.last_seen))

    def flows(self) -> list[FlowStats]:
        s, t = self.s, self.s.table
        has = np.flatnonzero(self.p_flow != 0)
        if not len(has):
            return []
        flow = self.p_flow[has]
        first = self.p_wall[has]
        # Sort packets by (flow, not original, time): a group's first packet
        # is then the flow's first request, which names client and service.
        not_orig = self.p_direction[has] != 1
        order = np.lexsort((first, not_orig, flow))
        has, flow, first = has[order], flow[order], first[order]
        starts = np.flatnonzero(np.r_[True, flow[1:] != flow[:-1]])
        counts = np.diff(np.append(starts, len(flow)))
        last_wall = first + self.p_duration[has]

        direction = self.p_direction[has]
        verdict = self.p_verdict[has]
        dur = self.p_duration[has]
        # slowest packet per flow: position of the max duration inside each group
        group = np.repeat(np.arange(len(starts)), counts)
        by_dur = np.lexsort((dur, group))
        slowest_at = by_dur[starts + counts - 1]

        rows = s.order[s.pstart[has[starts]]]  # first request's first sighting, in table rows
        protocol_c, protocol_v = _codes(t, "protocol")
        sip_c, sip_v = _codes(t, "src_ip")
        dip_c, dip_v = _codes(t, "dst_ip")
        sport, dport = _ints(t, "src_port")[rows], _ints(t, "dst_port")[rows]
        protocol = _lut(protocol_v)[protocol_c[rows]]
        sip, dip = _lut(sip_v)[sip_c[rows]], _lut(dip_v)[dip_c[rows]]
        container = _lut(self.container_values)[_reduce(np.maximum, self.p_container[has], starts)]

        def per_flow(values: np.ndarray, func: np.ufunc = np.add) -> list[int]:
            return _reduce(func, values.astype(np.int64), starts).tolist()

        cols = dict(
            packets=counts.tolist(),
            bytes=per_flow(self.p_length[has]),
            first=per_flow(first, np.minimum),
            last=per_flow(last_wall, np.maximum),
            requests=per_flow(direction == 1),
            replies=per_flow(direction == 2),
            delivered=per_flow(verdict == 0),
            dropped=per_flow(verdict == 1),
            unknown=per_flow(verdict == 2),
        )
        slow_ns = dur[slowest_at].tolist()
        slow_pid = s.pid[s.pstart[has[slowest_at]]].tolist()
        out = []
        for g, fid in enumerate(flow[starts].tolist()):
            p = protocol[g]
            out.append(
                FlowStats(
                    flow_id=int(fid), container=container[g], protocol=p,
                    client=_endpoint_plain(sip[g], int(sport[g]), p == "icmp"), service=_endpoint_plain(dip[g], int(dport[g]), p == "icmp"),
                    packets=cols["packets"][g], bytes=cols["bytes"][g],
                    first_time=iso(cols["first"][g]), last_time=iso(cols["last"][g]),
                    requests=cols["requests"][g], replies=cols["replies"][g],
                    delivered=cols["delivered"][g], dropped=cols["dropped"][g], unknown=cols["unknown"][g],
                    slowest_ns=int(slow_ns[g]), slowest_packet_id=int(slow_pid[g]),
                )
            )
        out.sort(key=lambda f: (-f.slowest_ns, f.flow_id))
        return out

    @property
    def record_unit(self) -> str:
        """What the kernel's counted records are: 'journeys', or 'events'
        (per-sighting captures, latency mode, captures written before)."""
        return f"{(self.stats or {}).get('record', 'event')}s"

    def lost(self) -> dict[str, dict[str, int]] | None:
        """Events and lost events per sensor, from the capture's closing stats
        row, else from schema metadata; None when the capture reports neither."""
        source: Mapping[str, Any] | None = self.stats
        if not source or ("lost" not in source and "events" not in source):
            meta = {}
            for key in ("lost", "events"):
                try:
                    meta[key] = json.loads(self.metadata[key])
                except (KeyError, ValueError):
                    pass
            source = meta or None
        if not source:
            return None
        lost, events = source.get("lost") or {}, source.get("events") or {}
        if not isinstance(lost, Mapping):
            lost = {"total": lost}
        if not isinstance(events, Mapping):
            events = {"total": events}
        return {
            str(name): {"events": int(events.get(name, 0) or 0), "lost": int(lost.get(name, 0) or 0)}
            for name in dict.fromkeys([*events, *lost])
        }

    # -- for plots ----------------------------------------------------------------

    def throughput(self, bins: int = 120) -> dict[str, np.ndarray]:
        """Events/s, packets/s and bytes/s over time (packets and bytes counted
        at each packet's first sighting). ``t`` is seconds since the first event."""
        s = self.s
        if not len(s.wall):
            return {k: np.zeros(0) for k in ("t", "events_per_s", "packets_per_s", "bytes_per_s")}
        t0 = int(s.wall.min())
        span = max(int(s.wall.max()) - t0, 1)
        width = _nice_ns(span / bins)
        nb = span // width + 1
        ev = np.bincount((s.wall - t0) // width, minlength=nb)
        pk_bin = (self.p_wall - t0) // width
        pk = np.bincount(pk_bin, minlength=nb)
        by = np.bincount(pk_bin, weights=self.p_length, minlength=nb)
        scale = 1e9 / width
        if nb > 2:  # the last bin is partial: its rate would read as a sudden fall
            ev, pk, by, nb = ev[:-1], pk[:-1], by[:-1], nb - 1
        return {
            "t": np.arange(nb) * width / 1e9,
            "events_per_s": ev * scale,
            "packets_per_s": pk * scale,
            "bytes_per_s": by * scale,
            "bin_s": np.array([width / 1e9]),
        }

    def slowest_journeys(self, n: int = 20) -> list[Journey]:
        """The n packets with the longest first-to-last sighting, slowest first."""
        if not len(self.p_duration):
            return []
        n = min(n, len(self.p_duration))
        top = np.argpartition(-self.p_duration, n - 1)[:n]
        ids = pa.array(self.s.pid[self.s.pstart[top]], pa.uint64())
        t = self.s.table
        journeys = build_journeys(t.filter(pc.is_in(t["packet_id"], value_set=ids)))
        return sorted(journeys, key=lambda j: (-(j.last_ktime - j.first_ktime), j.packet_id))


def _nice_ns(value: float) -> int:
    """The smallest 1-2-5 series step (ns, at least 1 µs) not below value."""
    step = 1000
    while True:
        for m in (1, 2, 5):
            if step * m >= value:
                return step * m
        step *= 10


def analyse(table: pa.Table, metadata: Mapping | None = None, stats: Mapping | None = None,
            histograms: pa.Table | None = None) -> Analysis:
    return CaptureAnalysis(table, metadata, stats, histograms).analyse()
