"""`tracer latency`: where time goes on the bridge path, from in-kernel
histograms, at a cost that does not depend on the packet rate."""

from __future__ import annotations

import json
import time

import click

from tracer.cli.options import SECONDS, Seconds, make_recorder, options_from, target_options, write_options
from tracer.output import Reader, say
from tracer.stopping import StopSignals
from tracer.units import duration_text


def _us(ns) -> str:
    return "-" if ns is None else duration_text(ns, largest="ms")


def render_interval(number: int, rep: dict) -> str:
    lines = [f"interval {number}  ({rep['seconds']:.2f} s)  {rep['packets']} packets"]
    if rep["segments"]:
        width = max(len(s["segment"]) for s in rep["segments"])
        lines.append(f"  {'segment':<{width}}  {'packets':>8}  {'p50':>9}  {'p90':>9}  {'p99':>9}  {'max':>9}")
        for s in sorted(rep["segments"], key=lambda s: -s["packets"]):
            lines.append(f"  {s['segment']:<{width}}  {s['packets']:>8}  {_us(s['p50_ns']):>9}  "
                         f"{_us(s['p90_ns']):>9}  {_us(s['p99_ns']):>9}  {_us(s['max_ns']):>9}")
    for direction, label in (("original", "request"), ("reply", "reply")):
        e2e = rep["end_to_end"].get(direction)
        if e2e:
            lines.append(f"  end to end {label:<8} {e2e['packets']:>8} packets  p50 {_us(e2e['p50_ns'])}  "
                         f"p90 {_us(e2e['p90_ns'])}  p99 {_us(e2e['p99_ns'])}  max {_us(e2e['max_ns'])}")
    if rep["missing"]:
        gone = ", ".join(f"{hop} {n}" for hop, n in rep["missing"].items())
        lines.append(f"  never reached the next hop (since start): {gone}")
    return "\n".join(lines)


# While waiting for the end of an interval: wake this often to notice a stop
# and to let the capture writer flush (a few wake-ups a second cost nothing).
_WAKE_S = 0.1


def histogram_info(number: int, rep: dict, start_ktime_ns: int, end_ktime_ns: int) -> dict:
    """The info JSON of one kind='histogram' capture row (docs/capture-format.md)."""
    return {"interval": number, "start_ktime_ns": start_ktime_ns, "end_ktime_ns": end_ktime_ns, **rep}


_RECORDED_ONLY = ("buckets", "hdr")  # what `-w` records per segment beyond the live output


def _without_buckets(rep: dict) -> dict:
    """A report made with include_buckets, as the live output shows it."""
    return {
        **rep,
        "segments": [{k: v for k, v in s.items() if k not in _RECORDED_ONLY} for s in rep["segments"]],
        "end_to_end": {d: {k: v for k, v in e.items() if k not in _RECORDED_ONLY} for d, e in rep["end_to_end"].items()},
    }


@click.command()
@target_options
@click.option("--interval", type=Seconds(0.1, inclusive=True), default=1.0, show_default=True, help="Seconds between reports.")
@click.option("--duration", type=SECONDS, default=None, help="Stop after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval.")
@click.option("-w", "--write", "write_path", type=click.Path(dir_okay=False), default=None,
              help="Also record each interval's histograms to PATH (Arrow IPC stream, .arrows; kind='histogram' rows, "
                   "see docs/capture-format.md); read with `tracer stats` / `tracer report`.")
@write_options
def latency(expression, ports, containers, hosts, proto, ifaces, tc_mode, sample, interval, duration, as_json,
            write_path, rotate_size, rotate_seconds, rotate_mb, rotate_files):
    """Per-segment latency histograms kept in the kernel (no per-packet
    events). EXPRESSION: a pcap-filter expression, as `tracer trace`."""
    from tracer.latency import LatencyMaps, report
    from tracer.session import TraceSession

    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample, expression)
    recorder = make_recorder(write_path, rotate_size, rotate_seconds, stdout_busy="intervals", rotate_mb=rotate_mb,
                             rotate_files=rotate_files)  # a bad path fails before any kernel work
    reader = Reader()
    stop = StopSignals()
    session = TraceSession(options, latency=True)
    maps = None
    try:
        session.start()
        if recorder is not None:
            recorder.start(session)
        maps = LatencyMaps(session.bpf, session.program.hist_slices)
        stop.running()
        where = f"; writing {recorder.path}" if recorder is not None else ""
        say(f"tracer: latency of {session.describe()} on {len(session.tc.targets())} interfaces "
            f"(ready in {time.monotonic() - session.started_at:.1f}s){where}; Ctrl-C to stop")
        start = maps.snapshot(session.now_ktime())
        last = start
        started = time.monotonic()
        number = 0

        def take(final: bool) -> None:
            """Report the interval since `last`; a final (partial) one only into the capture."""
            nonlocal last, number
            now = maps.snapshot(session.now_ktime())
            number += 1
            rep = report(now - last, now - start, include_buckets=recorder is not None)
            if recorder is not None:
                recorder.add_histogram(now.ktime_ns, histogram_info(number, rep, last.ktime_ns, now.ktime_ns))
                recorder.tick()
                rep = _without_buckets(rep)
            if not final:
                if as_json:
                    reader.write(json.dumps({"interval": number, **rep}) + "\n")
                else:
                    reader.write(render_interval(number, rep) + "\n\n")
            last = now

        stopped = False
        while duration is None or time.monotonic() - started < duration:
            end = min((number + 1) * interval, duration) if duration else (number + 1) * interval
            while not stop.requested and not reader.check() and (left := end - (time.monotonic() - started)) > 0:
                time.sleep(min(_WAKE_S, left))
                if recorder is not None:
                    recorder.tick()
            if stop.requested or reader.gone:
                stopped = True
                break
            take(final=False)
            if reader.gone:  # `tracer latency --json | head -1`: stop as if told to
                stopped = True
                break
        stop.finishing()
        if recorder is not None:
            if stopped and session.now_ktime() - last.ktime_ns > 1_000_000:
                take(final=True)  # the part of an interval before Ctrl-C: kept in the capture
            recorder.finish(session.counters())
            written = recorder.writer
            say(f"tracer: wrote {recorder.histogram_rows:,} histogram rows ({written.bytes_written / 1e3:,.1f} kB) "
                f"to {', '.join(map(str, written.paths))}")
    finally:
        try:
            if recorder is not None:
                recorder.close()  # no-op after finish; ends the stream after an error
            if maps is not None:
                maps.close()
            session.close()
        finally:
            stop.restore()
