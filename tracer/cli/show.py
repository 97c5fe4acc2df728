"""`tracer show`: replay a capture's journeys exactly as `trace` printed
them live."""

from __future__ import annotations

import os
import sys

import click
import pyarrow as pa
import pyarrow.compute as pc

from tracer.cli.options import ID, HOST, PORT, PROTOCOL, color_option, use_color
from tracer.render_commands import warning_line


@click.command()
@click.argument("args", nargs=-1, metavar="FILES... [EXPRESSION]")
@click.option("-r", "--read", "read_files", multiple=True, metavar="FILE",
              help="A capture to read ('-': standard input), as tcpdump -r; then every argument is the EXPRESSION. Repeatable.")
@click.option("--port", "ports", type=PORT, multiple=True, help="Journeys with this port at any hop (either end, before or after NAT). Repeatable.")
@click.option("--container", "containers", multiple=True, help="Journeys of this container (name or id prefix). Repeatable.")
@click.option("--host", "hosts", type=HOST, multiple=True, help="Journeys with this IPv4 or IPv6 address at any hop. Repeatable.")
@click.option("--proto", type=PROTOCOL, default=None, help="Journeys of this protocol.")
@click.option("--packet", "packets", type=ID, multiple=True, help="This packet (its id as printed: hex, or a capture column's integer). Repeatable.")
@click.option("--flow", "flows", type=ID, multiple=True, help="Packets of this flow (its id as printed: hex, or a capture column's integer). Repeatable.")
@click.option("-c", "--count", type=click.IntRange(min=1), default=None, help="Show only the first N journeys.")
@click.option("--json", "as_json", is_flag=True, help="One journey per line as JSON, as `trace --json`.")
@color_option
def show(args, read_files, ports, containers, hosts, proto, packets, flows, count, as_json, color):
    """Replay the journeys of capture FILES (in the order given) as `trace`
    shows them. EXPRESSION, a pcap-filter expression as tcpdump's, keeps the
    packets it matches at one hop or another (applied to the headers the
    capture recorded: addresses, ports, protocol, IP id, TTL, length, TCP
    flags, seq and ack; no options or payload)."""
    from tracer.capture.reader import open_capture
    from tracer.journey_block import journey_block
    from tracer.journey_rows import journey_rows
    from tracer.output import write_out
    from tracer.packet_window import PacketWindow
    from tracer.proxies import ProxyLinks
    from tracer.proxy_output import recorded_links
    from tracer.render import Summary
    from tracer.targets import Targets
    from tracer.written_pages import WrittenPages

    files, expression = split_files(args, read_files)
    # a bad expression fails before reading anything
    targets = Targets.from_cli(ports, containers, hosts, proto, expression=(expression or "",), live=False)
    packets, flows = set().union(*packets), set().union(*flows)
    capture = open_capture(list(files), on_warning=lambda w: click.echo(warning_line(w), err=True))
    summary_color = use_color(color, sys.stderr)
    color = use_color(color, sys.stdout) and not as_json
    out = sys.stdout
    pages = WrittenPages.of(out)  # `show --json big.arrows > FILE`: written back and dropped as it grows, as `trace`'s
    summary = Summary()
    summary.hooks = capture.recorded_hooks.placing
    summary.hooks_said = capture.metadata.get("hooks", "all")  # files of several profiles: each named
    shown = 0
    # Whole packets a window at a time (tracer/packet_window.py), in order of
    # first sighting: the output is that of the whole capture at once, in
    # bounded memory. The same column-wise path as `trace`.
    sightings = capture.sightings(boundaries=True)  # NEW_RECORDING between recordings: for the window
    book = None
    if capture.has_rules:  # recorded with --rules: each hop's rules, as `trace --rules` showed them
        from tracer.rule_render import RuleBook

        book = RuleBook(summary.hooks)
    links = ProxyLinks()  # docker-proxy links the capture recorded: the proxy hop, as `trace` showed it
    try:  # closed on every path (an in-process caller keeps no parked thread)
        for table in _journey_slices(PacketWindow().packets(sightings)):
            table = targets.select(table, packets=packets, flows=flows)
            rows = journey_rows(table)  # once for the output and the summary
            if count is not None:
                rows = rows.head(count - shown)
            if book is not None:
                # a packet's rule rows are written within a moment of its sightings: read by the time it is whole
                book.add(capture.take_rules())
            recorded_links(links, capture.take_proxy_links())  # written before the journeys they link, read by now
            block, _ = journey_block(rows, as_json, color, book, links)
            if book is not None:
                book.forget_older()
            if len(block):
                write_out(block, out)
                pages.wrote()
            summary.add_table(rows)
            shown += len(rows)
            if count is not None and shown >= count:
                for _ in sightings:  # the closing statistics row is the capture's last
                    pass
                break
    finally:
        pages.close()
    stats = capture.stats
    if stats:
        summary.set_lost(stats.get("lost", {}), stats.get("events", {}), unit=f"{stats.get('record', 'event')}s")
        summary.set_journey_ends(stats.get("journey_ends", {}), stats.get("journey_faults", {}))
    click.echo(summary.render(summary_color), err=True)  # about the replay, not a result: stderr, as trace


SLICE_ROWS = 1 << 14  # rows turned into text at a time: the text of a row is a few hundred bytes


def _journey_slices(chunks):
    """Each chunk of whole packets in slices of about SLICE_ROWS rows, whole
    packets in order of first sighting (as journey_rows orders them), so
    the text made at once stays small."""
    import numpy as np

    from tracer.untimed import in_place, timed

    for chunk in chunks:
        if chunk.num_rows <= SLICE_ROWS:
            yield chunk
            continue
        pid = pc.fill_null(chunk["packet_id"], 0).to_numpy()
        kt = pc.fill_null(chunk["ktime_ns"], 0).to_numpy().astype(np.int64)
        kt = in_place(pid, kt, timed(chunk))  # a row without a ktime_ns: as journey_rows places it
        order = np.lexsort((kt, pid))
        spid = pid[order]
        starts = np.flatnonzero(np.r_[True, spid[1:] != spid[:-1]])
        first = np.empty(len(pid), np.int64)
        first[order] = np.repeat(kt[order][starts], np.diff(np.append(starts, len(pid))))
        rows = np.lexsort((kt, pid, first))  # packets by first sighting, then id; hops by time
        table = chunk.take(pa.array(rows))
        spid = pid[rows]
        bounds = np.flatnonzero(np.r_[True, spid[1:] != spid[:-1]])  # where packets start
        cuts = bounds[np.searchsorted(bounds, np.arange(SLICE_ROWS, len(rows), SLICE_ROWS))]
        for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(rows)].tolist()):
            if b > a:
                yield table.slice(a, b - a)


def split_files(args: tuple[str, ...], read_files: tuple[str, ...] = ()) -> tuple[list[str], str | None]:
    """(capture files, pcap-filter expression or None) from `show`'s
    arguments. With -r, every argument is the expression (tcpdump's way);
    otherwise an argument is a file when it is '-', ends in .arrows or names
    something that exists, and the other words are the expression, in
    either order (`show cap.arrows tcp port 80`, `show 'tcp port 80' cap.arrows`)."""
    from tracer.pcap import expression_of

    if read_files:
        files, words = list(read_files), list(args)
    else:
        is_file = lambda a: a == "-" or a.lower().endswith(".arrows") or os.path.exists(a)
        files = [a for a in args if is_file(a)]
        words = [a for a in args if not is_file(a)]
    if not files:
        hint = f" ({' '.join(words)!r} is not a file)" if words else ""
        raise click.UsageError(f"no capture FILES given{hint}: name .arrows files, or -r FILE")
    return files, expression_of(words)
