"""Rows without a ktime_ns (and without a time), as a damaged or hand-made
capture may hold (tracer/untimed.py): a packet none of whose rows has a
moment reads as having no time (null, '-'), not as 1970-01-01 or dt from
ktime 0; a row without a ktime_ns keeps its written place in its packet
instead of sorting first, and no latency is told to or from it."""

from __future__ import annotations

import csv
import io
import json
import re

from click.testing import CliRunner

from tests.unit.analysis_data import FLOW_BASE, capture_table, event_table, lab_capture, write_capture
from tracer.analysis import CaptureAnalysis
from tracer.cli import cli
from tracer.journeys import build_journeys
from tracer.journey_rows import journeys_of_table


def _packets(rows):
    """Packet ids in order of first row."""
    return list(dict.fromkeys(r["packet_id"] for r in rows))


def _run(*args) -> str:
    out = CliRunner().invoke(cli, [str(a) for a in args])
    assert out.exit_code == 0, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    return out.stdout


def test_a_packet_without_any_moment_has_no_time(tmp_path):
    rows, _ = lab_capture()
    pids = _packets(rows)
    victim = pids[2]  # one packet of flow 0: its other packets keep their times
    gone_flow = FLOW_BASE + 0x100  # every packet of this flow loses its clock
    untimed = {victim} | {r["packet_id"] for r in rows if r["flow_id"] == gone_flow}
    damaged = [{**r, "time": None, "ktime_ns": None} if r["packet_id"] in untimed else r for r in rows]
    kept = [r for r in rows if r["packet_id"] not in untimed]
    path = write_capture(tmp_path / "untimed.arrows", capture_table(damaged))

    # show: the packet says no time ('-', null), after those with one
    shown = [json.loads(line) for line in _run("show", "--json", path).splitlines()]
    by_id = {int(j["packet_id"], 16): j for j in shown}
    v = by_id[victim]
    assert (v["time"], v["ktime_ns"]) == (None, None)
    assert [h["dt_ns"] for h in v["hops"]] == [None] * len(v["hops"])
    assert len(v["hops"]) == sum(r["packet_id"] == victim for r in rows)
    assert v["verdict"] == "delivered"
    order = [int(j["packet_id"], 16) for j in shown]
    assert set(order[-len(untimed):]) == untimed, "journeys without a time come after those with one"
    assert all(j["time"].startswith("2025-06-15") for j in shown if int(j["packet_id"], 16) not in untimed)
    text = _run("show", path)
    head = next(line for line in text.splitlines() if f"#{victim:x} " in line)
    assert head.startswith("- #"), head
    block = text[text.index(head):].splitlines()[1:len(v["hops"]) + 1]
    assert all(line.split()[0] == "-" for line in block), block
    assert "1970" not in text and "µs" not in "".join(block)
    # the Journey objects say the same
    table = event_table(damaged)
    for built in (build_journeys(table), journeys_of_table(table)):
        j = next(j for j in built if j.packet_id == victim)
        assert (j.time_ns, j.first_ktime, j.last_ktime) == (None, None, None)
        assert {h.dt_ns for h in j.hops} == {None}

    # stats: no flow seen in 1970, no packet's duration from ktime 0
    got, want = CaptureAnalysis(table).analyse(), CaptureAnalysis(event_table(kept)).analyse()
    assert (got.start, got.end) == (want.start, want.end)
    assert got.packets == want.packets + len(untimed)
    flows = {f.flow_id: f for f in got.flows}
    assert (flows[FLOW_BASE].first_time, flows[FLOW_BASE].last_time) == \
        next((f.first_time, f.last_time) for f in want.flows if f.flow_id == FLOW_BASE)
    gone = flows[gone_flow]
    assert (gone.first_time, gone.last_time, gone.slowest_ns, gone.slowest_packet_id) == (None, None, None, None)
    assert gone.packets == 4
    stats = json.loads(_run("stats", "--format", "json", path))
    assert (stats["start"], stats["end"]) == (want.start, want.end)
    listed = {f["flow_id"]: f for f in stats["flow_summary"]}
    assert listed[f"{gone_flow:x}"]["first_time"] is None and listed[f"{gone_flow:x}"]["slowest_ns"] is None
    assert [f["flow_id"] for f in stats["flow_summary"]][-1] == f"{gone_flow:x}", "a flow without a duration is not slowest"
    text = _run("stats", path)
    assert "1970" not in text
    line = next(x for x in text.splitlines() if f"{gone_flow:x}" in x)
    assert line.split()[-1] == "-", line
    flows_csv = list(csv.DictReader(io.StringIO(_run("stats", "--format", "csv", "--section", "flows", path))))
    assert next(f for f in flows_csv if f["flow_id"] == f"{gone_flow:x}")["first_time"] == ""
    rate = CaptureAnalysis(table).throughput()
    assert rate["packets_per_s"].sum() == CaptureAnalysis(event_table(kept)).throughput()["packets_per_s"].sum()
    _run("report", "-o", tmp_path / "r.html", path)
    html = (tmp_path / "r.html").read_text()
    assert "1970" not in re.sub(r"<svg.*?</svg>", "", html, flags=re.S)


def test_a_row_without_ktime_keeps_its_place(tmp_path):
    rows, _ = lab_capture()
    pid = _packets(rows)[4]
    at = [i for i, r in enumerate(rows) if r["packet_id"] == pid]
    hole = at[1]  # its second hop: sorted first, it read as the packet's start (dt from ktime 0)
    damaged = [{**r, "ktime_ns": None} if i == hole else r for i, r in enumerate(rows)]
    path = write_capture(tmp_path / "hole.arrows", capture_table(damaged))
    whole = write_capture(tmp_path / "whole.arrows", capture_table(rows))

    def journey(p):
        return next(j for j in map(json.loads, _run("show", "--json", p).splitlines())
                    if int(j["packet_id"], 16) == pid)

    got, want = journey(path), journey(whole)
    assert [h["hook"] + str(h["nat_stage"]) for h in got["hops"]] == [h["hook"] + str(h["nat_stage"]) for h in want["hops"]]
    assert [h["dt_ns"] for h in got["hops"]] == [None if k == 1 else h["dt_ns"] for k, h in enumerate(want["hops"])]
    assert (got["time"], got["ktime_ns"], got["verdict"]) == (want["time"], want["ktime_ns"], want["verdict"])
    text = _run("show", path)
    block = text[text.index(f"#{pid:x} "):].splitlines()
    assert block[2].split()[:2] == ["-", "nf_prerouting/before"], block[:3]
    for built in (build_journeys(event_table(damaged)), journeys_of_table(event_table(damaged))):
        j = next(j for j in built if j.packet_id == pid)
        assert [h.ktime_ns is None for h in j.hops] == [k == 1 for k in range(len(j.hops))]

    # stats: no latency to or from it (before: a segment back to ktime 0, 5 s long)
    a, b = CaptureAnalysis(event_table(damaged)).analyse(), CaptureAnalysis(event_table(rows)).analyse()
    seg_a = {(s.direction, s.segment): s for s in a.segments}
    seg_b = {(s.direction, s.segment): s for s in b.segments}
    assert seg_a.keys() == seg_b.keys()
    touched = {("original", "tc_ingress@external → nf_prerouting/before"),
               ("original", "nf_prerouting/before → nf_prerouting/after")}
    for key, s in seg_b.items():
        assert seg_a[key].count == s.count - (key in touched), key
        assert seg_a[key].max_ns <= s.max_ns, key
    assert [(f.flow_id, f.slowest_ns, f.first_time) for f in a.flows] == [(f.flow_id, f.slowest_ns, f.first_time) for f in b.flows]
    assert a.verdicts == b.verdicts
