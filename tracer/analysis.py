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

import contextlib
import json
from collections import Counter
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.analysis_result import (ARROW, Analysis, DropStats, FlowStats, LatencySummary, SegmentStats, histogram_rows,
                                    latency_summary)
from tracer.analysis_rows import PacketFacts, _codes, _ints, _reduce, _Sorted, clean_metadata, iso
from tracer.events import ICMP_NAMES
from tracer.interning import Interner
from tracer.journey_rows import _DIRECTION_CODES as _DIR_CODES
from tracer.journey_rows import _endpoint_plain, _factorize, next_in_packet, verdict_codes
from tracer.journeys import VERDICTS, Journey, build_journeys
from tracer.recorded_hooks import RecordedHooks
from tracer.segment_latency import SegmentLatencies
from tracer.side_thread import SideThread

# --- the vectorised pass -------------------------------------------------------


QUANTILES = (0.5, 0.9, 0.99)
_SAMPLE_CAP = 20_000  # latencies kept per segment for plots (a uniform sample past that)
_DIR_NAMES = ("original", "reply", "-")  # segment direction by rank: requests, replies, unknown
_LABEL_BITS = 10  # labels per capture: a handful of hooks x stages x roles


class CaptureAnalysis:
    """All the numbers of one capture (or several files read as one).

    One pass over chunks of whole packets (``add``; ``of_capture`` streams a
    capture through tracer.packet_window): per chunk, numpy does the
    per-packet work on columns (``_Sorted``), small totals (verdicts, drops,
    plot samples, the slowest journeys) are kept here, and hop segments and
    packets go to DuckDB (tracer.aggregate), which reduces them at
    ``finish`` in bounded memory. An in-memory table is one chunk."""

    def __init__(self, table: pa.Table | None = None, metadata: Mapping | None = None, stats: Mapping | None = None,
                 histograms: pa.Table | None = None, *, slowest: int = 20,
                 recorded_hooks: RecordedHooks | None = None) -> None:
        from tracer.aggregate import Store, Strings

        self.metadata = clean_metadata(metadata)
        # the files' hook profiles (a reader's), else one capture's from its metadata
        self.recorded_hooks = RecordedHooks.of(self.metadata) if recorded_hooks is None else recorded_hooks
        self.stats = dict(stats) if stats else None
        # Latency-mode rows: given, else whatever the table holds (a full capture table).
        self.histograms = histograms if histograms is not None or table is None else histogram_rows(table)
        self._keep_slowest = max(slowest, 20)
        self._store = Store()
        self._labels: Interner[str] = Interner()  # hop labels of every chunk, in one id space
        self._protocols, self._ips, self._containers = Strings(), Strings(), Strings()
        self.events = 0
        self.packets = 0
        self._verdicts = np.zeros(3, np.int64)
        self._drops: Counter[tuple[str, str]] = Counter()
        self._wall = (None, None)
        self._segment_ids: dict[int, int] = {}  # segment key -> index in self._latencies
        self._segment_keys: list[int] = []
        self._latencies = SegmentLatencies()
        self._slow: list[tuple[int, int, pa.Table]] = []  # (duration, packet id, rows), slowest first
        self._result: Analysis | None = None
        if table is not None:
            self.add(table)

    @classmethod
    def of_capture(cls, capture: Any, *, slowest: int = 20, also: tuple = (), journeys: bool = True) -> "CaptureAnalysis":
        """Stream a capture (tracer.capture.reader.CaptureStream) through the analysis;
        each chunk of whole packets also goes to the ``add`` of every object in
        ``also`` (e.g. tracer.paths.PathStats) as sighting rows, in the same
        single pass. Journey rows (schema 2) are analysed as they are stored
        (``add_journeys``), not laid out as sightings unless ``also`` needs them;
        ``journeys=False`` lays everything out (the sighting path: the tests'
        oracle). Both paths cut journey rows into whole packets with one
        window (packet_window.journey_window), the sighting path laying out
        each chunk it hands on: they read the same packets by construction,
        also where a cut is forced early (max_held_rows) and splits one."""
        from tracer.journey_capture import JourneyBatch, journey_sightings
        from tracer.packet_window import NEW_RECORDING, PacketWindow, journey_window as make_journey_window

        ca = cls(None, capture.metadata, slowest=slowest, recorded_hooks=capture.recorded_hooks)
        sightings = PacketWindow()
        journey_window = make_journey_window()
        registry = None

        # The other consumers' work on a chunk (the report's path pass) runs
        # on a thread of its own beside the analysis of the next chunk.
        side = SideThread() if also else None

        def journey_chunk(chunk: pa.Table) -> None:
            if not journeys:  # the sighting path: the same whole packets, laid out
                sighting_chunk(journey_sightings(chunk, registry))
                return
            taken, rest = ca.add_journeys(chunk, registry)
            if side is not None:
                side.submit(_journeys_beside, also, taken, rest, chunk, registry)

        def sighting_chunk(chunk: pa.Table) -> None:
            ca.add(chunk)
            if side is not None:
                side.submit(_sightings_beside, also, chunk)

        items = capture.sightings_or_journeys(read_ahead=4, boundaries=True)
        with side if side is not None else contextlib.nullcontext():
            for item in items:
                if item is NEW_RECORDING:  # another recording follows: what is held is whole
                    for chunk in journey_window.add(item):
                        journey_chunk(chunk)
                    for chunk in sightings.add(item):
                        sighting_chunk(chunk)
                elif isinstance(item, JourneyBatch):
                    registry = item.registry
                    for chunk in journey_window.add(item.rows):
                        journey_chunk(chunk)
                else:
                    for chunk in sightings.add(item):
                        sighting_chunk(chunk)
            for chunk in journey_window.flush():
                journey_chunk(chunk)
            for chunk in sightings.flush():
                sighting_chunk(chunk)
        ca.stats = capture.stats
        ca.histograms = capture.histograms
        return ca

    # -- one chunk of whole packets ----------------------------------------------

    def add(self, table: pa.Table) -> None:
        """Rows of whole packets (EVENT_SCHEMA, or a capture table)."""
        if self._result is not None:
            raise RuntimeError("analysis already finished")
        s = _Sorted(table, self.metadata)
        if not len(s.pid):
            return
        t, o, ps = s.table, s.order, s.pstart
        # Per-packet facts (as journeys: taken from whichever row knows them).
        dcodes, dvalues = _codes(t, "direction")
        dmap = np.array([_DIR_CODES.get(v, 0) for v in dvalues] + [0], dtype=np.int8)
        names, name_values = _codes(t, "container_name")
        ids, id_values = _codes(t, "container_id")
        # container name, else short id (codes offset past the names)
        ccode = np.where(names >= 0, names, np.where(ids >= 0, ids + len(name_values), -1))
        container = self._containers.codes(name_values + [v[:12] if v else None for v in id_values])
        rows = o[ps]  # each packet's first sighting, in table rows

        def reasons(dropped: np.ndarray) -> list[str]:
            codes, values = _codes(t, "drop_reason")
            return [values[r] if r >= 0 else "unknown" for r in codes[o][s.pend[dropped] - 1].tolist()]

        def rows_of(pids: np.ndarray) -> pa.Table:
            return t.filter(pc.is_in(t["packet_id"], value_set=pa.array(pids, pa.uint64())))

        self._add_packets(s, PacketFacts(
            direction=_reduce(np.maximum, dmap[dcodes][o], ps).astype(np.int64),
            flow=_reduce(np.maximum, _ints(t, "flow_id", np.uint64)[o], ps),
            length=_ints(t, "length")[rows].astype(np.int32),
            protocol=self._coded(t, "protocol", self._protocols, rows),
            src_ip=self._coded(t, "src_ip", self._ips, rows), src_port=_ints(t, "src_port")[rows].astype(np.int32),
            dst_ip=self._coded(t, "dst_ip", self._ips, rows), dst_port=_ints(t, "dst_port")[rows].astype(np.int32),
            container=container[_reduce(np.maximum, ccode[o], ps)],
            reasons=reasons, rows_of=rows_of))

    def add_journeys(self, rows: pa.Table, registry: Any) -> tuple[tuple | None, pa.Table | None]:
        """Journey rows (schema 2, whole packets; their places ids of
        ``registry``, a journey_capture.PlaceRegistry) without laying them
        out as sightings: tracer/journey_analysis.py reads hops off the list
        columns. Packets it does not take that way (in parts, hops out of
        order, more than one container) go through ``add`` as sighting
        rows. Returns what it took, (hops, facts) of journey_packets or None,
        and the sighting rows of the rest (None: none), for the path pass."""
        from tracer.journey_analysis import journey_packets
        from tracer.journey_capture import journey_sightings

        if self._result is not None:
            raise RuntimeError("analysis already finished")
        hops, facts, rest = journey_packets(rows, registry, self)
        if hops is not None:
            self._add_packets(hops, facts)
        rest_rows = None
        if rest is not None and rest.num_rows:
            rest_rows = journey_sightings(rest, registry)
            self.add(rest_rows)
        return ((hops, facts) if hops is not None else None), rest_rows

    def _add_packets(self, s: Any, f: "PacketFacts") -> None:
        """One chunk of packets: ``s`` their sightings in journey order
        (``_Sorted``'s arrays: pid, kt, label into labels, is_drop, terminal,
        wall, pstart, pend, psize), ``f`` one fact per packet."""
        ps, pe = s.pstart, s.pend
        self.events += len(s.pid)
        self.packets += len(ps)
        has_clock = s.clocked
        wall = s.wall if has_clock is None else s.wall[has_clock]
        if len(wall):  # a row without a moment (a damaged capture's) is in no time span
            lo, hi = int(wall.min()), int(wall.max())
            self._wall = (lo if self._wall[0] is None else min(lo, self._wall[0]),
                          hi if self._wall[1] is None else max(hi, self._wall[1]))
        first_wall, duration = _packet_times(s, has_clock)
        verdict, _ = verdict_codes(s.terminal, s.is_drop, ps, pe - 1)
        self._verdicts += np.bincount(verdict, minlength=3)
        label_ids = np.array([self._labels.id_of(x) for x in s.labels], np.int64)
        self._add_drops(s, verdict, f.reasons)
        segments = self._segments(s, f.direction, label_ids)
        packets = pa.table({
            "packet_id": s.pid[ps], "flow_id": f.flow, "first_wall": first_wall, "duration": duration,
            "length": f.length, "sightings": s.psize.astype(np.int32),
            "direction": f.direction.astype(np.int8), "verdict": verdict.astype(np.int8),
            "protocol": f.protocol, "src_ip": f.src_ip, "src_port": f.src_port,
            "dst_ip": f.dst_ip, "dst_port": f.dst_port, "container": f.container,
        })
        self._store.add(segments, packets)
        self._keep_slow(s, pc.fill_null(duration, -1).to_numpy(zero_copy_only=False), f.rows_of)

    @staticmethod
    def _coded(t: pa.Table, name: str, strings: Any, rows: np.ndarray) -> np.ndarray:
        codes, values = _codes(t, name)
        return strings.codes(values)[codes[rows]]

    def _segments(self, s: "_Sorted", direction: np.ndarray, label_ids: np.ndarray) -> pa.Table:
        """Consecutive sightings of a packet, keyed per (direction, label
        pair): the same two hooks are different places in the path for
        requests and replies (PREROUTING on the NIC vs on docker0). Counted
        in the latency histograms; the rows for DuckDB returned."""
        # A row and the next (one packet: the next starts none), as masks over
        # contiguous arrays rather than gathers through their indices.
        n = len(s.pid)
        pair = next_in_packet(n, s.pstart)
        if s.timed is not None:  # a row without a ktime_ns is no end of a latency
            pair &= s.timed[:-1] & s.timed[1:]
        dir_rank = np.repeat(np.array([2, 0, 1])[direction], s.psize)  # original, reply, unknown
        # A chunk has a handful of labels: keyed by their chunk indices (a
        # small range: counted, not hashed), then named once per distinct key.
        nl = len(s.labels)
        small = dir_rank[:-1] * nl
        small += s.label[:-1]
        small *= nl
        small += s.label[1:]
        small = small[pair]
        uniq, local = _factorize(small)
        ids = np.empty(len(uniq), np.int64)
        for i, sk in enumerate(uniq.tolist()):
            rest, b = divmod(sk, nl)
            d, a = divmod(rest, nl)
            k = (d << (2 * _LABEL_BITS)) | (int(label_ids[a]) << _LABEL_BITS) | int(label_ids[b])
            g = self._segment_ids.get(k)
            if g is None:
                g = self._segment_ids[k] = len(self._segment_keys)
                self._segment_keys.append(k)
            ids[i] = g
        dt = np.diff(s.kt)[pair]
        position = (np.arange(n - 1) - np.repeat(s.pstart, s.psize)[:-1])[pair] if n else dt
        stored = self._latencies.add(ids[local], dt, position)
        return pa.table({"key": stored, "dt": dt})

    def _add_drops(self, s: Any, verdict: np.ndarray, reasons: Callable[[np.ndarray], list[str]]) -> None:
        dropped = np.flatnonzero(verdict == 1)
        if not len(dropped):
            return
        before = s.pend[dropped] - 2
        seen = np.where(s.psize[dropped] > 1, s.label[np.maximum(before, 0)], -1)
        for r, l in zip(reasons(dropped), seen.tolist()):
            self._drops[(r, s.labels[l] if l >= 0 else "-")] += 1

    def _keep_slow(self, s: Any, duration: np.ndarray, rows_of: Callable[[np.ndarray], pa.Table]) -> None:
        """The packets with the longest first-to-last sighting so far, with
        their rows (``rows_of(packet ids)``). Ties go to the lower packet id,
        whatever the chunks: the same journeys whichever way they were read."""
        n = min(self._keep_slowest, len(duration))
        kth = np.partition(duration, len(duration) - n)[len(duration) - n]
        top = np.flatnonzero(duration > kth)
        tied = np.flatnonzero(duration == kth)
        if len(top) + len(tied) > n:
            tied = tied[np.argsort(s.pid[s.pstart[tied]], kind="stable")[: n - len(top)]]
        top = np.concatenate([top, tied])
        floor = self._slow[-1][0] if len(self._slow) >= self._keep_slowest else 0  # -1: no duration (no ktime_ns)
        top = top[duration[top] >= floor]
        if not len(top):
            return
        pids = s.pid[s.pstart[top]]
        rows = rows_of(pids)
        rows_pid = _ints(rows, "packet_id", np.uint64)
        for p, d in zip(pids.tolist(), duration[top].tolist()):
            self._slow.append((int(d), int(p), rows.filter(pa.array(rows_pid == p))))
        self._slow.sort(key=lambda x: (-x[0], x[1]))
        del self._slow[self._keep_slowest:]

    # -- the summary ------------------------------------------------------------

    def analyse(self) -> Analysis:
        """The numbers (computed once, when first asked for)."""
        if self._result is None:
            self._result = self._finish()
        return self._result

    def _finish(self) -> Analysis:
        lat = self._latencies
        quantiles = lat.quantiles(self._store.latencies, QUANTILES)
        # Order along the path: by direction, then by the segment's average
        # position within its packets' journeys, busiest first.
        keys = self._segment_keys
        mask = (1 << _LABEL_BITS) - 1
        # Ties by the labels' text, not their ids: ids are in the order labels
        # were first met, which depends on how the capture was read.
        order = sorted(range(len(keys)), key=lambda i: (keys[i] >> (2 * _LABEL_BITS), lat.pos_sum[i] / lat.count[i],
                                                         -lat.count[i], self._labels.values[(keys[i] >> _LABEL_BITS) & mask],
                                                         self._labels.values[keys[i] & mask]))
        segments, samples = [], {}
        rng = np.random.default_rng(0)
        for i in order:
            k = keys[i]
            name = f"{self._labels.values[(k >> _LABEL_BITS) & mask]} {ARROW} {self._labels.values[k & mask]}"
            dname = _DIR_NAMES[k >> (2 * _LABEL_BITS)]
            q = quantiles[i]
            segments.append(SegmentStats(dname, name, int(lat.count[i]), q[0.5], q[0.9], q[0.99], int(lat.max[i])))
            samples[(dname, name)] = lat.sample(
                i, _SAMPLE_CAP, lambda j: self._store.latencies_between(*lat.key_range(j)), rng)
        flows = self._store.flows()
        flows.make = self._flow_stats
        lo, hi = self._wall
        return Analysis(
            events=self.events,
            packets=self.packets,
            flows_total=len(flows),
            verdicts={v: int(c) for v, c in zip(VERDICTS, self._verdicts.tolist())},
            start=iso(lo) if lo is not None else None,
            end=iso(hi) if hi is not None else None,
            segments=segments,
            flows=flows,
            drops=sorted((DropStats(r, l, n) for (r, l), n in self._drops.items()),
                         key=lambda d: (-d.packets, d.reason, d.last_seen)),
            lost=self.lost(),
            record_unit=self.record_unit,
            metadata=self.metadata,
            recorded_hooks=self.recorded_hooks,
            samples=samples,
            latency=self.latency(),
        )

    def _flow_stats(self, r: dict) -> FlowStats:
        p = self._protocols.get(r["protocol"])
        icmp = p in ICMP_NAMES
        return FlowStats(
            flow_id=int(r["flow_id"]), container=self._containers.get(r["container"]), protocol=p,
            client=_endpoint_plain(self._ips.get(r["src_ip"]), int(r["src_port"]), icmp),
            service=_endpoint_plain(self._ips.get(r["dst_ip"]), int(r["dst_port"]), icmp),
            packets=int(r["packets"]), bytes=int(r["bytes"]),
            first_time=iso(r["first_wall"]), last_time=iso(r["last_wall"]),
            requests=int(r["requests"]), replies=int(r["replies"]),
            delivered=int(r["delivered"]), dropped=int(r["dropped"]), unknown=int(r["unknown"]),
            # None: none of the flow's packets has a ktime_ns (a damaged capture's), so no duration
            slowest_ns=_int_or_none(r["slowest_ns"]), slowest_packet_id=_int_or_none(r["slowest_packet_id"]),
        )

    def latency(self) -> LatencySummary | None:
        """Latency mode's interval histograms merged (None without any)."""
        return latency_summary(self.histograms)

    def drops(self) -> list[DropStats]:
        return self.analyse().drops

    def flows(self) -> Any:
        return self.analyse().flows

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
        """Sightings/s, packets/s and bytes/s over time, each packet counted at
        its first sighting (with its sightings). ``t`` is seconds since the
        first sighting."""
        self.analyse()
        lo, hi = self._wall
        if lo is None:
            return {k: np.zeros(0) for k in ("t", "events_per_s", "packets_per_s", "bytes_per_s")}
        span = max(hi - lo, 1)
        width = _nice_ns(span / bins)
        nb = span // width + 1
        ev, pk, by = self._store.throughput(lo, width, nb)
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
        kept = self._slow[:n]
        if not kept:
            return []
        journeys = build_journeys(pa.concat_tables([t for _, _, t in kept]).unify_dictionaries())
        duration = {pid: d for d, pid, _ in kept}  # over the rows with a ktime_ns (_packet_times)
        return sorted(journeys, key=lambda j: (-duration.get(j.packet_id, 0), j.packet_id))


def _journeys_beside(also: tuple, taken: tuple | None, rest: pa.Table | None, chunk: pa.Table, registry: Any) -> None:
    """A chunk of journey rows to ``also``'s consumers, as ``add_journeys``
    read it: the PathRows of the packets it took (made once, for whichever
    consumer asks first) and the sighting rows of the rest; sighting rows of
    the whole chunk to a consumer without ``add_journeys``."""
    from tracer.journey_capture import journey_sightings
    from tracer.journey_paths import path_rows

    rows = sightings = None
    for other in also:
        if hasattr(other, "add_journeys"):
            if rows is None and taken is not None:
                rows = path_rows(*taken)
            other.add_journeys(rows, rest)
        else:
            if sightings is None:
                sightings = journey_sightings(chunk, registry)
            other.add(sightings)


def _sightings_beside(also: tuple, chunk: pa.Table) -> None:
    for other in also:
        other.add(chunk)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _packet_times(s: Any, has_clock: np.ndarray | None) -> tuple[pa.Array, pa.Array]:
    """Each packet's first wall clock, over its rows with a moment
    (``has_clock``: a time or a ktime_ns; None: every row), and its duration
    (first to last sighting), over its rows with a ktime_ns (``s.timed``;
    None: every row). Null where a packet has no such row (a damaged
    capture's): no time, rather than 1970-01-01 or a duration from ktime 0."""
    ps = s.pstart
    first_wall, duration = s.wall[ps], _reduce(np.maximum, s.kt, ps) - s.kt[ps]
    big = np.iinfo(np.int64).max
    wall_known = duration_known = None
    if has_clock is not None:
        wall_known = _reduce(np.maximum, has_clock, ps)
        some = ~_reduce(np.minimum, has_clock, ps) & wall_known
        first_wall[some] = _reduce(np.minimum, np.where(has_clock, s.wall, big), ps)[some]
    if s.timed is not None:
        duration_known = _reduce(np.maximum, s.timed, ps)
        some = ~_reduce(np.minimum, s.timed, ps) & duration_known
        first_kt = _reduce(np.minimum, np.where(s.timed, s.kt, big), ps)
        last_kt = _reduce(np.maximum, np.where(s.timed, s.kt, -big), ps)
        duration[some] = (last_kt - first_kt)[some]
    return (pa.array(first_wall, pa.int64(), mask=None if wall_known is None else ~wall_known),
            pa.array(duration, pa.int64(), mask=None if duration_known is None else ~duration_known))


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
    """The numbers of an in-memory table (one chunk)."""
    return CaptureAnalysis(table, metadata, stats, histograms).analyse()
