"""Latency mode's histogram rows in a capture (`tracer latency -w`): written
with the real writer from known samples, read back by `tracer stats` and
`tracer report`. No root, no kernel."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from tests.unit.analysis_data import METADATA, capture_table, event_table, lab_capture, write_capture
from tracer import latency as L
from tracer.analysis import CaptureAnalysis
from tracer.analysis_result import histogram_rows, latency_summary
from tracer.capture.reader import read_capture
from tracer.capture.recorder import Recorder
from tracer.sinks import Batch, Interval, RunEnd, RunInfo
from tracer.capture.writer import CaptureWriter
from tracer.cli import cli
from tracer import hdr
from tracer.capture.recorder import histogram_info
from tracer.live_output import without_buckets as _without_buckets

OFFSET = 1_750_000_000_000_000_000 - 5_000_000_000  # wall clock minus ktime
KT0 = 5_000_000_000
INTERVAL_NS = 1_000_000_000

# (from, to, lognormal median ns, sigma) per segment; the first is slow.
SEGMENTS = [
    ("tc_egress@veth", "tc_ingress@container", 20_000, 0.3),
    ("nf_prerouting/before", "nf_prerouting/after", 1_500, 0.5),
    ("nf_prerouting/after", "nf_forward", 2_000, 0.4),
    ("tc_egress@container", "tc_ingress@veth", 3_000, 0.6),
]
PER_INTERVAL = [300, 50, 0, 1200]  # packets per interval of the first segment; segment k gets 1/(k+1) of it


def _hop(name: str) -> int:
    return L.HOP_NAMES.index(name)


def _row(a: str, b: str) -> int:
    return _hop(a) * L.N_HOPS + _hop(b)


def histogram(samples: np.ndarray) -> np.ndarray:
    counts = np.zeros(L.HIST_BUCKETS, dtype=np.int64)
    for value in samples:
        counts[L.bucket_of(int(value))] += 1
    return counts


class Recording:
    """Interval snapshots built from known samples, as LatencyMaps would return them."""

    def __init__(self, intervals: int = 4, seed: int = 7, kt0: int = KT0) -> None:
        rng = np.random.default_rng(seed)
        self.samples: dict[str, list[np.ndarray]] = {f"{a} {L.ARROW} {b}": [] for a, b, _, _ in SEGMENTS}
        self.e2e: dict[str, list[np.ndarray]] = {"original": [], "reply": []}
        hist = np.zeros((L.HIST_ROWS, L.HIST_BUCKETS), dtype=np.int64)
        hops = np.zeros((2, L.N_HOPS), dtype=np.int64)
        self.snapshots = [L.Snapshot(hist.copy(), hops.copy(), kt0)]
        for i in range(intervals):
            for k, (a, b, median, sigma) in enumerate(SEGMENTS):
                n = PER_INTERVAL[i % len(PER_INTERVAL)] // (k + 1)
                values = np.maximum(rng.lognormal(np.log(median), sigma, n).astype(np.int64), 0)
                self.samples[f"{a} {L.ARROW} {b}"].append(values)
                hist[_row(a, b)] += histogram(values)
                hops[0][_hop(a)] += n  # every sighting at `a` went on to `b`: none missing there
            for d, median in (("original", 30_000), ("reply", 12_000)):
                values = rng.lognormal(np.log(median), 0.5, 40 + i).astype(np.int64)
                self.e2e[d].append(values)
                hist[L.E2E_ROWS[d]] += histogram(values)
            hops[1][_hop("tc_ingress@external")] += 40 + i
            # 3 packets seen at nf_forward that went nowhere (lost on the path), per interval
            hops[0][_hop("nf_forward")] += 3
            self.snapshots.append(L.Snapshot(hist.copy(), hops.copy(), kt0 + (i + 1) * INTERVAL_NS))

    def infos(self) -> list[dict]:
        start = self.snapshots[0]
        out = []
        for n, (last, now) in enumerate(zip(self.snapshots, self.snapshots[1:]), 1):
            rep = L.report(now - last, now - start, include_buckets=True)
            out.append(histogram_info(n, rep, last.ktime_ns, now.ktime_ns))
        return out

    def merged(self, segment: str) -> np.ndarray:
        return histogram(np.concatenate(self.samples[segment]))


def write_histograms(path: Path, infos: list[dict], events: pa.Table | None = None, stats: dict | None = None) -> Path:
    with CaptureWriter(path, METADATA) as w:
        if events is not None:
            w.add_events(events)
        for info in infos:
            w.add_row("histogram", info["end_ktime_ns"], info)
        w.add_row("stats", KT0 + 10 * INTERVAL_NS,
                  stats or {"events": {"tc": 0, "netfilter": 0, "drop": 0}, "lost": {"tc": 0, "netfilter": 0, "drop": 0},
                            "event_rows": 0, "packets": 0, "flows": 0, "histogram_rows": len(infos)})
    return path


@pytest.fixture(scope="module")
def recording() -> Recording:
    return Recording()


@pytest.fixture
def hist_file(tmp_path: Path, recording: Recording) -> Path:
    return write_histograms(tmp_path / "lat.arrows", recording.infos())


def _stats_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["stats", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --- latency.report / the row payload ------------------------------------------


def test_include_buckets_only_adds_buckets(recording: Recording):
    start, now = recording.snapshots[0], recording.snapshots[2]
    plain = L.report(now - start, now - start)
    full = L.report(now - start, now - start, include_buckets=True)
    assert _without_buckets(full) == plain
    assert json.dumps(_without_buckets(full)) == json.dumps(plain)  # same keys in the same order: live output unchanged
    for seg in full["segments"]:
        assert L.dense_buckets(seg["buckets"]).sum() == seg["packets"]
        assert all(c > 0 for _, c in seg["buckets"])
        assert [b for b, _ in seg["buckets"]] == sorted(b for b, _ in seg["buckets"])
        assert hdr.decode(seg["hdr"]).total == seg["packets"]
    assert set(full["end_to_end"]) == {"original", "reply"} and "buckets" in full["end_to_end"]["original"]


def test_sparse_and_dense_buckets_round_trip():
    counts = histogram(np.array([0, 3, 3, 17, 1000, 1000, 1001, 10**9]))
    assert np.array_equal(L.dense_buckets(L.sparse_buckets(counts)), counts)
    assert L.dense_buckets([]).sum() == 0


def test_rows_read_back_with_their_info(hist_file: Path, recording: Recording):
    capture = read_capture(hist_file)
    rows = capture.histograms
    assert rows.num_rows == 4
    assert capture.events.num_rows == 0
    infos = [json.loads(s) for s in rows["info"].to_pylist()]
    assert [i["interval"] for i in infos] == [1, 2, 3, 4]
    assert infos == recording.infos()
    # stamped with the interval's end
    assert rows["ktime_ns"].to_pylist() == [i["end_ktime_ns"] for i in infos]
    first = infos[0]
    assert first["end_ktime_ns"] - first["start_ktime_ns"] == INTERVAL_NS and first["seconds"] == 1.0
    seg = {s["segment"]: s for s in first["segments"]}["nf_prerouting/before → nf_prerouting/after"]
    assert seg["from"] == "nf_prerouting/before" and seg["to"] == "nf_prerouting/after"
    assert set(seg) == {"segment", "from", "to", "packets", "p50_ns", "p90_ns", "p99_ns", "max_ns", "buckets", "hdr"}
    # the same histogram in HdrHistogram's standard encoding
    assert np.array_equal(hdr.decode(seg["hdr"]).counts, L.dense_buckets(seg["buckets"])[: len(hdr.decode(seg["hdr"]).counts)])
    assert first["missing"] == {"nf_forward": 3}


# --- tracer stats ---------------------------------------------------------------


def test_stats_latency_equals_percentiles_of_the_merged_histogram(hist_file: Path, recording: Recording):
    lat = _stats_json(str(hist_file))["latency"]
    assert lat["intervals"] == 4 and lat["seconds"] == pytest.approx(4.0)
    got = {s["segment"]: s for s in lat["segments"]}
    assert set(got) == set(recording.samples)
    for name, parts in recording.samples.items():
        counts = recording.merged(name)
        s = got[name]
        assert s["packets"] == counts.sum() == sum(len(p) for p in parts)
        expected = L.Stats.of(counts).to_dict()
        for key in ("p50_ns", "p90_ns", "p99_ns", "max_ns"):
            assert s[key] == pytest.approx(expected[key]), (name, key)
        # and close to the exact percentiles of the samples themselves
        exact = np.concatenate(parts)
        for q in (50, 90, 99):
            assert s[f"p{q}_ns"] == pytest.approx(np.percentile(exact, q), rel=0.08), (name, q)
        assert s["max_ns"] >= exact.max()
        assert np.array_equal(hdr.decode(s["hdr"]).counts, counts[: len(hdr.decode(s["hdr"]).counts)])  # merged, encoded
    names = [s["segment"] for s in lat["segments"]]
    assert names[0] == "tc_egress@veth → tc_ingress@container"  # most packets first
    assert [s["packets"] for s in lat["segments"]] == sorted((s["packets"] for s in lat["segments"]), reverse=True)
    for d in ("original", "reply"):
        counts = histogram(np.concatenate(recording.e2e[d]))
        assert lat["end_to_end"][d]["packets"] == counts.sum()
        assert lat["end_to_end"][d]["p99_ns"] == pytest.approx(L.Stats.of(counts).p99, abs=0.1)
    # missing counts since start: the last interval's (4 intervals x 3 packets)
    assert lat["missing"] == {"nf_forward": 12}
    assert lat["start"] == "2025-06-15T15:06:40.000000000Z" and lat["end"] == "2025-06-15T15:06:44.000000000Z"


def test_stats_on_a_histogram_only_capture_table_and_csv(hist_file: Path, recording: Recording):
    result = CliRunner().invoke(cli, ["stats", str(hist_file)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "latency histograms only: 4 intervals" in text
    assert "tc_egress@veth → tc_ingress@container" in text and "end to end request" in text
    assert "never reached the next hop: nf_forward 12" in text
    assert "hop segments" not in text  # no packet events: their empty tables are left out

    result = CliRunner().invoke(cli, ["stats", "--format", "csv", "--section", "latency", str(hist_file)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == ["segment", "from", "to", "packets", "p50_ns", "p90_ns", "p99_ns", "max_ns"]
    by_name = {r["segment"]: r for r in rows}
    slow = by_name["tc_egress@veth → tc_ingress@container"]
    assert int(slow["packets"]) == recording.merged(slow["segment"]).sum()
    assert float(slow["p50_ns"]) == pytest.approx(L.percentile(recording.merged(slow["segment"]), 50), abs=0.06)
    assert by_name["end to end reply"]["from"] == "" and int(by_name["end to end reply"]["packets"]) > 0

    data = _stats_json("--section", "latency", str(hist_file))
    assert list(data) == ["latency"]
    full = _stats_json(str(hist_file))
    assert full["events"] == 0 and full["packets"] == 0 and full["segments"] == [] and full["flow_summary"] == []
    assert full["lost_events"]["tc"] == {"events": 0, "lost": 0}
    for section in ("segments", "flows", "drops", "lost"):
        result = CliRunner().invoke(cli, ["stats", "--section", section, str(hist_file)])
        assert result.exit_code == 0, (section, result.output)
        result = CliRunner().invoke(cli, ["stats", "--format", "csv", "--section", section, str(hist_file)])
        assert result.exit_code == 0, (section, result.output)


def test_capture_without_histograms_has_no_latency_section(tmp_path: Path):
    rows, _ = lab_capture()
    path = write_capture(tmp_path / "events.arrows", capture_table(rows))
    assert _stats_json(str(path))["latency"] is None
    result = CliRunner().invoke(cli, ["stats", str(path)])
    assert result.exit_code == 0 and "latency histograms" not in result.output
    result = CliRunner().invoke(cli, ["stats", "--section", "latency", str(path)])
    assert result.exit_code == 0 and "none in this capture" in result.output
    result = CliRunner().invoke(cli, ["stats", "--format", "csv", "--section", "latency", str(path)])
    assert result.output.strip() == "segment,from,to,packets,p50_ns,p90_ns,p99_ns,max_ns"


def test_events_and_histograms_together(tmp_path: Path, recording: Recording):
    rows, exp = lab_capture()
    events = event_table(rows)
    path = write_histograms(tmp_path / "both.arrows", recording.infos(), events=events)
    data = _stats_json(str(path))
    assert data["events"] == len(rows) and data["packets"] == len(exp.durations)
    assert data["latency"]["intervals"] == 4
    result = CliRunner().invoke(cli, ["stats", str(path)])
    assert "hop segments" in result.output and "latency histograms (µs" in result.output


def test_two_recordings_add_up(tmp_path: Path):
    a, b = Recording(intervals=3, seed=1), Recording(intervals=2, seed=2, kt0=KT0 + 100 * INTERVAL_NS)
    one = write_histograms(tmp_path / "a.arrows", a.infos())
    two = write_histograms(tmp_path / "b.arrows", b.infos())
    lat = _stats_json(str(one), str(two))["latency"]
    assert lat["intervals"] == 5
    assert lat["missing"] == {"nf_forward": 3 * 3 + 2 * 3}  # each recording's last row, summed
    name = "nf_prerouting/before → nf_prerouting/after"
    counts = a.merged(name) + b.merged(name)
    seg = {s["segment"]: s for s in lat["segments"]}[name]
    assert seg["packets"] == counts.sum() and seg["p99_ns"] == pytest.approx(L.percentile(counts, 99))


def test_latency_summary_ignores_bad_info():
    table = pa.table({"time": pa.array([None], pa.timestamp("ns", tz="UTC")), "ktime_ns": pa.array([1], pa.uint64()),
                      "kind": ["histogram"], "info": ["not json"]})
    assert latency_summary(histogram_rows(table)) is None
    assert CaptureAnalysis(table).analyse().latency is None


# --- tracer report ---------------------------------------------------------------


def test_report_of_a_histogram_only_capture_has_the_latency_plot(tmp_path: Path, hist_file: Path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(hist_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    section = re.search(r'<figure class="plot" id="plot-latency-histograms">(.*?)</figure>', text, re.S)
    assert section and "<svg" in section.group(1)
    assert "Latency per segment (in-kernel histograms)" in text
    assert "tc_egress@veth → tc_ingress@container" in section.group(1)
    assert "end to end request" in text
    # the histograms lead when there are no packet events; no empty plot stands for the missing events
    assert "holds no packet sightings" in text
    figures = re.findall(r'<figure class="plot" id="([^"]+)">(.*?)</figure>', text, re.S)
    assert [f for f, _ in figures] == ["plot-latency-histograms"] and "<svg" in figures[0][1]
    assert text.index("plot-latency-histograms") < text.index('id="path"')


def test_report_with_events_and_histograms(tmp_path: Path, recording: Recording):
    rows, _ = lab_capture()
    events = event_table(rows)
    path = write_histograms(tmp_path / "both.arrows", recording.infos(), events=events)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.count("<svg") >= 5
    assert text.index('id="plot-path"') < text.index('id="plot-latency-histograms"')


def test_report_without_histograms_has_no_histogram_plot(tmp_path: Path):
    rows, _ = lab_capture()
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    out = tmp_path / "report.html"
    assert CliRunner().invoke(cli, ["report", str(cap), "-o", str(out)]).exit_code == 0
    assert "plot-latency-histograms" not in out.read_text()


# --- the recorder and the CLI ------------------------------------------------------


def test_recorder_writes_histogram_rows_and_the_stats_row(tmp_path: Path, recording: Recording):
    run = RunInfo(describe="port 8000", interfaces=3, records="histogram", boot_offset_ns=OFFSET,
                  now_ktime=lambda: KT0 + 9 * INTERVAL_NS)
    path = tmp_path / "rec.arrows"
    recorder = Recorder(path)
    recorder.check()
    recorder.on_start(run)
    for n, info in enumerate(recording.infos(), 1):
        rep = {k: v for k, v in info.items() if k not in ("interval", "start_ktime_ns", "end_ktime_ns")}
        recorder.on_batch(Batch(interval=Interval(n, info["start_ktime_ns"], info["end_ktime_ns"], rep)))
    counters = SimpleNamespace(emitted={"tc": 0, "netfilter": 0, "drop": 0}, lost={"tc": 0, "netfilter": 0, "drop": 0})
    stats = recorder.finish(RunEnd(counters))
    assert stats["histogram_rows"] == 4 and stats["event_rows"] == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    capture = read_capture(path)
    assert capture.recovered == []
    assert capture.table["kind"].to_pylist() == ["histogram"] * 4 + ["stats"]
    assert capture.stats["histogram_rows"] == 4
    first = capture.histograms.slice(0, 1)
    assert first["time"].cast(pa.int64())[0].as_py() == recording.infos()[0]["end_ktime_ns"] + OFFSET


def test_latency_bad_write_path_is_one_line_before_any_kernel_work(tmp_path: Path):
    result = CliRunner().invoke(cli, ["latency", "--port", "8000", "-w", str(tmp_path / "nowhere" / "x.arrows")])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in result.output


def test_rotate_options_need_a_write_path():
    result = CliRunner().invoke(cli, ["latency", "--port", "8000", "--rotate-size", "1M"])
    assert result.exit_code != 0 and "need -w" in result.output


def test_docs_polars_example(hist_file: Path, recording: Recording):
    """The polars snippet of docs/capture-format.md, on a known capture."""
    pl = pytest.importorskip("polars")
    rows = pl.read_ipc_stream(hist_file).filter(pl.col("kind") == "histogram")
    counts = np.zeros(L.HIST_BUCKETS, dtype=np.int64)
    for info in rows["info"]:
        for seg in json.loads(info)["segments"]:
            if seg["segment"] == "nf_prerouting/before → nf_prerouting/after":
                L.dense_buckets(seg["buckets"], counts)
    assert np.array_equal(counts, recording.merged("nf_prerouting/before → nf_prerouting/after"))
    doc = (Path(__file__).resolve().parents[2] / "docs" / "capture-format.md").read_text()
    assert "latency.dense_buckets(seg[\"buckets\"], counts)" in doc
    for kind in ("`event`", "`container`", "`stats`", "`histogram`"):
        assert f"### {kind}" in doc
    from tracer.events import META_KEYS

    for key in META_KEYS:
        assert f"| `{key}` |" in doc, key
