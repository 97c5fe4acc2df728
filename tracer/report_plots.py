"""The report's plots of path groups (tracer/paths.py), drawn with matplotlib
as inline SVG: latency per segment along each path, end-to-end
distributions, latency over time, CPU per hop.

Every number a plot shows comes from the same HdrHistogram the tables beside
it read, so a box's whisker ends exactly where its p99 tick is: boxes and
whiskers are drawn here from the computed percentiles (matplotlib's boxplot
would clip whiskers to samples). Callers leave out a plot that would be empty.
"""

from __future__ import annotations

import io

import numpy as np

from tracer.paths import Group, PathSummary
from tracer.units import seconds_text

BOX_PERCENTILES = (1, 25, 50, 75, 99)  # whisker, box, median, box, whisker (= the p99 tick)


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    pyplot.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                            "svg.hashsalt": "tracer"})
    return pyplot


def preload() -> None:
    """Import matplotlib ahead (on a thread of its own, while the capture is
    read); a failure is left for the drawing itself to report."""
    try:
        plt()
    except Exception:  # noqa: BLE001 - raised again, as one line, where the report draws
        pass


def svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog


def box_stats(group: Group) -> list[tuple[str, np.ndarray, float, int]]:
    """(segment, [p1, p25, p50, p75, p99] ns, max ns, packets) along the path."""
    out = []
    for seg in group.path_segments():
        out.append((f"{seg.src} → {seg.dst}", seg.latency.values_at(BOX_PERCENTILES), seg.latency.max, seg.packets))
    return out


def box_plot(group: Group) -> str:
    """Latency per segment of one path group, top to bottom in path order."""
    rows = box_stats(group)
    p = plt()
    fig, ax = p.subplots(figsize=(10, 0.34 * len(rows) + 1.3))
    ys = np.arange(len(rows))[::-1]
    floor = 1.0  # ns: the log axis needs > 0
    for y, (_, q, top, _) in zip(ys, rows):
        q = np.maximum(q, floor)
        ax.hlines(y, q[0], q[1], color="#555", linewidth=1)  # lower whisker: p1 to p25
        ax.hlines(y, q[3], q[4], color="#555", linewidth=1)  # upper whisker: p75 to p99
        ax.vlines(q[0], y - 0.15, y + 0.15, color="#555", linewidth=1)  # p1 cap
        ax.add_patch(p.Rectangle((q[1], y - 0.3), max(q[3] - q[1], 1e-9), 0.6, facecolor="#9ecae1", edgecolor="#3182bd"))
        ax.vlines(q[2], y - 0.3, y + 0.3, color="black", linewidth=1.5)  # median
        ax.vlines(q[4], y - 0.22, y + 0.22, color="#d62728", linewidth=2)  # p99 tick = the whisker's end
        ax.plot([max(top, floor)], [y], marker="o", markersize=3, color="#888", linestyle="none")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{name}  ({n:,})" for name, _, _, n in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lows = [max(q[0], floor) for _, q, _, _ in rows]
    highs = [max(top, floor) for _, _, top, _ in rows]
    ax.set_xlim(min(lows) / 1.5, max(highs) * 1.5)
    ax.set_xlabel("ns from one place to the next (log)")
    handles = [
        p.Rectangle((0, 0), 1, 1, facecolor="#9ecae1", edgecolor="#3182bd"),
        p.Line2D([], [], color="black", linewidth=1.5),
        p.Line2D([], [], color="#555", linewidth=1),
        p.Line2D([], [], color="#d62728", linewidth=2),
        p.Line2D([], [], color="#888", marker="o", markersize=3, linestyle="none"),
    ]
    ax.legend(handles, ["p25-p75", "median", "whiskers: p1 and p99", "p99", "max"], fontsize=7.5, frameon=False,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", which="both", alpha=0.25)
    return svg(fig)


_E2E_Q = np.array([0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100.0])


def end_to_end_plot(groups: list[Group]) -> str:
    """HdrHistogram's percentile distribution: one line per path group,
    x the percentile on a 1/(1-q) scale, y first-to-last sighting (log)."""
    p = plt()
    fig, ax = p.subplots(figsize=(10, 3.8))
    cmap = p.get_cmap("tab10")
    x = 1.0 / (1.0 - np.minimum(_E2E_Q, 99.999) / 100.0)
    for i, g in enumerate(groups):
        v = g.end_to_end.values_at(_E2E_Q)
        ax.plot(x, np.maximum(v, 1) / 1e3, marker="o", markersize=3, color=cmap(i % 10),
                label=f"{g.name} ({g.end_to_end.total:,})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    labelled = [i for i, q in enumerate(_E2E_Q) if q in (0, 50, 90, 99, 99.9, 99.99, 100)]  # the low ones crowd
    ax.set_xticks(x[labelled])
    ax.set_xticklabels([f"{_E2E_Q[i]:g}%" if _E2E_Q[i] < 100 else "max" for i in labelled], fontsize=7.5)
    ax.minorticks_off()
    ax.set_xlabel("percentile")
    ax.set_ylabel("µs, first to last sighting (log)")
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return svg(fig)


def series_plot(group: Group, summary: PathSummary) -> str:
    """p99 per segment over time: rows in path order, a column per time bin,
    colour the p99 (log scale; blank where no packet made that step)."""
    from matplotlib.colors import LogNorm

    segs = group.path_segments()
    bins = sorted({b for s in segs for b in s.series})
    lo, hi = bins[0], bins[-1]
    grid = np.full((len(segs), hi - lo + 1), np.nan)
    for r, s in enumerate(segs):
        for b, h in s.series.items():
            grid[r, b - lo] = max(h.value_at(99), 1.0) / 1e3
    p = plt()
    fig, ax = p.subplots(figsize=(10, 0.3 * len(segs) + 1.4))
    width_s = summary.bin_ns / 1e9
    edges_x = (np.arange(lo, hi + 2)) * width_s
    mesh = ax.pcolormesh(edges_x, np.arange(len(segs) + 1), np.ma.masked_invalid(grid[::-1]), cmap="viridis",
                         norm=LogNorm(vmin=np.nanmin(grid), vmax=max(np.nanmax(grid), np.nanmin(grid) * 1.01)))
    ax.set_yticks(np.arange(len(segs)) + 0.5)
    ax.set_yticklabels([f"{s.src} → {s.dst}" for s in segs][::-1], fontsize=8)
    ax.set_xlabel(f"seconds since the first packet (bins of {seconds_text(width_s)})")
    bar = fig.colorbar(mesh, ax=ax, pad=0.01)
    bar.set_label("p99 in the bin, µs (log)")
    return svg(fig)


def cpu_plot(group: Group) -> str:
    """Share of each place's sightings per CPU (captures that record the CPU
    of every sighting)."""
    places = list(group.path)
    cpus = sorted({c for lab in places for c in group.cpus.get(lab, {})})
    grid = np.zeros((len(places), len(cpus)))
    for r, lab in enumerate(places):
        counts = group.cpus.get(lab, {})
        total = sum(counts.values()) or 1
        for k, c in enumerate(cpus):
            grid[r, k] = 100.0 * counts.get(c, 0) / total
    p = plt()
    fig, ax = p.subplots(figsize=(min(10, 2 + 0.6 * len(cpus)), 0.3 * len(places) + 1.2))
    mesh = ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=100)
    ax.set_yticks(range(len(places)))
    ax.set_yticklabels(places, fontsize=8)
    ax.set_xticks(range(len(cpus)))
    ax.set_xticklabels([f"cpu{c}" for c in cpus], fontsize=8)
    for r in range(len(places)):
        for k in range(len(cpus)):
            ax.text(k, r, f"{grid[r, k]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[r, k] > 60 else "black")
    fig.colorbar(mesh, ax=ax, pad=0.02).set_label("% of the place's sightings")
    return svg(fig)
