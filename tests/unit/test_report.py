"""`tracer report`: one self-contained HTML file that shows the path (issue 13)."""

from __future__ import annotations

import html
import re
from pathlib import Path

from click.testing import CliRunner

from tests.unit.analysis_data import capture_table, event_table, lab_capture, write_capture
from tracer.cli import cli
from tracer.journeys import build_journeys
from tracer.paths import path_summary
from tracer.report import is_self_contained, waterfall_plot
from tracer.report_path import duration
from tracer.report_plots import box_stats


def _report(tmp_path: Path, rows: list[dict]) -> str:
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(cap), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_text()


def _figures(text: str) -> dict[str, str]:
    return dict(re.findall(r'<figure class="plot" id="([^"]+)">(.*?)</figure>', text, re.S))


def test_report_is_self_contained_and_shows_the_path(tmp_path: Path):
    rows, _ = lab_capture()
    text = _report(tmp_path, rows)
    figures = _figures(text)
    for plot in ("plot-path", "plot-path-1", "plot-path-2", "plot-end-to-end", "plot-waterfall", "plot-drops", "plot-throughput"):
        assert plot in figures and "<svg" in figures[plot], plot
    assert all("<svg" in f for f in figures.values())  # no figure without a drawing
    assert is_self_contained(text)
    assert "<script" not in text
    for word in ("lab-host", "6.18.0-test", "port 8000", "NETFILTER_DROP", "tc_egress@veth → tc_ingress@container"):
        assert word in text
    # the picture: inbound DNAT and its replies in their own columns, NAT where it happened, drops where last seen
    path = figures["plot-path"]
    for word in ("external → container", "DNAT · requests", "reverse DNAT · replies", "PREROUTING after NAT",
                 "→ 172.17.0.2:8080", "reverse DNAT", "→ 198.18.0.1:8000", "✕ 2 dropped", "NETFILTER_DROP",
                 "veth-lab-h", "docker0", "veth3f2a1b"):
        assert html.escape(word) in path, word
    # every arrow along the inbound path is labelled with packets, p50 and p99
    assert path.count("· p50 ") >= 8 + 7


def test_segments_in_path_order_and_whiskers_agree_with_p99(tmp_path: Path):
    rows, _ = lab_capture()
    text = _report(tmp_path, rows)
    summary = path_summary(event_table(rows))
    inbound = summary.groups[0]
    section = text[text.index('id="path-1"'): text.index('id="path-2"')]
    section = section[section.index("<table>"): section.index("</table>")]  # the segments table
    table_rows = re.findall(r"<tr><td class=\"\">([^<]+)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", section)
    names = [html.unescape(n) for n, _ in table_rows]
    assert names == [f"{a} → {b}" for a, b in zip(inbound.path, inbound.path[1:])]  # the path's order
    for (name, cells), (box_name, q, top, packets) in zip(table_rows, box_stats(inbound)):
        values = re.findall(r">([^<]*)</td>", cells)
        assert html.unescape(name) == box_name
        assert values[3] == duration(q[-1])  # the table's p99 is where the whisker ends (the red tick)
        assert values[0] == f"{packets:,}"


def test_waterfall_legend_names_every_colour():
    rows, _ = lab_capture()
    journeys = build_journeys(event_table(rows))
    svg = waterfall_plot(journeys)
    segments = {f"{a.label} → {b.label}" for j in journeys for a, b in zip(j.hops, j.hops[1:])}
    assert len(segments) > 8  # more than the old legend's 8
    for seg in segments:
        assert html.escape(seg) in svg, seg


def test_no_empty_plots_when_nothing_was_dropped(tmp_path: Path):
    rows, _ = lab_capture()
    kept = [r for r in rows if r["packet_id"] <= 112]  # the three connections, not the dropped requests
    text = _report(tmp_path, kept)
    figures = _figures(text)
    assert "plot-drops" not in figures
    assert "No packet was dropped." in text
    assert all("<svg" in f for f in figures.values())


def test_cpu_per_hop_when_the_capture_has_it(tmp_path: Path):
    rows, _ = lab_capture()
    journey_like = _report(tmp_path, rows)
    assert "first sighting only" in journey_like and "plot-cpu-" not in journey_like
    varied = [{**r, "cpu": i % 2} for i, r in enumerate(rows)]
    per_hop = _report(tmp_path, varied)
    assert 'id="plot-cpu-path-1"' in per_hop


def test_report_data_and_drawing_are_apart():
    """render_report draws from the analysis and the path summary it is given."""
    import inspect

    from tracer import report, report_path, report_plots

    for module in (report, report_path, report_plots):
        source = inspect.getsource(module)
        assert "read_capture" not in source and "open_capture" not in source and "CaptureStream" not in source


def test_is_self_contained_catches_a_cdn():
    assert not is_self_contained('<script src="https://cdn.example/x.js"></script>')
    assert not is_self_contained('<link rel="stylesheet" href="//cdn.example/x.css">')
    assert is_self_contained('<svg xmlns="http://www.w3.org/2000/svg"></svg>')


def test_matplotlib_preloaded_on_a_thread_is_quiet_when_it_fails(monkeypatch, capsys):
    """`report` imports matplotlib on a thread while the capture is read
    (report_plots.preload): it works, and a failure there prints nothing
    (no thread traceback): the drawing raises it again where it is reported."""
    from tracer import report_plots

    report_plots.preload()
    assert "matplotlib.pyplot" in __import__("sys").modules

    def broken():
        raise ImportError("no matplotlib here")

    monkeypatch.setattr(report_plots, "plt", broken)
    assert report_plots.preload() is None
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
