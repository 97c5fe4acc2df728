"""`tracer report` as a person sees it (issue 13): the report of the demo's
traffic, recorded by the real tracer on the real kernel, opened in headless
Chromium: no console error, no failed load or broken image, every figure
drawn, and a screenshot that is not blank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import chromium_path, inspect_page
from tests.e2e.own_client import record_demo
from tests.e2e.tracing import REPO
from tests.unit.analysis_data import capture_table, lab_capture, write_capture

CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it on Debian)")


def report(capture: Path, out: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "tracer", "report", str(capture), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out.read_text()


def look(page: Path, shot: Path) -> dict:
    seen = inspect_page(page)
    shot.write_bytes(seen.screenshot)
    assert seen.errors == [], seen.errors
    c = seen.checks
    assert c["broken_images"] == [] and c["empty_svgs"] == 0
    assert c["drawn_svgs"] == c["svgs"] > 0  # every SVG has a size on the page
    assert c["width"] <= 1200  # nothing wider than the window: no sideways scrolling
    _not_blank(seen.screenshot)
    return c


def _not_blank(png: bytes) -> None:
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("L")
    assert im.size[1] > 2000
    colours = im.getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 50  # text, lines and fills, not an empty page


@needs_chromium
def test_report_of_real_traffic_renders_without_errors(lab, tmp_path):
    capture = record_demo(lab, tmp_path / "demo.arrows")
    page = tmp_path / "report.html"
    text = report(capture, page)
    c = look(page, tmp_path / "report.png")
    # the path: inbound DNAT and its replies, MASQUERADE out and its replies, each in its own column
    assert {"plot-path", "plot-path-1", "plot-path-2", "plot-end-to-end", "plot-waterfall", "plot-throughput"} <= set(c["figures"])
    for name in ("external → container", "DNAT · requests", "reverse DNAT · replies", "SNAT · requests",
                 "reverse SNAT · replies", "PREROUTING after NAT", "→ 172.17.0."):
        assert name in text, name
    # drops: a line when there were none (no empty plot), a drawn plot when there were
    assert ("No packet was dropped." in text) != ("plot-drops" in c["figures"])
    print(f"\nscreenshot: {tmp_path / 'report.png'} ({c['height']} px)")


@needs_chromium
def test_report_with_drops_renders_without_errors(tmp_path):
    rows, _ = lab_capture()
    capture = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    page = tmp_path / "report.html"
    text = report(capture, page)
    c = look(page, tmp_path / "report.png")
    assert "plot-drops" in c["figures"]
    assert "✕ 2 dropped" in text and "NETFILTER_DROP" in text
