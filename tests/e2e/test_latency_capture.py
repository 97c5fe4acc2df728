"""`tracer latency -w` against the real kernel: interval histograms land in
the capture as kind='histogram' rows that `tracer stats` merges."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

from tests.e2e.tracing import REPO, Tracer, kernel_snapshot, wait_gone
from tracer import traffic
from tracer.capture.reader import read_capture

SEGMENT = "nf_prerouting/before → nf_prerouting/after"


def test_latency_write_records_histograms_that_stats_reads(lab, tmp_path):
    path = tmp_path / "lat.arrows"
    before = kernel_snapshot()
    t = Tracer("--port", str(lab["port"]), "--interval", "0.5", "-w", str(path), command="latency")
    t.wait_ready()
    for _ in range(10):
        traffic.client_http_get(lab)
        time.sleep(0.1)
    time.sleep(1.2)
    intervals = t.stop()
    assert t.returncode == 0, t.stderr
    assert intervals and all("buckets" not in s for i in intervals for s in i["segments"])  # live output unchanged
    assert "histogram rows" in t.stderr

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    capture = read_capture(path)
    assert capture.recovered == []
    kinds = capture.table["kind"].to_pylist()
    assert kinds[-1] == "stats" and "histogram" in kinds and "event" not in kinds
    assert capture.stats["histogram_rows"] == kinds.count("histogram")
    infos = [json.loads(s) for s in capture.histograms["info"].to_pylist()]
    # every live interval is in the capture (plus possibly the part before Ctrl-C)
    assert [i["interval"] for i in infos][: len(intervals)] == [i["interval"] for i in intervals]
    assert capture.metadata["filter"] and capture.metadata["command"].startswith("tracer latency")
    packets = sum(s["packets"] for i in infos for s in i["segments"] if s["segment"] == SEGMENT)
    assert packets > 0
    for info in infos:
        assert info["end_ktime_ns"] > info["start_ktime_ns"]
        for s in info["segments"]:
            assert sum(c for _, c in s["buckets"]) == s["packets"]
    assert any(i["end_to_end"].get("original", {}).get("packets") for i in infos)

    done = subprocess.run([sys.executable, "-m", "tracer", "stats", "--format", "json", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lat = json.loads(done.stdout)["latency"]
    assert lat["intervals"] == len(infos)
    segments = {s["segment"]: s for s in lat["segments"]}
    assert segments[SEGMENT]["packets"] == packets
    assert 0 < segments[SEGMENT]["p50_ns"] <= segments[SEGMENT]["p99_ns"] <= segments[SEGMENT]["max_ns"]
    assert lat["end_to_end"]["original"]["packets"] > 0 and lat["end_to_end"]["reply"]["packets"] > 0

    report = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "tracer", "report", str(path), "-o", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'id="plot-latency-histograms"' in report.read_text()

    progs, links = wait_gone(before)
    assert not progs and not links


def test_latency_write_bad_path_fails_before_kernel_work(tmp_path):
    t = Tracer("--port", "8000", "-w", str(tmp_path / "missing" / "lat.arrows"), command="latency")
    t.finish()
    assert t.returncode != 0
    lines = t.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0], t.stderr
    assert "Ctrl-C to stop" not in t.stderr  # never started tracing
