"""`tracer trace` (live journeys) and `tracer demo` (lab + trace + traffic)."""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from tracer.cli.options import (hooks_option, SECONDS, color_option, count_option, make_recorder, options_from, proxy_links_option,
                                rules_option, target_options, use_color, write_options)
from tracer.errors import TracerError
from tracer.live import run
from tracer.live_output import JourneyOutput
from tracer.render import demo_lab_up, demo_next_steps
from tracer.render_commands import demo_traffic_failed_line


@click.command()
@target_options
@hooks_option
@count_option
@click.option("--duration", type=SECONDS, default=None, help="Stop after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="One journey per line as JSON (the README's journey contract).")
@color_option
@click.option("-w", "--write", "write_path", type=click.Path(dir_okay=False), default=None, help="Also record the capture to PATH (Arrow IPC stream, .arrows; see `tracer record`).")
@write_options
@rules_option
@proxy_links_option
def trace(expression, ports, containers, hosts, proto, ifaces, tc_mode, sample, count, duration, as_json, color, write_path,
          rotate_size, rotate_seconds, rotate_mb, rotate_files, rules, proxy_links, hooks):
    """Follow live packets: one journey per packet, hop by hop. EXPRESSION is
    a pcap-filter expression, as tcpdump's (`'tcp port 8000 and not host
    198.18.0.9'`), applied where a connection is first recognised; the
    options narrow it further."""
    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample, expression, rules, proxy_links,
                           hooks)
    recorder = make_recorder(write_path, rotate_size, rotate_seconds, stdout_busy="journeys", rotate_mb=rotate_mb,
                             rotate_files=rotate_files)
    output = JourneyOutput(as_json, use_color(color, sys.stdout) and not as_json, count=count,
                           summary_color=use_color(color, sys.stderr))
    run(options, [recorder, output] if recorder else [output], duration=duration,
        writing=recorder.path if recorder else None)


@click.command()
@click.option("--requests", type=click.IntRange(min=1), default=3, show_default=True, help="HTTP requests from the client netns.")
@click.option("--json", "as_json", is_flag=True, help="Journeys as JSON lines.")
@click.option("-w", "--write", "write_path", type=click.Path(dir_okay=False), default="demo.arrows", show_default=True,
              help="Where the demo's capture goes.")
def demo(requests, as_json, write_path):
    """Bring the lab up, trace it while driving traffic, record and show the journeys."""
    import threading

    from tracer import lab
    from tracer import traffic as lab_traffic

    status = lab.up()
    click.echo(demo_lab_up(status), err=True)
    options = options_from((), (status["container"],), (), None, (), "auto")
    if os.path.exists(write_path):
        os.unlink(write_path)  # the demo's own capture from an earlier run
    recorder = make_recorder(write_path, None, None)
    traffic_done = threading.Event()

    def drive_traffic() -> None:
        try:
            time.sleep(0.3)
            for _ in range(requests):
                lab_traffic.client_http_get(status)
            lab_traffic.container_http_get(status)
        except TracerError as exc:
            click.echo(demo_traffic_failed_line(exc), err=True)
        finally:
            traffic_done.set()

    def stop_after_traffic() -> None:
        traffic_done.wait(60)
        time.sleep(0.6)  # let the last journeys complete (IDLE_NS, tracer/feeds.py)
        signal.raise_signal(signal.SIGTERM)

    def on_started(session) -> None:
        threading.Thread(target=drive_traffic, daemon=True).start()
        threading.Thread(target=stop_after_traffic, daemon=True).start()

    output = JourneyOutput(as_json, use_color(None, sys.stdout) and not as_json, summary_color=use_color(None, sys.stderr))
    run(options, [recorder, output], writing=recorder.path, on_started=on_started)
    click.echo(demo_next_steps(write_path), err=True)
