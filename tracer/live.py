"""The live run: session -> feed -> sinks. One loop serves `trace`,
`record`, `latency` and `demo`: the session is started, a feed
(tracer/feeds.py) reads one batch a pass from it, every sink
(tracer/sinks.py: the journeys or intervals shown, the capture) gets each
batch, and at the end what was left in the kernel and the counters."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tracer.output import say
from tracer.render import left_out, run_started
from tracer.sinks import Sink, Status
from tracer.stopping import StopSignals

STATUS_EVERY_S = 1.0


@dataclass
class Latency:
    """A latency-mode run: a report every ``interval`` seconds."""

    interval: float = 1.0


def run(options, sinks: list[Sink], *, duration: float | None = None, showing: bool = True, latency: Latency | None = None,
        announce: str = "tracing", writing=None, on_started=None) -> dict:
    """Trace until a sink has enough, ``duration`` seconds are over or Ctrl-C. Every
    sink gets every batch; ``showing``: some sink shows whole packets (so
    records are held until a packet is quiet). ``writing``: the capture a
    sink writes, named when the run starts. Returns what the last sink's
    finish returned (its stats or summary)."""
    from tracer.allocator import keep_heap_memory
    from tracer.feeds import LatencyFeed, record_feed
    from tracer.session import TraceSession

    keep_heap_memory()  # every pass frees what the next allocates again

    stop = StopSignals()
    session = TraceSession(options, latency=latency is not None)
    feed = None
    started_sinks: list[Sink] = []
    try:
        session.start()
        run_info = session.run_info()
        for sink in sinks:
            sink.on_start(run_info)
            started_sinks.append(sink)
            session.on_containers(sink.on_containers)
        if latency is not None:
            buckets = any(getattr(s, "keeps_buckets", False) for s in sinks)  # a capture keeps them
            feed = LatencyFeed(session, latency.interval, duration, buckets)
        else:
            feed = record_feed(session, showing)
        stop.running()
        say(run_started(announce, run_info.describe, run_info.interfaces, time.monotonic() - session.started_at, writing,
                        run_info.hooks, run_info.hooks_kept))
        feed.begin()
        if on_started:
            on_started(session)
        stopped = _loop(session, feed, sinks, duration, stop)
        stop.finishing()  # ended by itself (count, duration): the stop is bounded too
        for batch in feed.drain(stopped):
            for sink in sinks:
                sink.on_batch(batch)
        end = feed.end()
        if getattr(end.counters, "before_start", 0):  # traffic already flowing while the sensors attached one by one
            say(left_out(end.counters.before_start))
        results = [sink.finish(end) for sink in sinks]
        return results[-1] if results else {}
    finally:
        try:
            for sink in started_sinks:
                sink.close()  # no-op after finish; ends a capture's stream after an error
            if feed is not None:
                feed.close()
            session.close()
        finally:
            stop.restore()


def _loop(session, feed, sinks: list[Sink], duration: float | None, stop: StopSignals) -> bool:
    """Passes until a stop; True when stopped (Ctrl-C, a sink had enough),
    False when the duration ran out."""
    last_status = feed.started
    while not stop.requested:
        batch = feed.take_pass()
        now = time.monotonic()
        if now - last_status >= STATUS_EVERY_S:
            batch.status = Status(feed.sightings, now - feed.started, session.counters().total_lost)
            last_status = now
        enough = [sink.on_batch(batch) for sink in sinks]
        # The pass's records go now, not when the next pass replaces them:
        # the drain thread reads the next pass's into the memory they free
        # (a reference held through the next pass's wait made its read
        # fresh memory: ~3 MB of page faults a run at the lab's rates,
        # docs/benchmarks.md "Session 11: record").
        del batch
        if any(enough):
            return True
        if duration is not None and time.monotonic() - feed.started >= duration:
            return False
    return True
