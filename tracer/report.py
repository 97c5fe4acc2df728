"""`tracer report`: one self-contained HTML file about a capture.

Plots are drawn with matplotlib (Agg, no display) and embedded as inline SVG,
styles are inline too: the file opens offline, from a mail attachment or a
ticket, with no CDN or script. Four plots people look at rather than read:
latency per hop segment, a waterfall of the slowest journeys, drops by reason,
throughput over time; then small tables for the numbers. A capture with
latency mode's interval histograms (`tracer latency -w`) gets a fifth: p50,
p90 and p99 per segment from the merged in-kernel buckets.
"""

from __future__ import annotations

import html
import io
import json
import re

import numpy as np

from tracer.analysis import Analysis, CaptureAnalysis, LatencySummary
from tracer.ids import format_id
from tracer.journeys import Journey

_SAMPLE_CAP = 20_000  # points per segment in the latency plot: enough for its shape
_PALETTE = {"original": "#1f77b4", "reply": "#ff7f0e", "-": "#7f7f7f"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    # inline: drop the XML prolog/doctype, keep <svg ...>...</svg>
    return text[text.index("<svg"):]


def _empty(title: str, message: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 1.2))
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    ax.text(0.0, 0.3, message, transform=ax.transAxes, color="#666")
    return _svg(fig)


def latency_plot(a: Analysis) -> str:
    """Box plot per hop segment (whiskers 1st-99th percentile), log x, in path order."""
    title = "Latency per hop segment"
    keys = [(s.direction, s.segment) for s in a.segments]
    if not keys:
        return _empty(title, "no packet was seen at two hooks")
    plt = _plt()
    rng = np.random.default_rng(0)
    data = []
    for key in keys:
        v = a.samples[key]
        if len(v) > _SAMPLE_CAP:
            v = rng.choice(v, _SAMPLE_CAP, replace=False)
        data.append(np.maximum(v, 1) / 1e3)  # µs; log axis needs > 0
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(keys) + 1.2))
    box = ax.boxplot(
        data[::-1], orientation="horizontal", whis=(1, 99), showfliers=False, patch_artist=True, widths=0.6,
        medianprops={"color": "black"},
    )
    for patch, (direction, _) in zip(box["boxes"], keys[::-1]):
        patch.set_facecolor(_PALETTE.get(direction, "#999"))
        patch.set_alpha(0.7)
    p99 = [s.p99_ns / 1e3 for s in a.segments][::-1]
    ax.scatter(np.maximum(p99, 1e-3), np.arange(1, len(keys) + 1), marker="|", color="red", s=60, zorder=3, label="p99")
    ax.set_yticks(np.arange(1, len(keys) + 1))
    ax.set_yticklabels([f"{d[0] if d != '-' else '?'}  {seg}" for d, seg in keys[::-1]], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("µs between the two sightings (box: p25-p75, whiskers: p1-p99, red: p99)")
    ax.set_title(f"{title} (o = request, r = reply)", loc="left")
    ax.grid(axis="x", which="both", alpha=0.25)
    return _svg(fig)


HISTOGRAM_TITLE = "Latency per segment (in-kernel histograms)"


def histogram_plot(lat: LatencySummary | None) -> str:
    """Latency mode's merged histograms: a bar to p50 per segment, p90 and p99
    marked, log x; busiest segments on top, end-to-end totals last."""
    title = HISTOGRAM_TITLE
    rows = [r for r in (lat.rows() if lat else []) if r.packets and r.p50_ns is not None]
    if not rows:
        return _empty(title, "no latency histograms (record them with `tracer latency -w PATH`)")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    p50 = np.array([max(r.p50_ns, 1.0) for r in rows]) / 1e3  # µs; the log axis needs > 0
    p90 = np.array([max(r.p90_ns or 1.0, 1.0) for r in rows]) / 1e3
    p99 = np.array([max(r.p99_ns or 1.0, 1.0) for r in rows]) / 1e3
    colors = ["#9467bd" if r.hop_from is None else "#1f77b4" for r in rows]
    floor = max(min(p50.min(), 1.0) / 2, 1e-3)
    ax.barh(y, p50 - floor, left=floor, color=colors, alpha=0.75, height=0.6, label="p50")
    ax.hlines(y, p50, p99, color="#555", linewidth=0.8)
    ax.scatter(p90, y, marker="|", color="#ff7f0e", s=70, zorder=3, label="p90")
    ax.scatter(p99, y, marker="|", color="red", s=70, zorder=3, label="p99")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r.segment}  ({r.packets:,})" for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("µs (bar: p50, orange: p90, red: p99; in parentheses: packets)")
    ax.set_title(f"{title}: {lat.intervals:,} intervals, {lat.seconds:,.1f} s", loc="left")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    ax.grid(axis="x", which="both", alpha=0.25)
    return _svg(fig)


def waterfall_plot(journeys: list[Journey]) -> str:
    """One row per slow packet; a bar from each sighting to the next, labelled by segment."""
    title = "Slowest journeys"
    if not journeys:
        return _empty(title, "no journeys")
    plt = _plt()
    labels = sorted({f"{a.label} → {b.label}" for j in journeys for a, b in zip(j.hops, j.hops[1:])})
    cmap = plt.get_cmap("tab20")
    color = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(journeys) + 1.6))
    for row, j in enumerate(journeys):
        y = len(journeys) - 1 - row
        for a, b in zip(j.hops, j.hops[1:]):
            lab = f"{a.label} → {b.label}"
            ax.barh(y, (b.dt_ns - a.dt_ns) / 1e3, left=a.dt_ns / 1e3, color=color[lab], height=0.7,
                    edgecolor="white", linewidth=0.3)
        ax.plot([h.dt_ns / 1e3 for h in j.hops], [y] * len(j.hops), "|", color="black", markersize=6)
    names = [
        f"#{format_id(j.packet_id)} {j.protocol or '?'} {j.tcp_flags or ''} {j.direction or '?'} {j.verdict}"
        + (f" [{j.container}]" if j.container else "")
        for j in journeys
    ]
    ax.set_yticks(range(len(journeys)))
    ax.set_yticklabels(names[::-1], fontsize=7.5)
    ax.set_xlabel("µs since the packet's first sighting")
    ax.set_title(f"{title} (top {len(journeys)}): where the time went", loc="left")
    # Legend: only the segments that take a visible share of the slowest packets.
    share: dict[str, float] = {}
    for j in journeys:
        for a, b in zip(j.hops, j.hops[1:]):
            lab = f"{a.label} → {b.label}"
            share[lab] = share.get(lab, 0) + (b.dt_ns - a.dt_ns)
    top = sorted(share, key=share.get, reverse=True)[:8]
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[lab]) for lab in top]
    # below the axes: bars span the full width, a legend inside would hide them
    ax.legend(handles, top, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.25)
    return _svg(fig)


def drops_plot(a: Analysis) -> str:
    title = "Drops by reason"
    if not a.drops:
        return _empty(title, "no packet was dropped")
    plt = _plt()
    by_reason: dict[str, int] = {}
    for d in a.drops:
        by_reason[d.reason] = by_reason.get(d.reason, 0) + d.packets
    reasons = sorted(by_reason, key=by_reason.get)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(reasons) + 1.0))
    bars = ax.barh(reasons, [by_reason[r] for r in reasons], color="#d62728")
    ax.bar_label(bars, labels=[f"{by_reason[r]:,}" for r in reasons], padding=3, fontsize=8)
    ax.set_xlabel("packets")
    ax.set_title(title, loc="left")
    return _svg(fig)


def throughput_plot(ca: CaptureAnalysis) -> str:
    title = "Throughput over time"
    tp = ca.throughput()
    if not len(tp["t"]):
        return _empty(title, "no events")
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True)
    top.plot(tp["t"], tp["events_per_s"], label="events/s", color="#1f77b4", drawstyle="steps-post")
    top.plot(tp["t"], tp["packets_per_s"], label="packets/s", color="#2ca02c", drawstyle="steps-post")
    top.set_ylabel("per second")
    top.legend(fontsize=8, frameon=False)
    top.set_title(f"{title} (bins of {_seconds(float(tp['bin_s'][0]))})", loc="left")
    bottom.plot(tp["t"], tp["bytes_per_s"] * 8 / 1e6, color="#9467bd", drawstyle="steps-post")
    bottom.set_ylabel("Mbit/s (IP)")
    bottom.set_xlabel("seconds since the first event")
    for ax in (top, bottom):
        ax.grid(alpha=0.25)
        ax.set_ylim(bottom=0)
    return _svg(fig)


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:g} s"
    if s >= 1e-3:
        return f"{s * 1e3:g} ms"
    return f"{s * 1e6:g} µs"


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = "".join(
            f"<td class=\"{'num' if i in numeric else ''}\">{html.escape('' if v is None else str(v))}</td>"
            for i, v in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:0 0 12px} .meta b{color:#222}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card .v{font-size:20px;font-weight:600} .card .k{color:#666;font-size:12px}
.card.bad .v{color:#c62828}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px;width:100%}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
svg{max-width:100%;height:auto}
.note{color:#666;font-size:12px}
"""


def render_report(ca: CaptureAnalysis, files: list[str] | None = None, slowest: int = 20, max_flows: int = 25) -> str:
    a = ca.analyse()
    m = a.metadata
    title = f"tracer capture report: {m.get('host') or 'unknown host'}"
    meta_line = " · ".join(
        f"<b>{html.escape(k)}</b> {html.escape(v)}"
        for k, v in (
            ("host", m.get("host")), ("kernel", m.get("kernel")), ("filter", m.get("filter")),
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

    seg_table = _table(
        ["direction", "segment", "count", "p50 µs", "p90 µs", "p99 µs", "max µs"],
        [[s.direction, s.segment, f"{s.count:,}", _us(s.p50_ns), _us(s.p90_ns), _us(s.p99_ns), _us(s.max_ns)]
         for s in a.segments],
        {2, 3, 4, 5, 6},
    )
    flow_table = _table(
        ["flow", "container", "proto", "client", "service", "packets", "bytes", "req", "rep", "dropped", "slowest µs", "first seen"],
        [[format_id(f.flow_id), f.container or "-", f.protocol, f.client, f.service, f"{f.packets:,}", f"{f.bytes:,}",
          f.requests, f.replies, f.dropped, _us(f.slowest_ns), f.first_time] for f in a.flows[:max_flows]],
        {5, 6, 7, 8, 9, 10},
    )
    more = f"<p class=\"note\">{len(a.flows) - max_flows:,} more flows: see <code>tracer stats --format csv --section flows</code>.</p>" if len(a.flows) > max_flows else ""
    drop_table = _table(["reason", "last seen", "packets"], [[d.reason, d.last_seen, f"{d.packets:,}"] for d in a.drops], {2}) if a.drops else "<p class=\"note\">none</p>"
    if a.lost:
        lost_table = _table(
            ["sensor", a.record_unit, "lost", "lost %"],
            [[k, f"{v['events']:,}", f"{v['lost']:,}", f"{100 * v['lost'] / max(1, v['events'] + v['lost']):.2f}"] for k, v in a.lost.items()],
            {1, 2, 3},
        )
    else:
        lost_table = "<p class=\"note\">The capture has no statistics (not stopped cleanly?): lost records unknown.</p>"
    histogram_section = _histogram_section(a.latency) if a.latency is not None else []
    meta_rows = [[k, _short(v)] for k, v in sorted(m.items()) if k != "containers"]
    if files:
        meta_rows.insert(0, ["files", ", ".join(files)])
    containers = _containers(m.get("containers"))

    parts = [
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class=\"meta\">{meta_line}</p>",
        f"<div class=\"cards\">{cards_html}</div>",
        *(histogram_section if latency_only else []),
        "<h2 id=\"latency\">Latency per hop segment</h2>", f"<figure class=\"plot\" id=\"plot-latency\">{latency_plot(a)}</figure>",
        seg_table,
        *([] if latency_only else histogram_section),
        "<h2 id=\"waterfall\">Slowest journeys</h2>", f"<figure class=\"plot\" id=\"plot-waterfall\">{waterfall_plot(ca.slowest_journeys(slowest))}</figure>",
        "<h2 id=\"drops\">Drops</h2>", f"<figure class=\"plot\" id=\"plot-drops\">{drops_plot(a)}</figure>", drop_table,
        "<h2 id=\"throughput\">Throughput</h2>", f"<figure class=\"plot\" id=\"plot-throughput\">{throughput_plot(ca)}</figure>",
        "<h2 id=\"flows\">Flows (slowest first)</h2>", flow_table, more,
        "<h2 id=\"lost\">Lost events</h2>", lost_table,
        "<h2 id=\"capture\">Capture</h2>", _table(["key", "value"], meta_rows),
        containers,
        "</body></html>",
    ]
    return "\n".join(parts)


def _histogram_section(lat: LatencySummary) -> list[str]:
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
