"""The live run: session -> feeds -> output and capture. One loop serves
`trace`, `record` (journeys=False: the capture only) and `demo`; the feeds
are shared with `explain`, which runs its own short loop over them."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import click

from tracer.output import Reader, say
from tracer.stopping import StopSignals

# A packet whose last sighting is this old is complete: a packet crosses the
# host in well under a millisecond; the margin covers batching.
IDLE_NS = 150_000_000
POLL_S = 0.1
# Each pass of the loop has fixed costs (sorting the held rows, a few dozen
# Arrow and numpy kernels, a write): under load, let events gather for this
# long rather than cycling on the few the drain thread queued since the last
# pass. Small next to IDLE_NS, so journeys show barely later.
MIN_PASS_S = 0.05
# `record` shows nothing, so nothing waits on IDLE_NS: it takes what the
# drain queued a few times a second and pays each pass's fixed costs (hiding
# kernel addresses, laying records out as capture rows) on ~5x more records.
# The writer still hands rows to the OS within about a second (FLUSH_SECONDS
# from the oldest, checked every pass).
RECORD_PASS_S = 0.25
# ...and its drain thread reads the ring buffer every 25 ms instead of 5
# (the ring holds seconds of records at the lab's rates).
RECORD_READ_S = 0.025


@dataclass
class Limits:
    """When a run stops by itself: after ``count`` packets, after ``duration`` seconds (None: never)."""

    count: int | None = None
    duration: float | None = None


def run_trace(options, limits: Limits, as_json: bool, color: bool, out=None, on_started=None,
              recorder=None, journeys: bool = True, progress: bool = False, summary_color: bool = False) -> dict:
    """Trace until count/duration/Ctrl-C; print journeys (unless ``journeys``
    is False: `record`), write them to ``recorder``'s capture if given; return
    the summary dict."""
    from tracer.journey_json import journey_json_block
    from tracer.journey_rows import JourneyRows, journey_rows
    from tracer.proxy_output import annotate
    from tracer.render import Summary, status_line
    from tracer.render_rows import render_rows
    from tracer.session import TraceSession

    out = out or sys.stdout
    reader = Reader(out)
    summary = Summary()
    shown = 0
    stop = StopSignals()
    session = TraceSession(options)
    try:
        session.start()
        if recorder is not None:
            recorder.start(session)
        feed = (SightingFeed if session.sightings else JourneyFeed)(session, recorder, journeys)
        rule_feed = RuleFeed(session, recorder, journeys) if session.rules is not None else None
        if rule_feed is not None:
            if session.sightings:
                click.echo("tracer: warning: --rules joins rules to the kernel's journey records; "
                           "not with TRACER_SIGHTING_EVENTS", err=True)
            else:
                feed.on_records = rule_feed.records
        stop.running()
        started = time.monotonic()
        where = f"; writing {recorder.path}" if recorder is not None else ""
        say(f"tracer: tracing {session.describe()} on {len(session.tc.targets())} interfaces "
            f"(ready in {started - session.started_at:.1f}s){where}; Ctrl-C to stop")
        if on_started:
            on_started(session)
        status_tty = sys.stderr.isatty() and not as_json and journeys

        def take_proxy_links() -> None:
            """The kernel's new docker-proxy links: for the output, and into the capture."""
            new = session.read_proxy_links()
            if new and recorder is not None:
                recorder.add_proxy_links(new)

        def show(batch) -> bool:
            """Print the journeys of a batch of complete packets (JourneyRows,
            or the per-sighting build's rows), column-wise, JSON or text."""
            nonlocal shown
            empty = len(batch) == 0 if isinstance(batch, JourneyRows) else batch.num_rows == 0
            if empty:  # most passes when idle: no work at all
                return limits.count is not None and shown >= limits.count
            if limits.count is not None and shown >= limits.count:
                return True
            rows = journey_rows(batch)  # once for the output and the summary
            if limits.count is not None:
                rows = rows.head(limits.count - shown)
            if as_json:
                block, count = journey_json_block(rows)
            else:
                block, count = render_rows(rows, color), len(rows)
            if rule_feed is not None:
                block = rule_feed.annotate(block, rows, as_json, color)
            if count:  # the proxy hop of journeys on a docker-proxy leg
                block = annotate(block, rows, session.proxy_links, as_json)
            if count and not reader.gone:
                reader.write(block)
            summary.add_table(rows)
            shown += count
            return reader.gone or (limits.count is not None and shown >= limits.count)

        last_status = started
        pass_started = 0.0
        pass_s, read_s = (MIN_PASS_S, None) if journeys else (RECORD_PASS_S, RECORD_READ_S)
        while not stop.requested:
            rest = pass_s - (time.monotonic() - pass_started)
            if rest > 0:
                time.sleep(rest)
            pass_started = time.monotonic()
            feed.take(session.read_records(POLL_S, read_s))
            if rule_feed is not None:
                rule_feed.tick(session.now_ktime())
            take_proxy_links()  # before the journeys that may be on a proxy leg (output and capture)
            if recorder is not None:
                recorder.tick()
            now_ktime = session.now_ktime() if rule_feed is None else rule_feed.caught_up(session.now_ktime())
            if journeys and show(feed.complete(IDLE_NS, now_ktime)):
                break
            if not journeys and limits.count is not None and recorder.packets >= limits.count:
                break
            if journeys and reader.check():
                break
            now = time.monotonic()
            if limits.duration is not None and now - started >= limits.duration:
                break
            if (status_tty or progress) and now - last_status >= 1.0:
                c = session.counters()
                if progress:
                    say("tracer: " + recorder.progress(c.total_lost).text())
                else:
                    say("\r" + status_line(feed.sightings / (now - started), c.total_lost, shown), nl=False)
                last_status = now
        # Everything already in the ring buffer belongs in the output, the
        # capture and the summary; read the counters only once it is drained,
        # so the records counted are the records written.
        stop.finishing()  # ended by itself (count, duration): the stop is bounded too
        counters = _drain(session, feed.take)
        take_proxy_links()
        if rule_feed is not None:
            rule_feed.finish()
            summary.rules = rule_feed.counts()
        if journeys:
            show(feed.flush())
        summary.set_lost(counters.lost, counters.emitted, unit=f"{counters.record}s")
        summary.set_journey_ends(counters.journey_ends)
        if counters.before_start:  # traffic already flowing while the sensors attached one by one
            say(f"tracer: left out {counters.before_start:,} packets first seen before every sensor was attached")
        if recorder is not None:
            stats = recorder.finish(counters)
            written = recorder.writer
            say(f"tracer: wrote {written.event_rows:,} events ({written.bytes_written / 1e6:.2f} MB) to "
                f"{', '.join('standard output' if str(p) == '-' else str(p) for p in written.paths)}; {counters.total_lost:,} lost")
            if not journeys:
                return stats
        if status_tty:
            say("")
        # The summary is about the run, not a result: stderr, as tcpdump's,
        # so `trace | grep` and `trace --json | jq` see journeys only.
        say(summary.render(summary_color))
        return summary.to_dict()
    finally:
        try:
            if recorder is not None:
                recorder.close()  # no-op after finish; ends the stream after an error
            session.close()
        finally:
            stop.restore()


class JourneyFeed:
    """The kernel's journey records into the capture and the output. With
    journeys shown, records are held per packet until it is quiet (its
    continuations joined, see tracer/hold.py), then read as JourneyRows
    straight from the records (and decoded into sighting rows only for a
    capture); a `record` run decodes and writes them as they come."""

    def __init__(self, session, recorder, showing: bool) -> None:
        from tracer.hold import RecordHold

        self.session, self.recorder, self.showing = session, recorder, showing
        self.hold = RecordHold()
        self.sightings = 0
        self.on_records = None  # told of every record as it comes (rule attribution joins on them)

    def take(self, records) -> None:
        if not len(records):
            return
        if self.on_records is not None:
            self.on_records(records)
        self.sightings += int(records["n_hops"].sum())
        if not self.showing:
            self.recorder.add_records(records)
            return
        late = self.hold.add(records)
        if len(late) and self.recorder is not None:  # its packet was shown: the capture still gets it
            self.recorder.add_records(late)

    def complete(self, idle_ns: int, now_ktime: int):
        return self._out(self.hold.pop_complete(idle_ns, now_ktime))

    def flush(self):
        return self._out(self.hold.flush())

    def _out(self, records):
        if self.recorder is not None and len(records):
            self.recorder.add_records(records)
        return self.session.journey_rows(records)


class RuleFeed:
    """Rule hits (--rules) joined to the journey records as they come: to the
    capture as rule rows, and held per packet until `trace` shows it."""

    def __init__(self, session, recorder, showing: bool) -> None:
        from tracer.rule_join import RuleJoiner
        from tracer.rule_render import RuleBook

        self.session, self.recorder = session, recorder
        self.joiner = RuleJoiner()
        self.book = RuleBook() if showing else None

    def records(self, records) -> None:
        self.joiner.add_records(records)

    def tick(self, now_ktime: int) -> None:
        self.joiner.add_hits(self.session.rules.take())
        self._out(self.joiner.match(now_ktime))

    def caught_up(self, now_ktime: int) -> int:
        """The time up to which every report was read and joined: a packet
        is shown only once its rules are in, even when the reader lags; never
        held longer than the reader may lag (it drops older reports)."""
        from tracer.rule_trace import MAX_LAG_NS

        return min(now_ktime, max(self.session.rules.watermark, now_ktime - MAX_LAG_NS - 500_000_000))

    def finish(self) -> None:
        self.joiner.add_hits(self.session.rules.stop())
        self._out(self.joiner.flush())

    def _out(self, pairs) -> None:
        if not pairs:
            return
        if self.recorder is not None:
            self.recorder.add_rules(pairs)
        if self.book is not None:
            self.book.add(pairs)
            self.book.forget_older()

    def annotate(self, block, rows, as_json: bool, color: bool):
        from tracer.rule_render import hop_rules, with_rules_json, with_rules_text

        per_hop = hop_rules(rows, self.book.pop(rows.packet_id.tolist()))
        return with_rules_json(block, rows, per_hop) if as_json else with_rules_text(block, rows, per_hop, color)

    def counts(self) -> dict:
        return {"joined": self.joiner.matched, "unmatched": self.joiner.unmatched, **self.session.rules.stats()}


class SightingFeed:
    """The per-sighting build (TRACER_SIGHTING_EVENTS=1, the oracle the
    journey records are tested against): sightings joined into journeys in
    user space, as before journeys were assembled in the kernel."""

    def __init__(self, session, recorder, showing: bool) -> None:
        from tracer.journey_rows import JourneyAssembler

        self.session, self.recorder, self.showing = session, recorder, showing
        self.assembler = JourneyAssembler()
        self.sightings = 0

    def take(self, records) -> None:
        table = self.session.decode_records(records)
        self.sightings += table.num_rows
        if self.recorder is not None:
            self.recorder.add(table)
        if self.showing and table.num_rows:
            self.assembler.add(table)

    def complete(self, idle_ns: int, now_ktime: int):
        return self.assembler.pop_complete_table(idle_ns, now_ktime)

    def flush(self):
        return self.assembler.flush_table()


def _drain(session, take, rounds: int = 20):
    """Read what is left in the ring buffer until the kernel's counters stop
    moving (bounded: a busy host never stops). Returns the last counters."""
    # final_records also detaches the sensors, emits the journeys still open
    # and empties the drain thread's queue, so no record is left in flight.
    read_rest = session.final_records
    counters = session.counters()
    for _ in range(rounds):
        while len(records := read_rest()):
            take(records)
        again = session.counters()
        if again.emitted == counters.emitted and again.lost == counters.lost:
            break
        counters = again
    return counters
