"""Human output: one block per packet journey, a status line, and the summary
printed at exit. Plain text when ``color`` is False (pipes, tests)."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import click
import numpy as np

from tracer.ids import format_id
from tracer.wallclock import clock
from tracer.journey_rows import JourneyRows, journey_rows
from tracer.journeys import VERDICTS, Hop, Journey, hop_label, nat_translation, timed_pairs
from tracer.native import i64, native
from tracer.sensors.hook_profile import drop_place, named, start_words
from tracer.text import printable
from tracer.units import duration_text, micros_text, size_text

_ARROW = "→"
_VERDICT_STYLE = {"delivered": {"fg": "green"}, "dropped": {"fg": "red", "bold": True}, "unknown": {"fg": "yellow"}}
_NAT_STYLE = {"fg": "magenta", "bold": True}


def _style(text: str, color: bool, **style) -> str:
    return click.style(text, **style) if color and text else text


# A hop's NAT label by its code: 1 the destination changed, 2 the source, +4
# on a reply (render_rows' nat_code; native_render passes the same texts)
NAT_NAMES = {1: "DNAT", 2: "SNAT", 3: "DNAT + SNAT", 5: "reverse SNAT", 6: "reverse DNAT", 7: "reverse SNAT + reverse DNAT"}


def _style_parts(color: bool, **style) -> tuple[str, str]:
    """(prefix, suffix) click.style puts around a text."""
    if not color:
        return "", ""
    styled = click.style("\0", **style)
    head, tail = styled.split("\0")
    return head, tail


def short_id(value: int | None) -> str:
    """The id as printed everywhere (tracer/ids.py): whole, so unique on screen."""
    return format_id(value)


def format_dt(ns: int | None) -> str:
    """'+12.3µs', '+1.25ms', '+2.00s': hops on one host are µs apart; '-': no ktime_ns."""
    return "-" if ns is None else duration_text(ns, sign="+")


def _hook_text(hop: Hop) -> str:
    return f"{hop.hook}/{hop.nat_stage}" if hop.nat_stage else hop.hook


def _flow_text(src: str | None, dst: str | None) -> str:
    return f"{src or '?'} {_ARROW} {dst or '?'}"


def render_journey(j: Journey, color: bool) -> str:
    """One block: a header naming the packet, then its hops in time order."""
    verdict = j.verdict + (f" {printable(j.drop_reason)}" if j.drop_reason else "")
    header = [
        clock(j.time_ns) or "-",
        f"#{short_id(j.packet_id)}",
        j.protocol or "?",
        *([j.tcp_flags] if j.tcp_flags else []),
        _flow_text(j.src, j.dst),
    ]
    parts = [
        " ".join(header),
        j.direction or "?",
        f"flow {short_id(j.flow_id)}",
        *([f"[{printable(j.container)}{' → ' + printable(j.to_container) if j.to_container else ''}]"]
          if j.container else []),
        _style(verdict, color, **_VERDICT_STYLE.get(j.verdict, {})),
    ]
    lines = [_style("  ".join(parts[:1]), color, bold=True) + "  " + "  ".join(parts[1:])]

    # Each hop's texts once (widths and rows both need them): this runs per
    # hop, and the human path's cost is mostly here.
    hops = j.hops
    dts = [format_dt(h.dt_ns) for h in hops]
    hooks = [f"{h.hook}/{h.nat_stage}" if h.nat_stage else h.hook for h in hops]
    ifs = [printable(h.ifname) if h.ifname else "-" for h in hops]  # names from the system: escaped for the terminal
    cts = [printable(h.container) if h.container else "" for h in hops]
    w_dt, w_hook, w_if = max(map(len, dts)), max(map(len, hooks)), max(map(len, ifs))
    w_ct = max(map(len, cts), default=0)
    prev: Hop | None = None  # last hop that carried addresses
    for hop, dt, hook, ifname, ct in zip(hops, dts, hooks, ifs, cts):
        head = f"    {dt.rjust(w_dt)}  {hook.ljust(w_hook)}  {ifname.ljust(w_if)}"
        if w_ct:
            head += "  " + ct.ljust(w_ct)
        if hop.hook == "drop":
            seen = f" (last seen {_hook_text(j.last_seen)})" if j.last_seen else ""
            text = f"{head}  {printable(hop.drop_reason) if hop.drop_reason else 'dropped'}{seen}"
            lines.append(_style(text.rstrip(), color, fg="red", bold=True))
            continue
        src, dst = hop.src, hop.dst
        text = f"{head}  {src or '?'} {_ARROW} {dst or '?'}"
        if prev is not None:
            label = nat_translation(prev, hop)
            if label:
                text += "  " + _style(label, color, **_NAT_STYLE)
        lines.append(text.rstrip())
        if src is not None and dst is not None:
            prev = hop
    return "\n".join(lines)


def status_line(events_per_s: float, lost: int, packets: int) -> str:
    return f"{_rate(events_per_s)} events/s  {lost:,} lost  {packets:,} packets"


def run_started(what: str, describe: str, interfaces: int, ready_s: float, writing=None, hooks: str = "all",
                kept: tuple[str, ...] = ()) -> str:
    """The line a live run starts with (``what``: 'tracing', 'latency of'); a hook profile other than
    every hook is said (--hooks lean), and the hops it leaves out attached all the same (``kept``: --iface)."""
    where = f"; writing {writing}" if writing is not None else ""
    profile = start_words(hooks, kept)
    return (f"tracer: {what} {describe} on {interfaces} interfaces{profile} (ready in {ready_s:.1f}s){where}; "
            "Ctrl-C to stop")


def waiting_for_connection(describe: str, hooks: str = "all", kept: tuple[str, ...] = ()) -> str:
    return f"tracer: waiting for a connection ({describe}{start_words(hooks, kept)}); Ctrl-C to stop"


def demo_lab_up(status: dict) -> str:
    return (f"tracer: lab up: client {status['client_address']} -> {status['host_address']}:{status['port']} "
            f"-> {status['container']} ({status['container_ip']}:{status['container_port']})")


def demo_next_steps(path: str) -> str:
    return f"tracer: replay it with `tracer show {path}`; latency per hop with `tracer stats {path}`"


def left_out(packets: int) -> str:
    return f"tracer: left out {packets:,} packets first seen before every sensor was attached"


def _paths_text(paths) -> str:
    return ", ".join("standard output" if str(p) == "-" else str(p) for p in paths)


def capture_written(event_rows: int, size: int, paths, lost: int) -> str:
    return f"tracer: wrote {event_rows:,} events ({size_text(size, 'MB')}) to {_paths_text(paths)}; {lost:,} lost"


def histograms_written(rows: int, size: int, paths) -> str:
    return f"tracer: wrote {rows:,} histogram rows ({size_text(size, 'kB')}) to {_paths_text(paths)}"


def recording_progress(event_rows: int, size: int, lost: int, elapsed_s: float) -> str:
    m, s = divmod(int(elapsed_s), 60)
    return f"recording: {event_rows:,} events  {size_text(size, 'MB')}  {lost:,} lost  {m:02d}:{s:02d}"


def latency_cell(ns) -> str:
    return "-" if ns is None else duration_text(ns, largest="ms")


def render_interval(number: int, rep: dict) -> str:
    """One `tracer latency` interval (tracer/latency.py report())."""
    cell = latency_cell
    lines = [f"interval {number}  ({rep['seconds']:.2f} s)  {rep['packets']} packets"]
    if rep["segments"]:
        width = max(len(s["segment"]) for s in rep["segments"])
        lines.append(f"  {'segment':<{width}}  {'packets':>8}  {'p50':>9}  {'p90':>9}  {'p99':>9}  {'max':>9}")
        for s in sorted(rep["segments"], key=lambda s: -s["packets"]):
            lines.append(f"  {s['segment']:<{width}}  {s['packets']:>8}  {cell(s['p50_ns']):>9}  "
                         f"{cell(s['p90_ns']):>9}  {cell(s['p99_ns']):>9}  {cell(s['max_ns']):>9}")
    for direction, label in (("original", "request"), ("reply", "reply")):
        e2e = rep["end_to_end"].get(direction)
        if e2e:
            lines.append(f"  end to end {label:<8} {e2e['packets']:>8} packets  p50 {cell(e2e['p50_ns'])}  "
                         f"p90 {cell(e2e['p90_ns'])}  p99 {cell(e2e['p99_ns'])}  max {cell(e2e['max_ns'])}")
    if rep["missing"]:
        gone = ", ".join(f"{hop} {n}" for hop, n in rep["missing"].items())
        lines.append(f"  never reached the next hop (since start): {gone}")
    return "\n".join(lines)


def _rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class _Samples:
    """Durations of one hop segment: exact up to ``cap`` values, then a uniform
    reservoir sample, so a long trace keeps a bounded summary.

    Each segment draws from its own generator (seeded by the segment's
    creation order), one uniform per value past the cap, so adding values one
    at a time (Summary.add) or a batch at once (Summary.add_table) keeps the
    same sample."""

    def __init__(self, cap: int, seed: int, compiled: bool = True) -> None:
        # The samples are the first _n of _buf, which grows by doubling up
        # to the cap: an array('q') grown by each batch's frombytes took
        # ~1/16 more each time, copying (and faulting in) the samples again
        # and again as a fresh run filled them (docs/benchmarks.md,
        # "Session 11: trace --json").
        self._buf = np.empty(0, np.int64)
        self._n = 0
        self.count = 0
        self._cap = cap
        self._seed = seed
        self._gen: np.random.Generator | None = None
        self.compiled = compiled  # past the cap, slots filled by tracer._native where it was built

    @property
    def values(self) -> np.ndarray:
        """The samples kept (a view: valid until the next add)."""
        return self._buf[: self._n]

    def _room(self, more: int) -> None:
        want = min(self._cap, self._n + more)
        if want > len(self._buf):
            buf = np.empty(min(self._cap, max(want, 2 * len(self._buf), 64)), np.int64)
            buf[: self._n] = self._buf[: self._n]
            self._buf = buf

    def _rng(self) -> np.random.Generator:
        if self._gen is None:
            self._gen = np.random.default_rng(self._seed)
        return self._gen

    def add(self, value: int) -> None:
        self.count += 1
        if self._n < self._cap:
            self._room(1)
            self._buf[self._n] = value
            self._n += 1
            return
        i = int(self._rng().random() * self.count)
        if i < self._cap:
            self._buf[i] = value

    def add_many(self, values: np.ndarray) -> None:
        """``add`` for each value in order, vectorised."""
        room = self._cap - self._n
        if room > 0:
            head = values[:room]
            self._room(len(head))
            self._buf[self._n : self._n + len(head)] = head
            self._n += len(head)
            self.count += len(head)
            values = values[room:]
        if not len(values):
            return
        seen = self.count
        uniforms = self._rng().random(len(values))
        self.count += len(values)
        module = native() if self.compiled else None
        if module is not None:
            # the slots, then in order a later value wins a slot drawn twice (native/reservoir.c)
            module.reservoir_draw(self._buf, uniforms, np.ascontiguousarray(values, dtype=np.int64), seen)
            return
        slots = (uniforms * (seen + 1 + np.arange(len(values)))).astype(np.int64)
        hit = slots < self._cap
        if hit.any():
            # A later value replaces an earlier one drawn for the same slot.
            rev_slots, rev_values = slots[hit][::-1], values[hit][::-1]
            uniq, last = np.unique(rev_slots, return_index=True)
            self._buf[uniq] = rev_values[last]

    def median_ns(self) -> float:
        return float(np.median(self.values))


@lru_cache(maxsize=64)
def _hop_labels(hooks: tuple, stages: tuple, roles: tuple) -> tuple[np.ndarray, list[str]]:
    """Per (hook, stage, role) code, hook-major: its label's index into the
    distinct labels (hop_label), and those labels."""
    names: dict[str, int] = {}
    label_of = [names.setdefault(hop_label(h, s, r) if h is not None else "?", len(names))
                for h in hooks for s in stages for r in roles]
    return np.array(label_of, np.int64), list(names)


class Summary:
    """Totals over a trace, printed at exit and available as a dict for --json."""

    def __init__(self, sample_cap: int = 100_000, compiled: bool = True) -> None:
        self.compiled = compiled  # segments grouped by tracer._native where it was built (else numpy: the same)
        self.packets = 0
        self.verdicts: Counter[str] = Counter({"delivered": 0, "dropped": 0, "unknown": 0})
        self.drops: Counter[tuple[str, str]] = Counter()  # (reason, hook last seen) -> packets
        self.hooks = self.hooks_said = "all"  # the profile drops are placed by (--hooks, RecordedHooks.placing); the line's words for it
        # Distinct flow ids: a sorted array (8 bytes a flow, not a set's ~70:
        # `show` of a capture with millions of flows), new ids merged in batches.
        self._flow_ids = np.zeros(0, np.uint64)
        self._flow_new: list[np.ndarray] = []
        self._flow_new_rows = 0
        self._segments: dict[str, _Samples] = {}  # insertion order follows the path
        self._cap = sample_cap
        self.lost: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.unit = "events"  # what the kernel's records are: journeys, or events (per-sighting build)
        self.journey_ends: dict[str, int] = {}
        self.journey_faults: dict[str, int] = {}
        self.rules: dict[str, int] | None = None  # rule attribution's counts (--rules)

    def add(self, journeys: list[Journey]) -> None:
        flows = []
        for j in journeys:
            self.packets += 1
            self.verdicts[j.verdict] += 1
            if j.flow_id:
                flows.append(j.flow_id)
            if j.verdict == "dropped":
                seen = _hook_text(j.last_seen) if j.last_seen else "-"
                self.drops[(j.drop_reason or "unknown", seen)] += 1
            for a, b in timed_pairs(j.hops):
                self._samples(f"{a.label} {_ARROW} {b.label}").add(b.ktime_ns - a.ktime_ns)
        if flows:
            self._add_flows(np.array(flows, np.uint64))

    def _samples(self, key: str) -> _Samples:
        samples = self._segments.get(key)
        if samples is None:
            samples = self._segments[key] = _Samples(self._cap, len(self._segments), self.compiled)
        return samples

    def add_table(self, table) -> None:
        """``add`` of the journeys of an event table (pop_complete_table's
        rows) or of its JourneyRows, on columns: same totals, same segment
        samples."""
        jr = journey_rows(table)
        if not len(jr):
            return
        self.packets += len(jr)
        for name, n in zip(VERDICTS, np.bincount(jr.verdict, minlength=len(VERDICTS)).tolist()):
            self.verdicts[name] += n
        self._add_flows(jr.flow_id[jr.flow_id != 0])
        self._add_drops(jr)
        self._add_segments(jr)

    def _add_drops(self, jr: JourneyRows) -> None:
        reasons, hooks, stages = jr.drop_reason.values, jr.hook.values, jr.stage.values
        keys = []
        for p in np.flatnonzero(jr.verdict == VERDICTS.index("dropped")).tolist():
            seen = int(jr.last_seen[p])
            where = "-"
            if seen >= 0:
                hook, stage = hooks[jr.hook.codes[seen]], stages[jr.stage.codes[seen]]
                where = f"{hook}/{stage}" if stage else hook
            keys.append((reasons[jr.reason[p]] or "unknown", where))
        self.drops.update(keys)

    def _add_segments(self, jr: JourneyRows) -> None:
        """Consecutive hops of each journey, grouped by their label pair."""
        n = len(jr.rows)
        if n - len(jr) <= 0:  # no journey with two hops
            return
        nst, nro = len(jr.stage.values), len(jr.role.values)
        module = native() if self.compiled and jr.timed is None else None  # hops without a ktime_ns: below
        if module is not None:
            # grouped in one compiled pass (native/segments.c); labels per (hook, stage, role) code
            label_of, texts = _hop_labels(tuple(jr.hook.values), tuple(jr.stage.values), tuple(jr.role.values))
            durations = np.empty(n - len(jr), np.int64)
            ids, counts = module.segment_groups(i64(jr.hook.codes), i64(jr.stage.codes), i64(jr.role.codes),
                                                i64(jr.starts), i64(jr.ktime), label_of, nst, nro, len(texts),
                                                durations)
            at = 0
            for pair, count in zip(ids, counts):
                la, lb = divmod(pair, len(texts))
                self._samples(f"{texts[la]} {_ARROW} {texts[lb]}").add_many(durations[at:at + count])
                at += count
            return
        inner = jr.next_hops()
        a = np.flatnonzero(inner)
        # Label of each hop: formatted once per distinct (hook, stage, role).
        combo = (jr.hook.codes * nst + jr.stage.codes) * nro + jr.role.codes
        names: dict[str, int] = {}
        label_of = np.zeros(len(jr.hook.values) * nst * nro, np.int64)
        for c in np.flatnonzero(np.bincount(combo)).tolist():
            h, rest = divmod(c, nst * nro)
            st, ro = divmod(rest, nro)
            text = hop_label(jr.hook.values[h], jr.stage.values[st], jr.role.values[ro])
            label_of[c] = names.setdefault(text, len(names))
        label = label_of[combo]
        texts = list(names)
        pair = label[a] * len(texts) + label[a + 1]
        dur = jr.ktime[a + 1] - jr.ktime[a]
        # Group by segment keeping journey order within each (stable; a radix
        # sort when the keys fit 16 bits).
        order = np.argsort(pair.astype(np.uint16) if len(texts) ** 2 < 1 << 16 else pair, kind="stable")
        spair = pair[order]
        bounds = np.flatnonzero(spair[1:] != spair[:-1]) + 1
        heads = np.concatenate(([0], bounds))
        chunks = np.split(dur[order], bounds)
        for k in np.argsort(order[heads]).tolist():  # new segments in order of first appearance
            la, lb = divmod(int(spair[heads[k]]), len(texts))
            self._samples(f"{texts[la]} {_ARROW} {texts[lb]}").add_many(chunks[k])

    def set_lost(self, lost_by_sensor: dict[str, int], events_by_sensor: dict[str, int], unit: str = "events") -> None:
        """The kernel's counts of records emitted and lost, per sensor."""
        self.lost = dict(lost_by_sensor)
        self.events = dict(events_by_sensor)
        self.unit = unit

    def set_journey_ends(self, ends: dict[str, int], faults: dict[str, int] | None = None) -> None:
        """Journeys the kernel emitted, by why (events.JOURNEY_ENDS), and
        what it left out rather than write a wrong journey
        (events.JOURNEY_FAULTS)."""
        self.journey_ends = dict(ends)
        self.journey_faults = dict(faults or {})

    def _add_flows(self, ids: np.ndarray) -> None:
        self._flow_new.append(ids.astype(np.uint64, copy=False))
        self._flow_new_rows += len(ids)
        if self._flow_new_rows > max(1 << 16, len(self._flow_ids)):
            self._merge_flows()

    def _merge_flows(self) -> None:
        if self._flow_new:
            self._flow_ids = np.union1d(self._flow_ids, np.concatenate(self._flow_new)).astype(np.uint64)
            self._flow_new, self._flow_new_rows = [], 0

    @property
    def flows(self) -> int:
        self._merge_flows()
        return len(self._flow_ids)

    def segments(self) -> list[dict]:
        return [
            {"segment": key, "count": s.count, "p50_us": round(s.median_ns() / 1e3, 3)}
            for key, s in self._segments.items()
        ]

    def to_dict(self) -> dict:
        return {
            "packets": self.packets,
            "flows": self.flows,
            "verdicts": dict(self.verdicts),
            "drops": [
                {"reason": reason, "last_seen": seen, "place": drop_place(self.hooks, seen), "packets": n}
                for (reason, seen), n in self.drops.most_common()
            ],
            "lost_events": {
                name: {"lost": self.lost.get(name, 0), "events": self.events.get(name, 0)}
                for name in dict.fromkeys([*self.events, *self.lost])
            },
            "lost_unit": self.unit,
            "journey_ends": dict(self.journey_ends),
            "journey_faults": dict(self.journey_faults),
            "segments": self.segments(),
            **({"rules": dict(self.rules)} if self.rules is not None else {}),
        }

    def render(self, color: bool) -> str:
        v = self.verdicts
        dropped = f"{v['dropped']:,} dropped"
        lines = [
            _style("summary", color, bold=True)
            + f"  {_plural(self.packets, 'packet')}  {_plural(self.flows, 'flow')}  "
            + f"{v['delivered']:,} delivered  "
            + (_style(dropped, color, fg="red", bold=True) if v["dropped"] else dropped)
            + f"  {v['unknown']:,} unknown" + (f"  hooks {self.hooks_said}" if self.hooks_said != "all" else "")  # as stats says it
        ]
        for (reason, seen), n in self.drops.most_common():
            where = drop_place(self.hooks, seen, f"last seen {seen}")
            lines.append(_style(f"  drop  {printable(reason)} ×{n:,}  {where}", color, fg="red"))
        lines.append("  " + self._lost_text(color))
        incomplete = {k: n for k, n in self.journey_ends.items() if k not in ("terminal", "drop") and n}
        if incomplete:
            # Not lost: emitted and shown, but their packet left the sensors' view (or a slot ran out).
            parts = ", ".join(f"{k} {n:,}" for k, n in incomplete.items())
            lines.append(f"  incomplete journeys: {sum(incomplete.values()):,} ({parts})")
        faults = {k: n for k, n in self.journey_faults.items() if n}
        if faults:
            # Left out, not written into another packet's journey: CPUs raced for a slot.
            parts = ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in faults.items())
            lines.append(_style(f"  left out in slot races: {parts}", color, fg="yellow"))
        if self.rules is not None:
            r = self.rules
            lines.append(f"  rules: {r.get('joined', 0):,} rule hits on journeys, {r.get('unmatched', 0):,} on untraced packets"
                         + (f", {r['overruns']:,} report bursts lost" if r.get("overruns") else "")
                         + (f", {r['dropped']:,} reports dropped unread (the reader fell behind)" if r.get("dropped") else "")
                         + (f", {'at least ' if r.get('unread_more') else ''}{r['unread']:,} reports left unread at the stop"
                            if r.get("unread") else ""))
        segs = self.segments()
        if segs:
            width = max(len(s["segment"]) for s in segs)
            w_n = max(len(f"{s['count']:,}") for s in segs)
            lines.append("  hop segments (count, p50)")
            for s in segs:
                lines.append(f"    {s['segment'].ljust(width)}  {s['count']:>{w_n},}  {s['p50_us']:>8.1f}µs")
        return "\n".join(lines)

    def _lost_text(self, color: bool) -> str:
        names = list(dict.fromkeys([*self.events, *self.lost]))
        what = f"lost {self.unit}"
        if not names:
            return f"{what}: not reported"
        total_lost = sum(self.lost.values())
        total = sum(self.events.values()) + total_lost
        if not total_lost:
            return f"{what}: 0 of {total:,}"
        # Name only the sensors that lost something: that is where to look.
        parts = []
        for name in names:
            lost, seen = self.lost.get(name, 0), self.events.get(name, 0)
            if lost:
                parts.append(f"{name} {lost:,} of {lost + seen:,}, {100 * lost / (lost + seen):.2f}%")
        return _style(f"{what}: {total_lost:,} of {total:,} ({'; '.join(parts)})", color, fg="red")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


# ---- `tracer stats` ------------------------------------------------------

STATS_SECTIONS = ("segments", "flows", "drops", "lost", "latency")
_us = micros_text  # a column headed µs


def _stats_latency(lat) -> list[str]:
    if lat is None:
        return ["latency histograms: none in this capture (record them with `tracer latency -w PATH`)"]
    out = [f"latency histograms (µs; {lat.intervals:,} intervals, {lat.seconds:,.1f} s, {lat.start} .. {lat.end}; "
           "in-kernel buckets merged, percentiles within a few %)"]
    rows = [[s.segment, f"{s.packets:,}", _us(s.p50_ns), _us(s.p90_ns), _us(s.p99_ns), _us(s.max_ns)] for s in lat.rows()]
    out += ["  " + x for x in _columns(["segment", "packets", "p50", "p90", "p99", "max"], rows, {1, 2, 3, 4, 5})]
    if lat.missing:
        out.append("  never reached the next hop: " + ", ".join(f"{hop} {n:,}" for hop, n in lat.missing.items()))
    return out


def _columns(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    rows = [[printable(c) for c in r] for r in rows]  # names from the system: escaped for the terminal
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def stats_text(a, section: str | None, max_flows: int) -> str:
    """`tracer stats` as text: the capture, then its sections (all, or ``section``)."""
    show = set(STATS_SECTIONS) if section is None else {section}
    v = a.verdicts
    out = []
    latency_only = a.events == 0 and a.latency is not None  # `tracer latency -w`: no packet events
    if section is None:
        m = a.metadata
        # A capture recorded with --hooks lean lacks some hops by design: said, so a
        # reader does not look for them (older captures have no key: every hook).
        hooks = f"  hooks {named(m)}" if named(m) != "all" else ""
        out.append(f"capture  {m.get('host', '?')}  kernel {m.get('kernel', '?')}  filter {m.get('filter') or '-'}{hooks}")
        if latency_only:
            lat = a.latency
            out.append(f"  {lat.start} .. {lat.end}  ({lat.seconds:.3f} s)")
            out.append(f"  latency histograms only: {lat.intervals:,} intervals  {lat.packets:,} packets  no packet events")
            show = {"latency", "lost"}
        else:
            out.append(f"  {a.start} .. {a.end}  ({a.duration_s:.3f} s)")
            out.append(f"  {a.events:,} events  {a.packets:,} packets  {a.flows_total:,} flows  "
                       f"{v['delivered']:,} delivered  {v['dropped']:,} dropped  {v['unknown']:,} unknown")
    if "segments" in show:
        out += ["", "hop segments (µs)"]
        rows = [[s.direction, s.segment, f"{s.count:,}", _us(s.p50_ns), _us(s.p90_ns), _us(s.p99_ns), _us(s.max_ns)]
                for s in a.segments]
        out += ["  " + x for x in _columns(["dir", "segment", "count", "p50", "p90", "p99", "max"], rows, {2, 3, 4, 5, 6})]
    if "latency" in show and (a.latency is not None or section == "latency"):
        out += [""] + _stats_latency(a.latency)
    if "flows" in show:
        shown = a.flows[:max_flows]
        out += ["", f"flows, slowest first ({len(shown):,} of {len(a.flows):,})"]
        rows = [[format_id(f.flow_id), f.container or "-", f.protocol or "?", f.client or "?", f.service or "?",
                 f"{f.packets:,}", f"{f.bytes:,}", f"{f.requests:,}", f"{f.replies:,}", f"{f.dropped:,}", _us(f.slowest_ns)]
                for f in shown]
        out += ["  " + x for x in _columns(
            ["flow", "container", "proto", "client", "service", "packets", "bytes", "req", "rep", "dropped", "slowest µs"],
            rows, {5, 6, 7, 8, 9, 10})]
    if "drops" in show:
        profile = a.recorded_hooks.placing
        out += ["", "drops by reason and hook last seen"]
        if a.drops:
            out += ["  " + x for x in _columns(["reason", "last seen", "packets"],
                                               [[d.reason, drop_place(profile, d.last_seen), f"{d.packets:,}"]
                                                for d in a.drops], {2})]
        else:
            out.append("  none")
    if "lost" in show:
        out += ["", f"lost {a.record_unit}"]
        if a.lost is None:
            out.append("  not reported (the capture has no statistics row: not stopped cleanly?)")
        else:
            out += ["  " + x for x in _columns(
                ["sensor", a.record_unit, "lost"], [[k, f"{x['events']:,}", f"{x['lost']:,}"] for k, x in a.lost.items()], {1, 2})]
    return "\n".join(map(printable, out)).lstrip("\n")  # metadata too: a capture may come from anywhere
