"""One id everywhere: a flow's and a packet's id are printed as the same text
(tracer/ids.py, whole hex) by `show`, `show --json`, `stats` (table, CSV and
JSON), the report and the pcapng comments; captures keep the integer."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from tests.unit.analysis_data import capture_table, lab_capture, write_capture
from tracer.cli import cli
from tracer.ids import format_id, id_texts, parse_id


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output, result.stderr)
    return result.stdout


def _pcapng_comments(data: bytes) -> list[str]:
    """The opt_comment of every enhanced packet block."""
    out, pos = [], 0
    while pos < len(data):
        btype, length = struct.unpack_from("<II", data, pos)
        if btype == 6:
            caplen = struct.unpack_from("<I", data, pos + 20)[0]
            opt = pos + 28 + (caplen + 3) // 4 * 4
            while opt < pos + length - 4:
                code, size = struct.unpack_from("<HH", data, opt)
                if code == 0:
                    break
                if code == 1:
                    out.append(data[opt + 4: opt + 4 + size].decode())
                opt += 4 + (size + 3) // 4 * 4
        pos += length
    return out


def test_one_flow_one_id_in_every_output(tmp_path: Path):
    rows, _ = lab_capture()
    cap = str(write_capture(tmp_path / "cap.arrows", capture_table(rows)))
    flow = max(r["flow_id"] for r in rows)  # a 64-bit test address: the longest text
    flow_text = format_id(flow)
    packets = {r["packet_id"] for r in rows if r["flow_id"] == flow}
    assert flow_text == format(flow, "x") and len(packets) > 1

    journeys = [json.loads(x) for x in run("show", "--json", cap).splitlines()]
    of_flow = [j for j in journeys if j["flow_id"] == flow_text]
    assert {j["packet_id"] for j in of_flow} == {format_id(p) for p in packets}
    assert all(isinstance(j["packet_id"], str) for j in journeys)

    text = run("show", "--no-color", cap)
    headers = [line for line in text.splitlines() if not line.startswith(" ")]
    shown = {line.split()[1].lstrip("#") for line in headers if f"flow {flow_text}" in line}
    assert shown == {j["packet_id"] for j in of_flow}

    # --flow takes the printed text back
    again = [json.loads(x) for x in run("show", "--json", "--flow", flow_text, cap).splitlines()]
    assert again == of_flow

    flows_csv = list(csv.DictReader(io.StringIO(run("stats", "--format", "csv", "--section", "flows", cap))))
    row = next(r for r in flows_csv if r["flow_id"] == flow_text)
    assert row["slowest_packet_id"] in {j["packet_id"] for j in of_flow}
    summary = json.loads(run("stats", "--format", "json", cap))["flow_summary"]
    assert flow_text in {f["flow_id"] for f in summary}
    assert re.search(rf"^\s*{flow_text}\s", run("stats", "--section", "flows", cap), re.M)

    report = tmp_path / "r.html"
    run("report", "-o", str(report), cap)
    html = report.read_text()
    assert f">{flow_text}<" in html
    assert any(f"#{j['packet_id']} " in html for j in of_flow)  # the slowest journeys' headers

    out = tmp_path / "x.pcapng"
    run("export", "--pcapng", str(out), cap)
    comments = [c for c in _pcapng_comments(out.read_bytes()) if f" flow={flow_text}" in c]
    assert {re.search(r"packet=(\S+)", c).group(1) for c in comments} == {j["packet_id"] for j in of_flow}
    assert len(comments) == sum(1 for r in rows if r["packet_id"] in packets)  # tc rows too: a packet has one flow


def test_id_texts_is_format_id():
    values = np.array([0, 1, 15, 16, 0x548DE0, 0x20000000001, (1 << 53) + 1, 1 << 63, (1 << 64) - 1,
                       (1 << 32) - 1, 1 << 32], np.uint64)
    rng = np.random.default_rng(1)
    values = np.concatenate([values, rng.integers(1, 1 << 63, 5000, dtype=np.uint64) >> rng.integers(0, 63, 5000).astype(np.uint64)])
    expect = [format_id(v) for v in values.tolist()]
    assert id_texts(values).to_pylist() == expect
    assert id_texts(values, json=True).to_pylist() == [f'"{t}"' if t != "-" else "null" for t in expect]
    assert id_texts(np.zeros(0, np.uint64)).to_pylist() == []
    assert all(int(t, 16) in parse_id(t) for t in expect if t != "-")


def test_the_digit_table_is_each_value_s_four_hex_digits():
    from tracer import ids

    assert ids._QUADS.tobytes() == b"".join(b"%04x" % i for i in range(1 << 16))
    assert ids._QUADS.dtype == np.uint32 and len(ids._QUADS) == 1 << 16
