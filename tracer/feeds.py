"""What a live session brings, one batch a pass (tracer/sinks.py Batch):
the sources the run loop (tracer/live.py) reads. ``JourneyFeed`` holds the
kernel's journey records until each packet is whole (or, for `record`,
passes them straight on); ``SightingFeed`` is the per-sighting build;
``LatencyFeed`` reads latency mode's histograms once an interval; ``RuleFeed``
joins --rules hits to the records. A feed reads the session; it never writes
anywhere: the sinks do."""

from __future__ import annotations

import time
from typing import Iterator

import click

from tracer import record_words
from tracer.render_commands import warning_line
from tracer.sinks import Batch, Interval, RunEnd

# A packet whose last sighting is this old is complete: a packet crosses the
# host in well under a millisecond; the margin covers batching.
IDLE_NS = 150_000_000
POLL_S = 0.1
# Each pass of the loop has fixed costs (sorting the held rows, a few dozen
# Arrow and numpy kernels, a write): under load, let events gather for this
# long rather than cycling on the few the drain thread queued since the last
# pass. Small next to IDLE_NS, so journeys show barely later.
MIN_PASS_S = 0.05
# Complete packets are shown (rows, text, summary: most of `trace`'s CPU,
# much of it per call) at most this often once the first have been shown:
# at the lab's rates a 50 ms pass holds a few hundred, and three passes'
# worth cost ~1 µs a packet less. From then on a pass runs only this often
# too: a pass that shows nothing still pays its own fixed costs (the drain's
# queue taken and its kernel addresses hidden, docker-proxy links read:
# ~1 ms). IDLE_NS's budget does not depend on the pace: a pass reads what
# the drain thread queued before it asks the hold what is complete, and the
# drain thread reads the ring every 25 ms and a sweep's records right after
# it (drain.py). Packets show up to this much later.
SHOW_EVERY_S = 0.15
# `record` shows nothing, so nothing waits on IDLE_NS: it takes what the
# drain queued a few times a second and pays each pass's fixed costs (hiding
# kernel addresses, laying records out as capture rows) on ~5x more records.
# The writer still hands rows to the OS within about a second (FLUSH_SECONDS
# from the oldest, checked every pass).
# Its drain thread also reads the ring buffer once a pass instead of every
# 25 ms (a pass then takes one read's records as they are, not copied into
# one array), at once again after a read that found the ring a quarter
# full, and early as soon as the ring is a quarter full (BackgroundDrain
# looks 25-100 ms apart, sooner the faster the ring fills: drain.PAUSE_STEP_S;
# the ring holds ~75k journeys, seconds of records at the lab's rates, a
# burst of >300k/s fills it within a pass), and sweeps quiet journeys out of
# the kernel once a pass instead of every 50 ms (each followed at once by a
# read): a journey the sweep emits only has to reach the capture, which
# waits up to FLUSH_SECONDS anyway. Each read and each sweep costs
# ~0.15-0.3 ms whatever it brings.
RECORD_PASS_S = 0.25


class RuleFeed:
    """Rule hits (--rules) joined to the journey records as they come:
    (packet_id, RuleHit) pairs, for the capture and the output."""

    def __init__(self, session) -> None:
        from tracer.rule_join import RuleJoiner

        self.session = session
        self.joiner = RuleJoiner()

    def records(self, records) -> None:
        self.joiner.add_records(records)

    def tick(self, now_ktime: int) -> list:
        self.joiner.add_hits(self.session.rules.take())
        return self.joiner.match(now_ktime)

    def caught_up(self, now_ktime: int) -> int:
        """The time up to which every report was read and joined: a packet
        is shown only once its rules are in, even when the reader lags; never
        held longer than the reader may lag (it drops older reports)."""
        from tracer.rule_trace import MAX_LAG_NS

        return min(now_ktime, max(self.session.rules.watermark, now_ktime - MAX_LAG_NS - 500_000_000))

    def finish(self) -> list:
        self.joiner.add_hits(self.session.rules.stop())
        return self.joiner.flush()

    def counts(self) -> dict:
        return {"joined": self.joiner.matched, "unmatched": self.joiner.unmatched, **self.session.rules.stats()}


class _RecordFeed:
    """What the journey and the per-sighting feeds share: pacing, rule hits,
    docker-proxy links, the final drain."""

    def __init__(self, session, showing: bool, show_every: float = SHOW_EVERY_S) -> None:
        self.session, self.showing = session, showing
        # complete packets taken for showing at most this often (explain: every pass)
        self.show_every = show_every
        self.rules = RuleFeed(session) if session.rules is not None else None
        self.sightings = 0  # hop sightings so far (the status line's rate)
        self._pass_started = 0.0
        self._shown_at = None  # when complete packets were last taken for showing (None: none shown yet)
        self._counters = None
        self.started = 0.0

    def begin(self) -> None:
        self.started = time.monotonic()

    def take_pass(self) -> Batch:
        pass_s, drain_every_s = (MIN_PASS_S, None) if self.showing else (RECORD_PASS_S, RECORD_PASS_S)
        if self.showing and self._shown_at is not None:  # the first journeys as soon as they are complete
            pass_s = max(pass_s, self.show_every)
        rest = pass_s - (time.monotonic() - self._pass_started)
        if rest > 0:
            time.sleep(rest)
        self._pass_started = time.monotonic()
        batch = Batch(arrived=self._take(self.session.read_records(POLL_S, drain_every_s)))
        if self.rules is not None:
            batch.rules = self.rules.tick(self.session.now_ktime())
        # Read before the journeys that may be on a proxy leg (output and capture).
        batch.proxy_links = self.session.read_proxy_links()
        now_ktime = self.session.now_ktime()
        if self.rules is not None:
            now_ktime = self.rules.caught_up(now_ktime)
        if self.showing and (self._shown_at is None or self._pass_started - self._shown_at >= self.show_every):
            self._complete(batch, now_ktime)
            some = batch.complete is not None or getattr(batch.journeys, "num_rows", 0) > 0
            if self._shown_at is not None or some:  # the first ones as soon as they are complete
                self._shown_at = self._pass_started
        return batch

    def drain(self, stopped: bool) -> Iterator[Batch]:
        """Everything already in the ring buffer belongs in the output, the
        capture and the summary; the counters are read only once it is
        drained, so the records counted are the records written."""
        arrived = []
        self._counters = _drain(self.session, lambda records: arrived.append(self._take(records)))
        batch = Batch(arrived=self._joined([a for a in arrived if a is not None]), final=True)
        batch.proxy_links = self.session.read_proxy_links()
        if self.rules is not None:
            batch.rules = self.rules.finish()
        if self.showing:
            self._complete(batch, None)  # every packet held: the end
        yield batch

    def end(self) -> RunEnd:
        return RunEnd(self._counters, self.rules.counts() if self.rules is not None else {})

    def close(self) -> None:
        pass


class JourneyFeed(_RecordFeed):
    """The kernel's journey records. With journeys shown, records are held
    per packet until it is quiet (its continuations joined, see
    tracer/hold.py), then read as JourneyRows straight from the records; a
    `record` run passes them on as they come."""

    def __init__(self, session, showing: bool, show_every: float = SHOW_EVERY_S) -> None:
        from tracer.hold import RecordHold

        super().__init__(session, showing, show_every)
        self.hold = RecordHold()

    def _take(self, records):
        """Records for the capture now: all of them when nothing is shown;
        else the late parts of packets already shown."""
        if not len(records):
            return None
        if self.rules is not None:
            self.rules.records(records)
        self.sightings += int(records["n_hops"].sum())
        if not self.showing:
            return records
        late = self.hold.add(records)
        return late if len(late) else None

    @staticmethod
    def _joined(parts):
        return record_words.concat(parts) if parts else None

    def _complete(self, batch: Batch, now_ktime: int | None) -> None:
        records = self.hold.flush() if now_ktime is None else self.hold.pop_complete(IDLE_NS, now_ktime)
        batch.complete = records if len(records) else None
        # nothing complete (most passes when idle): no rows built to be thrown away
        batch.journeys = self.session.journey_rows(records) if len(records) else None


class SightingFeed(_RecordFeed):
    """The per-sighting build (TRACER_SIGHTING_EVENTS=1, the oracle the
    journey records are tested against): sightings joined into journeys in
    user space, as before journeys were assembled in the kernel."""

    def __init__(self, session, showing: bool) -> None:
        from tracer.journey_assembler import JourneyAssembler

        super().__init__(session, showing)
        self.assembler = JourneyAssembler()
        if self.rules is not None:
            click.echo(warning_line("--rules joins rules to the kernel's journey records; "
                                    "not with TRACER_SIGHTING_EVENTS"), err=True)

    def _take(self, records):
        table = self.session.decode_records(records)
        self.sightings += table.num_rows
        if self.showing and table.num_rows:
            self.assembler.add(table)
        return table

    @staticmethod
    def _joined(parts):
        import pyarrow as pa

        parts = [p for p in parts if p.num_rows]
        return pa.concat_tables(parts) if parts else None

    def _complete(self, batch: Batch, now_ktime: int | None) -> None:
        a = self.assembler
        batch.journeys = a.flush_table() if now_ktime is None else a.pop_complete_table(IDLE_NS, now_ktime)


def record_feed(session, showing: bool) -> _RecordFeed:
    return (SightingFeed if session.sightings else JourneyFeed)(session, showing)


# While waiting for the end of an interval: wake this often to notice a stop
# and to let the capture writer flush (a few wake-ups a second cost nothing).
WAKE_S = 0.1


class LatencyFeed:
    """Latency mode: the kernel's histograms, read once an ``interval``
    (the last one cut at ``duration``). ``buckets``: keep each interval's
    buckets (for a capture)."""

    def __init__(self, session, interval: float, duration: float | None, buckets: bool) -> None:
        from tracer.latency import LatencyMaps

        self.session, self.interval, self.duration, self.buckets = session, interval, duration, buckets
        self.sightings = 0
        self.maps = LatencyMaps(session.bpf, session.program.hist_slices)
        self.number = 0

    def begin(self) -> None:
        self.start = self.last = self.maps.snapshot(self.session.now_ktime())
        self.started = time.monotonic()

    def take_pass(self) -> Batch:
        n = self.number + 1
        end = min(n * self.interval, self.duration) if self.duration else n * self.interval
        left = end - (time.monotonic() - self.started)
        if left > 0:
            time.sleep(min(WAKE_S, left))
            if end - (time.monotonic() - self.started) > 0:
                return Batch()
        return Batch(interval=self._interval())

    def _interval(self, final: bool = False) -> Interval:
        """The interval since the last one."""
        from tracer.latency import report

        now = self.maps.snapshot(self.session.now_ktime())
        self.number += 1
        rep = report(now - self.last, now - self.start, include_buckets=self.buckets)
        interval = Interval(self.number, self.last.ktime_ns, now.ktime_ns, rep, final)
        self.last = now
        return interval

    def drain(self, stopped: bool) -> Iterator[Batch]:
        """The part of an interval before a stop: kept in a capture."""
        if stopped and self.buckets and self.session.now_ktime() - self.last.ktime_ns > 1_000_000:
            yield Batch(interval=self._interval(final=True), final=True)

    def end(self) -> RunEnd:
        return RunEnd(self.session.counters())

    def close(self) -> None:
        self.maps.close()


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
