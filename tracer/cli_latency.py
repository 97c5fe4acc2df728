"""`tracer latency`: where time goes on the bridge path, from in-kernel
histograms, at a cost that does not depend on the packet rate."""

from __future__ import annotations

import json
import signal
import sys
import time

import click

from tracer.cli_trace import options_from, target_options


def _us(ns) -> str:
    if ns is None:
        return "-"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e3:.1f}µs"


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


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


@click.command()
@target_options
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds between reports.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval.")
def latency(ports, containers, hosts, proto, ifaces, tc_mode, sample, interval, duration, as_json):
    """Per-segment latency histograms kept in the kernel (no per-packet events)."""
    from tracer.latency import LatencyMaps, report
    from tracer.session import TraceSession

    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    session = TraceSession(options, latency=True)
    maps = None
    try:
        session.start()
        maps = LatencyMaps(session.bpf)
        click.echo(f"tracer: latency of {session.filter.describe()} on {len(session.tc.targets())} interfaces "
                   f"(ready in {time.monotonic() - session.started_at:.1f}s); Ctrl-C to stop", err=True)
        start = maps.snapshot(session.now_ktime())
        last = start
        started = time.monotonic()
        number = 0
        try:
            while duration is None or time.monotonic() - started < duration:
                time.sleep(min(interval, duration - (time.monotonic() - started)) if duration else interval)
                now = maps.snapshot(session.now_ktime())
                number += 1
                rep = report(now - last, now - start)
                if as_json:
                    click.echo(json.dumps({"interval": number, **rep}))
                else:
                    click.echo(render_interval(number, rep) + "\n")
                sys.stdout.flush()
                last = now
        except (KeyboardInterrupt, _Stop):
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if maps is not None:
            maps.close()
        session.close()
