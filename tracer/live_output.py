"""What a live run shows, as text or JSON lines: the output sinks
(tracer/sinks.py). ``JourneyOutput`` prints the complete packets of each
batch (`trace`) with their rules (--rules) and proxy hops, a status line on
a terminal and the summary at the end; ``IntervalOutput`` prints `latency`'s
intervals. Neither knows the session."""

from __future__ import annotations

import json
import sys
from typing import Any

from tracer.allocator import KeepWhileNeeded
from tracer.output import Reader, say
from tracer.render import Summary, render_interval, status_line
from tracer.sinks import Batch, RunEnd, RunInfo


class KeptJsonBuffer:
    """--json: the bytearray each batch's text is written into, kept so its
    pages stay mapped (a new one a batch faulted ~2x the text in again), but
    not a burst's for the rest of the run (allocator.KeepWhileNeeded), as
    journey_columns gives a burst's columns back."""

    def __init__(self) -> None:
        self.into = bytearray()
        self.keep = KeepWhileNeeded()

    def shown(self, size_before: int, text: int) -> None:
        """After a pass that wrote ``text`` bytes (0: an idle pass), when
        ``into`` was ``size_before`` bytes before it."""
        if len(self.into) != size_before:
            self.keep.grew(text)
        if self.keep.let_go(text, len(self.into)):
            self.into = bytearray()


class JourneyOutput:
    """``count``: show at most this many journeys (then want no more)."""

    def __init__(self, as_json: bool, color: bool, out=None, count: int | None = None,
                 summary_color: bool = False) -> None:
        from tracer.proxies import ProxyLinks

        self.as_json, self.color, self.count = as_json, color, count
        self.summary_color = summary_color
        self.reader = Reader(out or sys.stdout)
        self.summary = Summary()
        self.shown = 0
        self.status_tty = sys.stderr.isatty() and not as_json
        self.rules = None  # rule_render.RuleBook with --rules: hits held until their packet shows
        self.proxy_links = ProxyLinks()  # docker-proxy links seen so far: the proxy hop of journeys on a leg
        self.json_buffer = KeptJsonBuffer() if as_json else None

    def on_start(self, run: RunInfo) -> None:
        self.summary.hooks = self.summary.hooks_said = run.hooks  # where a drop can be placed (hook_profile.drop_place)
        if run.rules and run.records == "journey":
            from tracer.rule_render import RuleBook

            self.rules = RuleBook(run.hooks)

    def on_batch(self, batch: Batch) -> bool:
        if self.rules is not None and batch.rules:
            self.rules.add(batch.rules)
            self.rules.forget_older()
        for link in batch.proxy_links:
            self.proxy_links.add_recorded(link)
        if batch.journeys is not None:
            self._show(batch.journeys)
        else:
            self._idle_pass()
        if batch.status is not None and self.status_tty:
            rate = batch.status.sightings / batch.status.elapsed_s if batch.status.elapsed_s else 0.0
            say("\r" + status_line(rate, batch.status.lost, self.shown), nl=False)
        return self._enough() or (not batch.final and self.reader.check())

    def _enough(self) -> bool:
        return self.reader.gone or (self.count is not None and self.shown >= self.count)

    def _show(self, batch) -> None:
        """Print the journeys of a batch of complete packets (JourneyRows,
        or the per-sighting build's rows), column-wise, JSON or text."""
        from tracer.journey_block import journey_block
        from tracer.journey_rows import JourneyRows, journey_rows

        empty = len(batch) == 0 if isinstance(batch, JourneyRows) else batch.num_rows == 0
        kept = self.json_buffer
        if empty or (self.count is not None and self.shown >= self.count):  # most passes when idle: no work at all
            self._idle_pass()
            return
        rows = journey_rows(batch)  # once for the output and the summary
        if self.count is not None:
            rows = rows.head(self.count - self.shown)
        size_before = len(kept.into) if kept is not None else 0
        # written into the direct output's stage where there is one (no copy), else JSON's kept buffer
        into = self.reader.stage() or (kept.into if kept is not None else None)
        block, count = journey_block(rows, self.as_json, self.color, self.rules, self.proxy_links, into)
        if count and not self.reader.gone:
            self.reader.write(block)
        text = len(block)
        del block  # may be a view of the kept buffer: the writer refuses it while one is held
        if kept is not None:
            kept.shown(size_before, text)
        self.summary.add_table(rows)
        self.shown += count

    def _idle_pass(self) -> None:
        """A pass that showed nothing counts towards letting a burst's
        buffers go (the JSON's kept buffer, the direct output's stage)."""
        if self.json_buffer is not None:
            self.json_buffer.shown(len(self.json_buffer.into), 0)
        self.reader.idle()

    def on_containers(self, action: str, container: Any, ktime_ns: int) -> None:
        pass

    def finish(self, end: RunEnd) -> dict:
        counters = end.counters
        if end.rules:
            self.summary.rules = end.rules
        self.summary.set_lost(counters.lost, counters.emitted, unit=f"{counters.record}s")
        self.summary.set_journey_ends(counters.journey_ends, getattr(counters, "journey_faults", {}))
        if self.status_tty:
            say("")
        # The summary is about the run, not a result: stderr, as tcpdump's,
        # so `trace | grep` and `trace --json | jq` see journeys only.
        say(self.summary.render(self.summary_color))
        return self.summary.to_dict()

    def close(self) -> None:
        self.reader.close()


_RECORDED_ONLY = ("buckets", "hdr")  # what a capture keeps per segment beyond the live output


def without_buckets(rep: dict) -> dict:
    """A report made with include_buckets, as the live output shows it."""
    return {
        **rep,
        "segments": [{k: v for k, v in s.items() if k not in _RECORDED_ONLY} for s in rep["segments"]],
        "end_to_end": {d: {k: v for k, v in e.items() if k not in _RECORDED_ONLY} for d, e in rep["end_to_end"].items()},
    }


class IntervalOutput:
    """`tracer latency`'s intervals shown live, as text or JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.reader = Reader()

    def on_start(self, run: RunInfo) -> None:
        pass

    def on_batch(self, batch: Batch) -> bool:
        interval = batch.interval
        if interval is not None and not interval.final:
            rep = without_buckets(interval.report)
            if self.as_json:
                self.reader.write(json.dumps({"interval": interval.number, **rep}) + "\n")
            else:
                self.reader.write(render_interval(interval.number, rep) + "\n\n")
        # `tracer latency --json | head -1`: stop as if told to
        return self.reader.gone or (not batch.final and self.reader.check())

    def on_containers(self, action: str, container: Any, ktime_ns: int) -> None:
        pass

    def finish(self, end: RunEnd) -> dict:
        return {}

    def close(self) -> None:
        self.reader.close()
