"""`tracer stats`, `tracer export --pcapng`, `tracer report`: reading captures
after the fact. No root, no kernel: these run anywhere the files are."""

from __future__ import annotations

import csv
import json
import sys
import threading
from dataclasses import fields
from pathlib import Path

import click

from tracer.errors import TracerError
from tracer.outfiles import open_output
from tracer.render import STATS_SECTIONS, stats_text
from tracer.render_commands import parquet_written_line, pcapng_written_line, report_written_line, warning_line

_files = click.argument("files", nargs=-1, required=True, metavar="FILES...")


def _open(files: tuple[str, ...]):
    """The capture, opened for one streaming pass; warnings about recovered
    (torn, unclosed) files on stderr as they are found."""
    from tracer.capture.reader import open_capture

    return open_capture(list(files), on_warning=lambda w: click.echo(warning_line(w), err=True))


def _load(files: tuple[str, ...], slowest: int = 20):
    """CaptureAnalysis of the files, streamed in bounded memory."""
    from tracer.analysis import CaptureAnalysis

    return CaptureAnalysis.of_capture(_open(files), slowest=slowest)


@click.command()
@_files
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--section", type=click.Choice(STATS_SECTIONS), default=None,
              help="Only this part (csv prints one section; default segments).")
@click.option("--flows", "max_flows", type=int, default=20, show_default=True, help="Flows shown in table format (slowest first).")
def stats(files: tuple[str, ...], fmt: str, section: str | None, max_flows: int) -> None:
    """Per hop segment latency (count, p50, p90, p99, max), per-flow summary,
    drops by reason and hook, and lost events of capture FILES; with
    `tracer latency -w` histograms, their latency per segment, all intervals merged."""
    a = _load(files).analyse()
    if fmt == "json":
        _write_json(a, section)
    elif fmt == "csv":
        _write_csv(a, section or "segments")
    else:
        click.echo(stats_text(a, section, max_flows))


def _write_json(a, section: str | None) -> None:
    """The JSON document, flows written as they are read back (there may be
    millions): the text is what json.dumps(a.to_dict(), indent=2) gives."""
    key = {"flows": "flow_summary", "lost": "lost_events"}.get(section, section)
    data = a.to_dict(flows=False)
    if key is not None and key != "flow_summary":
        click.echo(json.dumps({key: data[key]}, indent=2))
        return
    if key == "flow_summary":
        data = {"flow_summary": []}
    text = json.dumps(data, indent=2)
    at = text.index('"flow_summary": [') + len('"flow_summary": [')
    out = sys.stdout
    out.write(text[:at])
    first = True
    for f in a.flows:
        body = json.dumps(f.to_dict(), indent=2).replace("\n", "\n    ")
        out.write(("\n    " if first else ",\n    ") + body)
        first = False
    out.write(("\n  " if not first else "") + text[at:] + "\n")


def _write_csv(a, section: str) -> None:
    from tracer.analysis_result import DROP_COLUMNS, FlowStats, SegmentStats

    out = csv.writer(sys.stdout, lineterminator="\n")
    if section == "latency":
        from tracer.analysis_result import LATENCY_COLUMNS

        out.writerow(LATENCY_COLUMNS)
        for r in a.latency.rows() if a.latency else []:
            d = r.to_dict()
            out.writerow(["" if d[n] is None else d[n] for n in LATENCY_COLUMNS])
        return
    if section == "lost":
        out.writerow(["sensor", "events", "lost"])
        for name, v in (a.lost or {}).items():
            out.writerow([name, v["events"], v["lost"]])
        return
    if section == "drops":
        out.writerow(DROP_COLUMNS)
        for d in a.drops:
            out.writerow(d.to_dict(a.recorded_hooks.placing).values())
        return
    kind, rows = {"segments": (SegmentStats, a.segments), "flows": (FlowStats, a.flows)}[section]
    names = [f.name for f in fields(kind)]
    out.writerow(names)
    for r in rows:
        d = r.to_dict() if kind is FlowStats else vars(r)
        out.writerow([d[n] for n in names])


@click.command()
@click.option("--pcapng", "pcapng_out", type=click.Path(dir_okay=False, writable=True),
              help="Write a pcapng file here: one packet per sighting; hook and NAT stage in the interface name, "
                   "direction in the packet flags, packet id, hook/interface/container in the comment.")
@click.option("--at", "at", multiple=True, metavar="PLACE",
              help="With --pcapng: only the sightings at PLACE (repeatable): a hop label as `tracer stats` prints it "
                   "(nf_prerouting/after, tc_egress@veth), or an interface name or role (trc-host, external, "
                   "container) for its tc hooks: what tcpdump there would show, one copy per packet, so "
                   "Wireshark's TCP analysis holds.")
@click.option("--parquet", "parquet_out", type=click.Path(),
              help="Write the sightings as Parquet: OUT.parquet is one file (host and date as columns); any other "
                   "OUT is a directory of Hive partitions OUT/host=H/date=D/ that many hosts' exports share.")
@_files
def export(pcapng_out: str | None, at: tuple[str, ...], parquet_out: str | None, files: tuple[str, ...]) -> None:
    """Export capture FILES for Wireshark/tshark (--pcapng) or for DuckDB,
    polars, Spark, Trino (--parquet), streamed in bounded memory.

    In a pcapng export every sighting is a packet, so a packet appears once per
    hook that saw it; Wireshark's TCP sequence analysis then calls the copies
    retransmissions: open such a file with `-o tcp.analyze_sequence_numbers:FALSE`,
    or export one place with --at."""
    if not pcapng_out and not parquet_out:
        raise click.UsageError("give --pcapng OUT or --parquet OUT")
    if pcapng_out and parquet_out:
        raise click.UsageError("give one of --pcapng and --parquet")
    if at and not pcapng_out:
        raise click.UsageError("--at goes with --pcapng")
    capture = _open(files)
    if parquet_out:
        from tracer.parquet import export_parquet

        try:
            n, paths = export_parquet(capture, parquet_out)
        except OSError as exc:
            raise TracerError(f"{parquet_out}: {exc.strerror or exc}") from None
        click.echo(parquet_written_line(n, len(paths), parquet_out), err=True)
        return
    from tracer.pcapng import export_pcapng

    out, where = pcapng_out, pcapng_out
    if pcapng_out == "-":  # `tracer export --pcapng - cap.arrows | tshark -r -`
        if sys.stdout.isatty():
            raise click.UsageError("--pcapng -: standard output is a terminal; pipe it (| tshark -r -) or name a file")
        out, where = sys.stdout.buffer, "standard output"
    try:
        n = export_pcapng(capture.sightings(boundaries=True), out, capture.metadata, at=at, hooks=capture.recorded_hooks)
        if out is not pcapng_out:
            out.flush()
    except TracerError:
        if out is pcapng_out:
            Path(pcapng_out).unlink(missing_ok=True)  # --at named a place the capture never saw: no half a file
        raise
    except OSError as exc:
        raise TracerError(f"{where}: {exc.strerror or exc}") from None
    click.echo(pcapng_written_line(n, where), err=True)


@click.command()
@_files
@click.option("-o", "--output", "out", default="report.html", show_default=True, type=click.Path(dir_okay=False))
@click.option("--slowest", type=int, default=20, show_default=True, help="Journeys in the waterfall.")
def report(files: tuple[str, ...], out: str, slowest: int) -> None:
    """One self-contained HTML report (works offline) of capture FILES."""
    from tracer.analysis import CaptureAnalysis
    from tracer.paths import PathStats
    from tracer.report import render_report
    from tracer.report_plots import preload

    capture = _open(files)
    # matplotlib takes a second or two to import: done while the capture is read, not after.
    threading.Thread(target=preload, name="tracer-plots-import", daemon=True).start()
    paths = PathStats(capture.metadata)  # journeys grouped by path, from the same pass over the capture
    ca = CaptureAnalysis.of_capture(capture, slowest=slowest, also=(paths,))
    text = render_report(ca, paths.finish(), files=list(files), slowest=slowest)
    try:
        with open_output(out, text=True) as f:  # 0600: a report names hosts, containers and addresses
            f.write(text)
    except OSError as exc:
        raise TracerError(f"{out}: {exc.strerror or exc}") from None
    click.echo(report_written_line(out, len(text)), err=True)
