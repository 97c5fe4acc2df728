"""`tracer report`: one self-contained HTML file about a capture.

Plots are drawn with matplotlib (Agg, no display) and embedded as inline SVG,
the path picture is SVG drawn by hand, styles are inline too: the file opens
offline, from a mail attachment or a ticket, with no CDN or script.

The page tells the capture's story in the order people ask: the host's path
as packets took it (one column per path group: inbound DNAT, its replies, a
container's connections out through MASQUERADE, theirs, and anything else),
each step labelled with packets, p50 and p99 and drops marked where they
happened; then per path the latency of each step along it, and over time;
the end-to-end distribution per path; CPU per hop; the slowest journeys; drops;
throughput; flows. A capture with latency mode's interval histograms
(`tracer latency -w`) gets p50, p90 and p99 per segment from the merged
in-kernel buckets.

This module only lays the page out and draws: the numbers come from
tracer.analysis (CaptureAnalysis) and tracer.paths (PathSummary).
"""

from __future__ import annotations

import html
import json
import re

import numpy as np

from tracer.analysis import CaptureAnalysis
from tracer.analysis_result import Analysis, LatencySummary
from tracer.ids import format_id
from tracer.journeys import Journey, timed_pairs
from tracer.paths import Group, PathSummary
from tracer.report_path import duration, path_svg
from tracer.report_plots import box_plot, cpu_plot, end_to_end_plot, plt as _plt, series_plot, svg as _svg
from tracer.sensors.hook_profile import drop_place, named
from tracer.units import seconds_text as _seconds
from tracer.units import micros_text

MAX_PATH_SECTIONS = 6  # path groups with a section of their own; the rest are a table


HISTOGRAM_TITLE = "Latency per segment (in-kernel histograms)"


def histogram_plot(lat: LatencySummary) -> str:
    """Latency mode's merged histograms: a bar to p50 per segment, p90 and p99
    marked, log x; busiest segments on top, end-to-end totals last. Callers
    leave it out when there are no histogram rows with packets."""
    rows = [r for r in lat.rows() if r.packets and r.p50_ns is not None]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    p50 = np.array([max(r.p50_ns, 1.0) for r in rows]) / 1e3  # µs; the log axis needs > 0
    p90 = np.array([max(r.p90_ns or 1.0, 1.0) for r in rows]) / 1e3
    p99 = np.array([max(r.p99_ns or 1.0, 1.0) for r in rows]) / 1e3
    e2e = np.array([r.hop_from is None for r in rows])
    floor = max(min(p50.min(), 1.0) / 2, 1e-3)
    ax.barh(y[~e2e], (p50 - floor)[~e2e], left=floor, color="#1f77b4", alpha=0.75, height=0.6, label="p50, one segment")
    if e2e.any():
        ax.barh(y[e2e], (p50 - floor)[e2e], left=floor, color="#9467bd", alpha=0.75, height=0.6, label="p50, end to end")
    ax.hlines(y, p50, p99, color="#555", linewidth=0.8, label="p50 to p99")
    ax.scatter(p90, y, marker="|", color="#ff7f0e", s=70, zorder=3, label="p90")
    ax.scatter(p99, y, marker="|", color="red", s=70, zorder=3, label="p99")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r.segment}  ({r.packets:,})" for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("µs (in parentheses: packets)")
    ax.set_title(f"{HISTOGRAM_TITLE}: {lat.intervals:,} intervals, {lat.seconds:,.1f} s", loc="left")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    ax.grid(axis="x", which="both", alpha=0.25)
    return _svg(fig)


def _segment_colors(labels: list[str]) -> dict[str, tuple]:
    """A distinct colour per segment (tab20, then tab20b and tab20c: 60)."""
    plt = _plt()
    maps = [plt.get_cmap(n) for n in ("tab20", "tab20b", "tab20c")]
    return {lab: maps[(i // 20) % 3](i % 20) for i, lab in enumerate(labels)}


def waterfall_plot(journeys: list[Journey]) -> str:
    """One row per slow packet; a bar from each sighting to the next, coloured
    by segment; the legend names every colour used. Callers leave it out when
    there are no journeys."""
    plt = _plt()
    # Segments in the order they first appear along the slowest packets' ways: a legend read top to bottom follows a path.
    labels: list[str] = []
    for j in journeys:
        for a, b in zip(j.hops, j.hops[1:]):
            lab = f"{a.label} → {b.label}"
            if lab not in labels:
                labels.append(lab)
    color = _segment_colors(labels)
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(journeys) + 1.6))
    for row, j in enumerate(journeys):
        y = len(journeys) - 1 - row
        for a, b in timed_pairs(j.hops):  # a hop without a ktime_ns (a damaged capture's): no bar
            lab = f"{a.label} → {b.label}"
            ax.barh(y, (b.dt_ns - a.dt_ns) / 1e3, left=a.dt_ns / 1e3, color=color[lab], height=0.7,
                    edgecolor="white", linewidth=0.3)
        ticks = [h.dt_ns / 1e3 for h in j.hops if h.dt_ns is not None]
        ax.plot(ticks, [y] * len(ticks), "|", color="black", markersize=6)
    names = [
        f"#{format_id(j.packet_id)} {j.protocol or '?'} {j.tcp_flags or ''} {j.direction or '?'} {j.verdict}"
        + (f" [{j.container}]" if j.container else "")
        for j in journeys
    ]
    ax.set_yticks(range(len(journeys)))
    ax.set_yticklabels(names[::-1], fontsize=7.5)
    ax.set_xlabel("µs since the packet's first sighting (ticks: sightings)")
    ax.set_title(f"Slowest journeys (top {len(journeys)}): where the time went", loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[lab]) for lab in labels]
    # below the axes: bars span the full width, a legend inside would hide them
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.25)
    return _svg(fig)


def drops_plot(a: Analysis) -> str:
    """Dropped packets by reason and by the place they were last seen.
    Callers leave it out when nothing was dropped."""
    plt = _plt()
    rows = sorted(a.drops, key=lambda d: (d.packets, d.reason, d.last_seen))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.0))
    profile = a.recorded_hooks.placing
    names = [f"{d.reason}  ({drop_place(profile, d.last_seen, f'after {d.last_seen}')})" for d in rows]
    bars = ax.barh(names, [d.packets for d in rows], color="#d62728")
    ax.bar_label(bars, labels=[f"{d.packets:,}" for d in rows], padding=3, fontsize=8)
    ax.set_xlabel("packets")
    ax.set_title("Drops by reason and where the packet was last seen", loc="left")
    return _svg(fig)


def throughput_plot(tp: dict) -> str:
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True)
    top.plot(tp["t"], tp["events_per_s"], label="sightings/s", color="#1f77b4", drawstyle="steps-post")
    top.plot(tp["t"], tp["packets_per_s"], label="packets/s", color="#2ca02c", drawstyle="steps-post")
    top.set_ylabel("per second")
    top.legend(fontsize=8, frameon=False)
    top.set_title(f"Throughput over time (bins of {_seconds(float(tp['bin_s'][0]))})", loc="left")
    bottom.plot(tp["t"], tp["bytes_per_s"] * 8 / 1e6, color="#9467bd", drawstyle="steps-post", label="Mbit/s (IP)")
    bottom.set_ylabel("Mbit/s (IP)")
    bottom.set_xlabel("seconds since the first event")
    bottom.legend(fontsize=8, frameon=False)
    for ax in (top, bottom):
        ax.grid(alpha=0.25)
        ax.set_ylim(bottom=0)
    return _svg(fig)


_us = micros_text  # a column headed µs


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = "".join(
            f"<td class=\"{'num' if i in numeric else ''}\">{html.escape('' if v is None else str(v))}</td>"
            for i, v in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    # a wide table scrolls in its own box instead of widening the page
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _figure(plot_id: str, svg: str) -> str:
    return f"<figure class=\"plot\" id=\"{plot_id}\">{svg}</figure>"


def _note(text: str) -> str:
    return f"<p class=\"note\">{text}</p>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
.meta{color:#555;margin:0 0 12px} .meta b{color:#222}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card .v{font-size:20px;font-weight:600} .card .k{color:#666;font-size:12px}
.card.bad .v{color:#c62828}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px;width:100%}
.scroll{overflow-x:auto;max-width:100%}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
svg{max-width:100%;height:auto}
figure{margin:8px 0}
.note{color:#666;font-size:12px}
nav{font-size:12.5px;color:#555} nav a{color:#1565c0;margin-right:10px}
"""


def _percentile_cells(h, qs=(50, 90, 99)) -> list[str]:
    return [duration(v) for v in h.values_at(qs)] + [duration(h.max)]


def _path_section(paths: PathSummary, profile: str = "all") -> list[str]:
    picture = path_svg(paths, hooks=profile)
    if not picture:
        return ["<h2 id=\"path\">The path</h2>", _note("No packet of a known path in this capture.")]
    shown = [g for g in paths.groups if g.path][:8]
    more = len([g for g in paths.groups if g.path]) - len(shown)
    return [
        "<h2 id=\"path\">The path</h2>",
        _note("One column per group of packets that took the same way through the host (its direction, where it "
              "came in, the NAT it went through). Boxes are the places in the order the group's packets passed them "
              "(blue: a tc hook on an interface, green: a netfilter hook, orange: the container's eth0); each arrow: "
              "packets that made that step · median · p99 from one place to the next; purple: the NAT and the new "
              "address; red: packets dropped there (last seen at that place)."),
        _figure("plot-path", picture),
        *( [_note(f"{more:,} smaller groups are in the table under “End to end”.")] if more > 0 else []),
    ]


def _group_section(g: Group, paths: PathSummary, anchor: str, profile: str = "all") -> list[str]:
    segs = g.path_segments()
    out = [f"<h3 id=\"{anchor}\">{html.escape(g.name)}</h3>"]
    verdicts = ", ".join(f"{n:,} {v}" for v, n in g.verdicts.most_common())
    out.append(_note(f"{g.packets:,} packets ({html.escape(verdicts)}); path: {html.escape(' → '.join(g.path))}"
                     + (f"; {g.off_path:,} took another way" if g.off_path else "") + "."))
    if segs:
        out.append(_figure(f"plot-{anchor}", box_plot(g)))
        out.append(_table(
            ["segment", "packets", "p50", "p90", "p99", "max"],
            [[f"{s.src} → {s.dst}", f"{s.packets:,}", *_percentile_cells(s.latency)] for s in segs],
            {1, 2, 3, 4, 5},
        ))
        bins = {b for s in segs for b in s.series}
        if len(bins) >= 2:
            out.append(_figure(f"plot-{anchor}-time", series_plot(g, paths)))
        else:
            out.append(_note(f"Latency over time: every packet of this path fell in one time bin of {_seconds(paths.bin_ns / 1e9)}."))
    others = g.other_segments()
    if others:
        out.append(_note("Steps of packets that took another way: " + html.escape("; ".join(
            f"{s.src} → {s.dst} ({s.packets:,})" for s in others[:8])) + ("; …" if len(others) > 8 else "") + "."))
    if g.drops:
        out.append(_table(["last seen", "reason", "packets"], [[drop_place(profile, w), r, f"{n:,}"] for (w, r), n in g.drops.most_common()],
                          {2}))
    return out


def _end_to_end_section(paths: PathSummary) -> list[str]:
    groups = [g for g in paths.groups if g.end_to_end.total]
    out = ["<h2 id=\"end-to-end\">End to end</h2>"]
    if not groups:
        return out + [_note("No packet was delivered, so no way through the host was timed end to end.")]
    drawn = groups[:10]
    out.append(_note("Delivered packets, first to last sighting, per path: the percentile distribution the way "
                     "HdrHistogram draws it (the tail stretched to the right)."))
    out.append(_figure("plot-end-to-end", end_to_end_plot(drawn)))
    rows = [[g.name, f"{g.packets:,}", f"{g.verdicts.get('delivered', 0):,}", f"{g.verdicts.get('dropped', 0):,}",
             *(_percentile_cells(g.end_to_end, (50, 90, 99, 99.9)) if g.end_to_end.total else ["-"] * 5)]
            for g in paths.groups]
    out.append(_table(["path", "packets", "delivered", "dropped", "p50", "p90", "p99", "p99.9", "max"], rows,
                      {1, 2, 3, 4, 5, 6, 7, 8}))
    return out


def _cpu_section(paths: PathSummary, sections: list[tuple[Group, str]]) -> list[str]:
    out = ["<h2 id=\"cpu\">CPU per hop</h2>"]
    if paths.cpu_per_hop:
        out.append(_note("Which CPU saw each place's sightings, per path (a packet handed to another CPU, by RPS or "
                         "a backlog, changes CPU between two places)."))
        for g, anchor in sections:
            if len(g.path) and g.cpus:
                out += [f"<h3>{html.escape(g.name)}</h3>", _figure(f"plot-cpu-{anchor}", cpu_plot(g))]
        return out
    out.append(_note("This capture records the CPU of each packet's first sighting only (the kernel assembles each "
                     "journey and keeps its first CPU), not of every hop: packets per CPU where they entered."))
    cpus = sorted({c for g in paths.groups if g.path for c in g.cpus.get(g.path[0], {})})
    rows = []
    for g in paths.groups:
        if not g.path:
            continue
        counts = g.cpus.get(g.path[0], {})
        total = sum(counts.values()) or 1
        rows.append([g.name, *(f"{100 * counts.get(c, 0) / total:.0f} %" for c in cpus)])
    out.append(_table(["path", *(f"cpu{c}" for c in cpus)], rows, set(range(1, len(cpus) + 1))))
    return out


def _files_text(files: list[str], shown: int = 10) -> str:
    """The capture's files, or for a long rotation (`record -C`: thousands
    of parts) how many and the first and last few: the report stays small."""
    if len(files) <= shown:
        return ", ".join(files)
    half = shown // 2
    return f"{len(files):,} files: " + ", ".join(files[:half]) + ", … " + ", ".join(files[-half:])


def render_report(ca: CaptureAnalysis, paths: PathSummary, files: list[str] | None = None, slowest: int = 20,
                  max_flows: int = 25) -> str:
    a = ca.analyse()
    m = a.metadata
    profile = a.recorded_hooks.placing  # the hook profile drops are placed by, read once
    title = f"tracer capture report: {m.get('host') or 'unknown host'}"
    meta_line = " · ".join(
        f"<b>{html.escape(k)}</b> {html.escape(v)}"
        for k, v in (
            ("host", m.get("host")), ("kernel", m.get("kernel")), ("filter", m.get("filter")),
            ("hooks", named(m)),
            ("from", a.start or (a.latency.start if a.latency else None)),
            ("to", a.end or (a.latency.end if a.latency else None)),
            ("duration", f"{a.duration_s:.3f} s" if a.start else (f"{a.latency.seconds:.3f} s" if a.latency else None)),
        )
        if v
    )
    # `tracer latency -w`: histograms and no packet events; they lead the report.
    latency_only = a.events == 0 and a.latency is not None
    lost_total = sum(v["lost"] for v in a.lost.values()) if a.lost else None
    cards = [
        ("events", f"{a.events:,}", False),
        ("packets", f"{a.packets:,}", False),
        ("flows", f"{a.flows_total:,}", False),
        ("delivered", f"{a.verdicts['delivered']:,}", False),
        ("dropped", f"{a.verdicts['dropped']:,}", a.verdicts["dropped"] > 0),
        ("unknown", f"{a.verdicts['unknown']:,}", False),
        (f"lost {a.record_unit}", "not reported" if lost_total is None else f"{lost_total:,}", bool(lost_total)),
    ]
    cards_html = "".join(
        f"<div class=\"card{' bad' if bad else ''}\"><div class=\"v\">{v}</div><div class=\"k\">{k}</div></div>"
        for k, v, bad in cards
    )

    histogram_section = _histogram_section(a.latency) if a.latency is not None else []
    if a.events == 0:
        event_sections = ["<h2 id=\"path\">The path</h2>",
                          _note("This capture holds no packet sightings" + (" (a `tracer latency -w` capture: its "
                                "in-kernel histograms are above)." if a.latency is not None else "."))]
    else:
        groups = [g for g in paths.groups if g.path][:MAX_PATH_SECTIONS]
        sections = [(g, f"path-{i + 1}") for i, g in enumerate(groups)]
        journeys = ca.slowest_journeys(slowest)
        tp = ca.throughput()
        event_sections = [
            *_path_section(paths, profile),
            "<h2 id=\"latency\">Latency along each path</h2>",
            _note("Per path, each step from one place to the next in path order: box p25-p75, median, whiskers from "
                  "p1 to p99 with the p99 marked in red, max as a dot; then the p99 of each step over time. "
                  "Percentiles come from HdrHistograms with 3 significant digits (within 0.1 %), as HdrHistogram "
                  "reads them; <code>tracer stats</code> gives exact interpolated ones per direction."),
            *[x for g, anchor in sections for x in _group_section(g, paths, anchor, profile)],
            *_end_to_end_section(paths),
            *_cpu_section(paths, sections),
            "<h2 id=\"waterfall\">Slowest journeys</h2>",
            *([_figure("plot-waterfall", waterfall_plot(journeys))] if journeys else [_note("No journey.")]),
            "<h2 id=\"drops\">Drops</h2>",
            *([_figure("plot-drops", drops_plot(a)),
               _table(["reason", "last seen", "packets"],
                      [[d.reason, drop_place(profile, d.last_seen), f"{d.packets:,}"] for d in a.drops], {2})]
              if a.drops else [_note("No packet was dropped.")]),
            "<h2 id=\"throughput\">Throughput</h2>",
            *([_figure("plot-throughput", throughput_plot(tp))] if len(tp["t"]) else [_note("No events.")]),
        ]

    flow_table = _table(
        ["flow", "container", "proto", "client", "service", "packets", "bytes", "req", "rep", "dropped", "slowest µs", "first seen"],
        [[format_id(f.flow_id), f.container or "-", f.protocol, f.client, f.service, f"{f.packets:,}", f"{f.bytes:,}",
          f.requests, f.replies, f.dropped, _us_or_dash(f.slowest_ns), f.first_time or "-"] for f in a.flows[:max_flows]],
        {5, 6, 7, 8, 9, 10},
    )
    more = f"<p class=\"note\">{len(a.flows) - max_flows:,} more flows: see <code>tracer stats --format csv --section flows</code>.</p>" if len(a.flows) > max_flows else ""
    if a.lost:
        lost_table = _table(
            ["sensor", a.record_unit, "lost", "lost %"],
            [[k, f"{v['events']:,}", f"{v['lost']:,}", f"{100 * v['lost'] / max(1, v['events'] + v['lost']):.2f}"] for k, v in a.lost.items()],
            {1, 2, 3},
        )
    else:
        lost_table = "<p class=\"note\">The capture has no statistics (not stopped cleanly?): lost records unknown.</p>"
    meta_rows = [[k, _short(v)] for k, v in sorted(m.items()) if k != "containers"]
    if files:
        meta_rows.insert(0, ["files", _files_text(files)])
    containers = _containers(m.get("containers"))
    nav = ("<nav>" + "".join(f"<a href=\"#{i}\">{t}</a>" for i, t in (
        ("path", "path"), ("latency", "latency"), ("end-to-end", "end to end"), ("cpu", "CPU"), ("waterfall", "slowest"),
        ("drops", "drops"), ("throughput", "throughput"), ("flows", "flows")) if a.events) + "</nav>")

    parts = [
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class=\"meta\">{meta_line}</p>",
        nav,
        f"<div class=\"cards\">{cards_html}</div>",
        *(histogram_section if latency_only else []),
        *event_sections,
        *([] if latency_only else histogram_section),
        "<h2 id=\"flows\">Flows (slowest first)</h2>", flow_table if a.flows else _note("No flow."), more,
        "<h2 id=\"lost\">Lost events</h2>", lost_table,
        "<h2 id=\"capture\">Capture</h2>", _table(["key", "value"], meta_rows),
        containers,
        "</body></html>",
    ]
    return "\n".join(parts)


def _histogram_section(lat: LatencySummary) -> list[str]:
    if not any(r.packets and r.p50_ns is not None for r in lat.rows()):
        return [f"<h2 id=\"latency-histograms\">{html.escape(HISTOGRAM_TITLE)}</h2>",
                _note(f"{lat.intervals:,} intervals of <code>tracer latency -w</code> without a packet.")]
    table = _table(
        ["segment", "from", "to", "packets", "p50 µs", "p90 µs", "p99 µs", "max µs"],
        [[r.segment, r.hop_from or "", r.hop_to or "", f"{r.packets:,}", _us_or_dash(r.p50_ns), _us_or_dash(r.p90_ns),
          _us_or_dash(r.p99_ns), _us_or_dash(r.max_ns)] for r in lat.rows()],
        {3, 4, 5, 6, 7},
    )
    missing = ""
    if lat.missing:
        gone = ", ".join(f"{html.escape(hop)} {n:,}" for hop, n in lat.missing.items())
        missing = f"<p class=\"note\">Never reached the next hop: {gone}.</p>"
    note = (f"<p class=\"note\">{lat.intervals:,} intervals of <code>tracer latency -w</code> ({html.escape(str(lat.start))} .. "
            f"{html.escape(str(lat.end))}), bucket counts summed over all of them; percentiles are interpolated inside "
            "buckets 1/16 of a power of two wide.</p>")
    return [
        f"<h2 id=\"latency-histograms\">{html.escape(HISTOGRAM_TITLE)}</h2>",
        f"<figure class=\"plot\" id=\"plot-latency-histograms\">{histogram_plot(lat)}</figure>",
        note, table, missing,
    ]


def _us_or_dash(ns: float | None) -> str:
    return "-" if ns is None else _us(ns)


def _short(value: str, width: int = 140) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _containers(text: str | None) -> str:
    try:
        items = json.loads(text) if text else []
    except ValueError:
        return ""
    if not isinstance(items, list) or not items:
        return ""
    rows = []
    for c in items:
        if isinstance(c, dict):
            ips = c.get("ips") or c.get("ip") or ""
            rows.append([c.get("name") or "-", (c.get("id") or "")[:12], ", ".join(ips) if isinstance(ips, list) else ips])
    return "<h2>Containers at start</h2>" + _table(["name", "id", "addresses"], rows) if rows else ""


_EXTERNAL = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", re.I)


def is_self_contained(text: str) -> bool:
    """No script, stylesheet or image is fetched from elsewhere."""
    return _EXTERNAL.search(text) is None
