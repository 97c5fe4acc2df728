"""`tracer record`: live packet sightings to Arrow capture files."""

from __future__ import annotations

import click

from tracer.cli.options import (hooks_option, SECONDS, count_option, make_recorder, options_from, proxy_links_option, rules_option,
                                target_options, write_options)
from tracer.live import run


@click.command()
@target_options
@hooks_option
@click.option("-w", "--write", "write_path", type=click.Path(dir_okay=False), required=True, help="Capture file (Arrow IPC stream, .arrows); numbered PATH stem.NNNN.arrows when rotating.")
@write_options
@click.option("--duration", type=SECONDS, default=None, help="Stop after S seconds.")
@count_option
@click.option("--quiet", is_flag=True, help="No progress line on stderr.")
@rules_option
@proxy_links_option
def record(expression, ports, containers, hosts, proto, ifaces, tc_mode, sample, write_path, rotate_size, rotate_seconds, rotate_mb, rotate_files,
           duration, count, quiet, rules, proxy_links, hooks):
    """Record live packet sightings to Arrow files for later analysis
    (`tracer show`, `stats`, `report`; pyarrow, polars, DuckDB). EXPRESSION:
    a pcap-filter expression, as `tracer trace`."""
    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample, expression, rules, proxy_links,
                           hooks)
    recorder = make_recorder(write_path, rotate_size, rotate_seconds, rotate_mb=rotate_mb, rotate_files=rotate_files,
                             count=count, progress=not quiet)
    run(options, [recorder], duration=duration, showing=False, writing=recorder.path)
