"""tracer.analysis and `tracer stats` on synthetic captures with known gaps."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from tests.unit.analysis_data import METADATA, STATS, capture_table, event_table, lab_capture, scaled_events, write_capture
from tracer.analysis import CaptureAnalysis, analyse
from tracer.cli import cli


@pytest.fixture(scope="module")
def lab():
    return lab_capture()


@pytest.fixture
def capture_file(tmp_path: Path, lab) -> Path:
    rows, _ = lab
    return write_capture(tmp_path / "cap.arrows", capture_table(rows))


def test_segment_percentiles_match_numpy(lab):
    rows, exp = lab
    a = analyse(capture_table(rows), METADATA, STATS)
    got = {(s.direction, s.segment): s for s in a.segments}
    assert set(got) == set(exp.segments)
    for key, gaps in exp.segments.items():
        s = got[key]
        assert s.count == len(gaps), key
        for q, value in ((50, s.p50_ns), (90, s.p90_ns), (99, s.p99_ns)):
            assert value == pytest.approx(np.percentile(gaps, q)), (key, q)
        assert s.max_ns == max(gaps)


def test_slow_segment_is_the_veth_to_container_hop(lab):
    rows, exp = lab
    a = analyse(capture_table(rows))
    slow = max(a.segments, key=lambda s: s.max_ns)
    assert (slow.direction, slow.segment) == ("original", "tc_egress@veth → tc_ingress@container")
    assert slow.max_ns == 5_000_000
    # request segments come first, in path order; replies after
    names = [s.segment for s in a.segments if s.direction == "original"]
    assert names[0] == "tc_ingress@external → nf_prerouting/before"
    assert names.index("nf_prerouting/after → nf_forward") < names.index("tc_egress@bridge → tc_egress@veth")
    directions = [s.direction for s in a.segments]
    assert directions == sorted(directions, key=["original", "reply", "-"].index)


def test_totals_verdicts_and_drops(lab):
    rows, exp = lab
    a = analyse(capture_table(rows), METADATA, STATS)
    assert a.events == len(rows)  # the container and stats rows are not events
    assert a.packets == len(exp.durations)
    assert a.verdicts == {"delivered": 12, "dropped": 3, "unknown": 0}
    assert {(d.reason, d.last_seen): d.packets for d in a.drops} == dict(exp.drops)
    assert a.drops[0].reason == "NETFILTER_DROP"  # most packets first


def test_flows(lab):
    rows, exp = lab
    a = analyse(capture_table(rows), METADATA, STATS)
    assert a.flows_total == len(exp.flow_packets)
    flow, slowest = exp.slowest_flow()
    first = a.flows[0]
    assert (first.flow_id, first.slowest_ns) == (flow, slowest)
    assert first.container == "web" and first.protocol == "tcp"
    assert (first.client, first.service) == ("198.18.0.2:40002", "198.18.0.1:8000")
    for f in a.flows:
        assert f.packets == exp.flow_packets[f.flow_id]
        assert f.bytes == exp.flow_bytes[f.flow_id]
    web = [f for f in a.flows if f.container == "web"]
    assert all((f.requests, f.replies, f.delivered) == (2, 2, 4) for f in web)
    dropped = next(f for f in a.flows if f.dropped)
    assert (dropped.dropped, dropped.requests, dropped.replies) == (2, 2, 0)
    assert first.first_time.startswith("2025-06-15T15:06:40.009")


def test_lost_events_from_stats_then_metadata(lab):
    rows, _ = lab
    a = analyse(capture_table(rows), METADATA, STATS)
    assert a.lost["tc"] == {"events": 100, "lost": 7}
    assert analyse(capture_table(rows, stats=None), METADATA, None).lost is None
    meta = {**METADATA, "lost": json.dumps({"tc": 3})}
    assert analyse(event_table(rows), meta, None).lost == {"tc": {"events": 0, "lost": 3}}


def test_duplicate_drop_rows_and_unidentified_rows_are_ignored(lab):
    rows, _ = lab
    drop = next(r for r in rows if r["hook"] == "drop")
    extra = [{**drop, "ktime_ns": drop["ktime_ns"] + 10}, {**rows[0], "packet_id": 0}]
    a = analyse(event_table(rows + extra))
    assert a.verdicts["dropped"] == 3 and a.events == len(rows)


def test_empty_table():
    a = analyse(event_table([]))
    assert (a.events, a.packets, a.segments, a.flows, a.drops) == (0, 0, [], [], [])
    assert CaptureAnalysis(event_table([])).slowest_journeys(5) == []


def test_slowest_journeys(lab):
    rows, exp = lab
    journeys = CaptureAnalysis(event_table(rows)).slowest_journeys(3)
    assert journeys[0].last_ktime - journeys[0].first_ktime == max(exp.durations.values())
    assert [j.last_ktime - j.first_ktime for j in journeys] == sorted(exp.durations.values(), reverse=True)[:3]


def test_stats_cli_formats(capture_file: Path, lab):
    rows, exp = lab
    runner = CliRunner()
    text = runner.invoke(cli, ["stats", str(capture_file)])
    assert text.exit_code == 0, text.output
    assert "tc_egress@veth → tc_ingress@container" in text.output
    assert "NETFILTER_DROP" in text.output and "lost events" in text.output

    js = runner.invoke(cli, ["stats", "--format", "json", str(capture_file)])
    data = json.loads(js.output)
    assert data["packets"] == len(exp.durations) and data["lost_events"]["tc"]["lost"] == 7
    assert {d["reason"] for d in data["drops"]} == {"NETFILTER_DROP", "TCP_CSUM"}

    out = runner.invoke(cli, ["stats", "--format", "csv", str(capture_file)])
    table = list(csv.DictReader(io.StringIO(out.output)))
    assert len(table) == len(exp.segments)
    assert set(table[0]) == {"direction", "segment", "count", "p50_ns", "p90_ns", "p99_ns", "max_ns"}
    flows = list(csv.DictReader(io.StringIO(runner.invoke(cli, ["stats", "--format", "csv", "--section", "flows", str(capture_file)]).output)))
    assert int(flows[0]["slowest_ns"]) == exp.slowest_flow()[1]


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.arrows"
    empty.write_bytes(b"")
    text = tmp_path / "notes.arrows"
    text.write_text("this is not arrow\n")
    return {"missing": tmp_path / "nope.arrows", "empty": empty, "not arrow": text}


@pytest.mark.parametrize("command", [["stats"], ["export", "--pcapng", "{tmp}/out.pcapng"], ["report", "-o", "{tmp}/r.html"]])
def test_bad_input_is_one_line(tmp_path: Path, command: list[str]):
    import subprocess
    import sys

    for what, path in _bad_inputs(tmp_path).items():
        args = [a.format(tmp=tmp_path) for a in command] + [str(path)]
        proc = subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True)
        assert proc.returncode != 0, (what, proc)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, (what, proc.stderr)
        assert str(path) in proc.stderr


def test_stats_on_a_million_events_is_fast(tmp_path: Path, lab):
    import time

    rows, _ = lab
    big = scaled_events(event_table(rows), 1_000_000)
    started = time.perf_counter()
    a = analyse(big)
    elapsed = time.perf_counter() - started
    assert a.events == big.num_rows
    assert elapsed < 10, f"analysis of {big.num_rows:,} rows took {elapsed:.1f}s"


def test_verdicts_agree_with_journeys_for_a_drop_after_delivery():
    # A packet freed by the receiving socket after arriving (QUEUE_PURGE) is
    # delivered in `trace`/`show`; `stats` must count it the same way.
    from tests.unit.test_journeys import events, inbound_request
    from tracer.analysis import analyse
    from tracer.journeys import build_journeys

    rows = inbound_request(pid=6)
    rows.append({"packet_id": 6, "ktime_ns": rows[-1]["ktime_ns"] + 50_000, "hook": "drop",
                 "drop_reason": "QUEUE_PURGE", "ifname": "eth0"})
    table = events(rows)
    (journey,) = build_journeys(table)
    assert journey.verdict == "delivered"
    assert analyse(table).verdicts == {"delivered": 1, "dropped": 0, "unknown": 0}


def test_rows_without_a_clock_are_left_out_of_the_time_span(lab, tmp_path):
    """A row with neither time nor ktime_ns (a damaged capture) has no
    moment: the capture's first and last seen, its duration and rate, a
    flow's first and last seen and a packet's duration are those of the
    rows that have one. Before, such a row counted as 1970-01-01 (time 0)."""
    rows, _ = lab
    gone = {0, len(rows) // 2, len(rows) - 1}  # the first and last rows: the span's ends
    damaged = [{**r, "time": None, "ktime_ns": None} if i in gone else r for i, r in enumerate(rows)]
    kept = [r for i, r in enumerate(rows) if i not in gone]
    got, want = CaptureAnalysis(event_table(damaged)), CaptureAnalysis(event_table(kept))
    a, b = got.analyse(), want.analyse()
    assert a.start.startswith("2025-06-15") and (a.start, a.end) == (b.start, b.end)
    assert a.duration_s == b.duration_s < 1
    assert a.packets == b.packets and a.events == b.events + len(gone)
    flows = {f.flow_id: (f.first_time, f.last_time, f.slowest_ns) for f in b.flows}
    assert {f.flow_id: (f.first_time, f.last_time, f.slowest_ns) for f in a.flows} == flows
    rate, expected = got.throughput(), want.throughput()
    assert np.array_equal(rate["t"], expected["t"]) and np.array_equal(rate["packets_per_s"], expected["packets_per_s"])
    # and `tracer stats` on such a file
    table = capture_table(rows)  # a container row first
    hit = pa.array(np.isin(np.arange(table.num_rows), [i + 1 for i in gone]))
    for name in ("time", "ktime_ns"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.if_else(hit, pa.scalar(None, table[name].type), table[name]))
    path = write_capture(tmp_path / "damaged.arrows", table)
    out = CliRunner().invoke(cli, ["stats", "--format", "json", str(path)])
    assert out.exit_code == 0, out.output
    assert (json.loads(out.output)["start"], json.loads(out.output)["end"]) == (b.start, b.end)
