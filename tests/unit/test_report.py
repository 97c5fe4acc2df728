"""`tracer report`: one self-contained HTML file with the four plots."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from tests.unit.analysis_data import capture_table, lab_capture, write_capture
from tracer.cli import cli
from tracer.report import is_self_contained


def test_report_is_self_contained_with_four_plots(tmp_path: Path):
    rows, _ = lab_capture()
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(cap), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.count("<svg") >= 4
    for plot in ("plot-latency", "plot-waterfall", "plot-drops", "plot-throughput"):
        section = re.search(rf'<figure class="plot" id="{plot}">(.*?)</figure>', text, re.S)
        assert section and "<svg" in section.group(1), plot
    assert is_self_contained(text)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?https?://", text, re.I)
    assert "<script" not in text
    for word in ("lab-host", "6.18.0-test", "port 8000", "NETFILTER_DROP", "tc_egress@veth → tc_ingress@container"):
        assert word in text


def test_is_self_contained_catches_a_cdn():
    assert not is_self_contained('<script src="https://cdn.example/x.js"></script>')
    assert not is_self_contained('<link rel="stylesheet" href="//cdn.example/x.css">')
    assert is_self_contained('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
