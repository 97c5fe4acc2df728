"""What a capture's analysis gives back (tracer.analysis): hop segments,
flows, drops, and latency mode's histogram rows merged (``LatencySummary``),
each with the plain data `stats --json`/`--csv` and the report print."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.analysis_rows import _ints, iso, wall_ns
from tracer.ids import format_id
from tracer.recorded_hooks import RecordedHooks
from tracer.sensors.hook_profile import drop_place

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
    slowest_ns: int | None  # slowest packet's first-to-last sighting; None: no packet of it has a ktime_ns
    slowest_packet_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON/CSV fields: the ids as every output prints them (tracer/ids.py)."""
        d = dict(vars(self))
        d["flow_id"], d["slowest_packet_id"] = format_id(self.flow_id), format_id(self.slowest_packet_id)
        return d


@dataclass(frozen=True)
class DropStats:
    reason: str
    last_seen: str  # label of the packet's last sighting before the drop ('-' if none)
    packets: int

    def to_dict(self, hooks: str = "all") -> dict[str, Any]:
        """JSON/CSV fields: ``place`` is where the drop happened as far as
        the capture's hook profile ``hooks`` tells (text's "last seen"
        column: tracer/sensors/hook_profile.py drop_place); ``last_seen``
        stays the hop label."""
        return dict(zip(DROP_COLUMNS, (self.reason, self.last_seen, self.packets, drop_place(hooks, self.last_seen))))


# ``place`` came last (session 13): a reader of the CSV by position keeps its columns.
DROP_COLUMNS = ("reason", "last_seen", "packets", "place")


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
    hdr: str | None = None  # the merged buckets in HdrHistogram's encoding (tracer/hdr.py)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["from"], d["to"] = d.pop("hop_from"), d.pop("hop_to")
        return {k: d[k] for k in ("segment", "from", "to", "packets", "p50_ns", "p90_ns", "p99_ns", "max_ns", "hdr")}


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

    def to_dict(self, flows: bool = True) -> dict[str, Any]:
        """Everything as plain data; ``flows=False`` leaves ``flow_summary``
        empty, for a caller that writes the flows as it reads them."""
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
                          d.get("p50_ns"), d.get("p90_ns"), d.get("p99_ns"), d.get("max_ns"), d.get("hdr"))


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
    flows: Sequence[FlowStats]  # slowest first (aggregate.FlowRows: read lazily)
    drops: list[DropStats]  # most packets first
    lost: dict[str, dict[str, int]] | None  # sensor -> {"events", "lost"}; None = not reported
    metadata: dict[str, str]
    # For plots: each segment's latencies (ns, sorted), keyed (direction, segment).
    samples: dict[tuple[str, str], np.ndarray]
    # Latency mode's histogram rows merged (None: the capture has none).
    latency: LatencySummary | None = None
    # What `lost` counts: "journeys", or "events" (per-sighting and older captures).
    record_unit: str = "events"
    # Each file's hook profile: drops are placed by its ``placing`` (``metadata`` only shows it).
    recorded_hooks: RecordedHooks = RecordedHooks()

    @property
    def duration_s(self) -> float:
        if not self.start or not self.end:
            return 0.0
        return (datetime.fromisoformat(self.end) - datetime.fromisoformat(self.start)).total_seconds()

    def to_dict(self, flows: bool = True) -> dict[str, Any]:
        """Everything as plain data; ``flows=False`` leaves ``flow_summary``
        empty, for a caller that writes the flows as it reads them."""
        return {
            "events": self.events,
            "packets": self.packets,
            "flows": self.flows_total,
            "verdicts": self.verdicts,
            "start": self.start,
            "end": self.end,
            "segments": [dict(vars(s)) for s in self.segments],
            "flow_summary": [f.to_dict() for f in self.flows] if flows else [],
            "drops": [d.to_dict(self.recorded_hooks.placing) for d in self.drops],
            "lost_events": self.lost,
            "metadata": self.metadata,
            "latency": self.latency.to_dict() if self.latency is not None else None,
        }
