"""`tracer trace` (live journeys) and `tracer demo` (lab + trace + traffic)."""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass

import click

from tracer.errors import TracerError

# A packet whose last sighting is this old is complete: a packet crosses the
# host in well under a millisecond; the margin covers batching.
IDLE_NS = 150_000_000
POLL_S = 0.1


def target_options(fn):
    """Options shared by every command that picks traffic to trace."""
    for decorator in reversed(
        [
            click.option("--port", "ports", type=int, multiple=True, help="Trace connections with this port (either end, before or after NAT). Repeatable."),
            click.option("--container", "containers", multiple=True, help="Trace a container's traffic (its address and published ports). Repeatable."),
            click.option("--host", "hosts", multiple=True, help="Trace traffic to or from this IPv4 address. Repeatable."),
            click.option("--proto", type=str, default=None, help="tcp, udp or icmp."),
            click.option("--iface", "ifaces", multiple=True, help="Host interface(s) where outside traffic arrives (default: every non-container interface)."),
            click.option("--tc-mode", type=click.Choice(["auto", "tcx", "clsact"]), default="auto", show_default=True, help="How tc programs attach."),
        ]
    ):
        fn = decorator(fn)
    return fn


def options_from(ports, containers, hosts, proto, ifaces, tc_mode):
    from tracer.kernel.program import Filter
    from tracer.session import TraceOptions

    proto = proto.lower() if proto else None
    Filter(ports=tuple(ports), hosts=tuple(hosts), proto=proto)  # bad input fails before any kernel work
    return TraceOptions(tuple(ports), tuple(hosts), tuple(containers), proto, tuple(ifaces), tc_mode)


@dataclass
class Limits:
    count: int | None = None
    duration: float | None = None


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def run_trace(options, limits: Limits, as_json: bool, color: bool, out=None, on_started=None) -> dict:
    """Trace until count/duration/Ctrl-C; print journeys; return the summary dict."""
    from tracer.journeys import JourneyAssembler
    from tracer.render import Summary, render_journey, status_line
    from tracer.session import TraceSession

    out = out or sys.stdout
    summary = Summary()
    assembler = JourneyAssembler()
    shown = 0
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    session = TraceSession(options)
    try:
        session.start()
        started = time.monotonic()
        click.echo(f"tracer: tracing {session.filter.describe()} on {len(session.tc.targets())} interfaces "
                   f"(ready in {started - session.started_at:.1f}s); Ctrl-C to stop", err=True)
        if on_started:
            on_started(session)
        status_tty = sys.stderr.isatty() and not as_json
        last_status = started
        events_seen = 0

        def show(journeys) -> bool:
            nonlocal shown
            for journey in journeys:
                if limits.count is not None and shown >= limits.count:
                    return True
                if as_json:
                    out.write(json.dumps(journey.to_json_dict()) + "\n")
                else:
                    out.write(render_journey(journey, color) + "\n")
                out.flush()
                summary.add([journey])
                shown += 1
            return limits.count is not None and shown >= limits.count

        try:
            while True:
                table = session.poll(POLL_S)
                events_seen += table.num_rows
                if table.num_rows:
                    assembler.add(table)
                if show(assembler.pop_complete(IDLE_NS, session.now_ktime())):
                    break
                now = time.monotonic()
                if limits.duration is not None and now - started >= limits.duration:
                    break
                if status_tty and now - last_status >= 1.0:
                    c = session.counters()
                    click.echo("\r" + status_line(events_seen / (now - started), c.total_lost, shown), err=True, nl=False)
                    last_status = now
        except (KeyboardInterrupt, _Stop):
            pass
        # Everything already drained belongs in the output and the summary.
        table = session.poll(0)
        if table.num_rows:
            assembler.add(table)
        show(assembler.flush())
        c = session.counters()
        summary.set_lost(c.lost, c.emitted)
        if status_tty:
            click.echo("", err=True)
        text = summary.render(color)
        click.echo(text, err=as_json, file=None if as_json else out)
        return summary.to_dict()
    finally:
        signal.signal(signal.SIGTERM, previous)
        session.close()


@click.command()
@target_options
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N packets.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="One journey per line as JSON (DESIGN.md contract).")
@click.option("--color/--no-color", default=None, help="Colour the output (default: when stdout is a terminal).")
def trace(ports, containers, hosts, proto, ifaces, tc_mode, count, duration, as_json, color):
    """Follow live packets: one journey per packet, hop by hop."""
    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode)
    color = sys.stdout.isatty() if color is None else color
    run_trace(options, Limits(count, duration), as_json, color and not as_json)


@click.command()
@click.option("--requests", type=click.IntRange(min=1), default=3, show_default=True, help="HTTP requests from the client netns.")
@click.option("--json", "as_json", is_flag=True, help="Journeys as JSON lines.")
def demo(requests, as_json):
    """Bring the lab up, trace it while driving traffic, show the journeys."""
    import threading

    from tracer import lab
    from tracer import traffic as lab_traffic

    status = lab.up()
    click.echo(f"tracer: lab up: client {status['client_address']} -> {status['host_address']}:{status['port']} "
               f"-> {status['container']} ({status['container_ip']}:{status['container_port']})", err=True)
    options = options_from((), (status["container"],), (), None, (), "auto")
    traffic_done = threading.Event()

    def drive_traffic() -> None:
        try:
            time.sleep(0.3)
            for _ in range(requests):
                lab_traffic.client_http_get(status)
            lab_traffic.container_http_get(status)
        except TracerError as exc:
            click.echo(f"tracer: demo traffic failed: {exc}", err=True)
        finally:
            traffic_done.set()

    def stop_after_traffic() -> None:
        traffic_done.wait(60)
        time.sleep(0.6)  # let the last journeys complete (IDLE_NS)
        signal.raise_signal(signal.SIGTERM)

    def on_started(session) -> None:
        threading.Thread(target=drive_traffic, daemon=True).start()
        threading.Thread(target=stop_after_traffic, daemon=True).start()

    run_trace(options, Limits(), as_json, sys.stdout.isatty() and not as_json, on_started=on_started)
