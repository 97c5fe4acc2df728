"""`tracer latency`: where time goes on the bridge path, from in-kernel
histograms, at a cost that does not depend on the packet rate."""

from __future__ import annotations

import click

from tracer.cli.options import SECONDS, Seconds, hooks_option, make_recorder, options_from, target_options, write_options


@click.command()
@target_options
@hooks_option
@click.option("--interval", type=Seconds(0.1, inclusive=True), default=1.0, show_default=True, help="Seconds between reports.")
@click.option("--duration", type=SECONDS, default=None, help="Stop after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval.")
@click.option("-w", "--write", "write_path", type=click.Path(dir_okay=False), default=None,
              help="Also record each interval's histograms to PATH (Arrow IPC stream, .arrows; kind='histogram' rows, "
                   "see docs/capture-format.md); read with `tracer stats` / `tracer report`.")
@write_options
def latency(expression, ports, containers, hosts, proto, ifaces, tc_mode, sample, interval, duration, as_json,
            write_path, rotate_size, rotate_seconds, rotate_mb, rotate_files, hooks):
    """Per-segment latency histograms kept in the kernel (no per-packet
    events). EXPRESSION: a pcap-filter expression, as `tracer trace`."""
    from tracer.live import Latency, run
    from tracer.live_output import IntervalOutput

    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample, expression, hooks=hooks)
    recorder = make_recorder(write_path, rotate_size, rotate_seconds, stdout_busy="intervals", rotate_mb=rotate_mb,
                             rotate_files=rotate_files)  # a bad path fails before any kernel work
    output = IntervalOutput(as_json)
    run(options, [recorder, output] if recorder else [output], duration=duration, latency=Latency(interval),
        announce="latency of", writing=recorder.path if recorder else None)
