"""pcapng export: the writer's blocks by hand, and tshark reading the result."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.unit.analysis_data import CLIENT, CONTAINER, HOST, METADATA, capture_table, event_table, lab_capture, write_capture
from tracer.cli import cli
from tests.unit.event_rows import CONTAINER_NS, event_defaults
from tracer.pcapng import LINKTYPE_RAW, build_headers, export_pcapng

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


@pytest.fixture(scope="module")
def lab():
    return lab_capture()


def _blocks(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        btype, length = struct.unpack_from("<II", data, pos)
        assert length % 4 == 0 and struct.unpack_from("<I", data, pos + length - 4)[0] == length
        out.append((btype, data[pos + 8: pos + length - 4]))
        pos += length
    return out


def test_block_structure(tmp_path: Path, lab):
    rows, _ = lab
    out = tmp_path / "x.pcapng"
    n = export_pcapng(capture_table(rows), out, METADATA)
    assert n == len(rows)  # one packet per sighting; container/stats rows are not packets
    blocks = _blocks(out.read_bytes())
    assert blocks[0][0] == 0x0A0D0D0A and struct.unpack_from("<I", blocks[0][1])[0] == 0x1A2B3C4D
    idbs = [b for t, b in blocks if t == 1]
    epbs = [b for t, b in blocks if t == 6]
    assert len(epbs) == len(rows)
    # one per place: interface, netns, hook and NAT stage (distinct in the lab's paths) + drop
    places = {(r["ifname"], r["netns"], r["hook"], r["nat_stage"]) for r in rows}
    assert len(idbs) == len(places) == 18
    assert all(struct.unpack_from("<H", b)[0] == LINKTYPE_RAW for b in idbs)
    stamps = [struct.unpack_from("<II", b, 4) for b in epbs]
    ns = [(hi << 32) | lo for hi, lo in stamps]
    assert ns == sorted(ns)  # time order


def test_ipv4_header_checksum_and_fields(lab):
    rows, _ = lab
    t = event_table(rows[:1])
    raw, caplen, tot_len = build_headers(t)
    hdr = raw[0, :20].tobytes()
    words = struct.unpack("!10H", hdr)
    s = sum(words)
    s = (s & 0xFFFF) + (s >> 16)
    assert s == 0xFFFF  # a correct checksum makes the ones' complement sum all ones
    assert hdr[9] == 6 and hdr[8] == rows[0]["ttl"]
    assert struct.unpack("!H", hdr[2:4])[0] == rows[0]["length"] == tot_len[0]
    assert caplen[0] == 40  # tcp_doff 0: not recorded (an older capture), so no options
    tcp = raw[0, 20:40].tobytes()
    sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", tcp[:14])
    assert (sport, dport, seq, ack, off >> 4, flags) == (40000, 8000, rows[0]["tcp_seq"], rows[0]["tcp_ack"], 5, 0x02)


def _tshark(path: Path, *fields: str) -> list[list[str]]:
    cmd = [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=\t", "-o", "ip.check_checksum:TRUE"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines()]


@needs_tshark
def test_tshark_reads_the_export(tmp_path: Path, lab):
    rows, _ = lab
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    out = tmp_path / "out.pcapng"
    result = CliRunner().invoke(cli, ["export", "--pcapng", str(out), str(cap)])
    assert result.exit_code == 0, result.output
    lines = _tshark(out, "frame.comment", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "ip.checksum.status",
                    "frame.len", "frame.cap_len", "frame.interface_name", "frame.packet_flags_direction",
                    "frame.packet_id", "frame.interface_description")
    assert len(lines) == len(rows)
    first = lines[0]
    assert first[0] == "hook=tc_ingress if=veth-lab-h container=- packet=%x flow=%x" % (101, rows[2]["flow_id"])
    assert first[1:5] == [CLIENT, "40000", HOST, "8000"]
    assert all(line[5] == "1" for line in lines)  # IPv4 checksum good everywhere
    assert (first[6], first[7]) == ("60", "40")  # original length = IPv4 total length; headers captured
    # the DNAT is visible: after PREROUTING/after the destination is the container
    dnat = next(line for line in lines if line[0].startswith("hook=nf_prerouting/after") and "packet=65 " in line[0])
    assert dnat[3:5] == [CONTAINER, "8080"]
    inside = next(line for line in lines if line[0].startswith("hook=tc_ingress if=eth0"))
    assert "container=web" in inside[0] and inside[8] == "eth0:tc_ingress"
    assert inside[11] == f"tc_ingress on eth0 (container), netns {CONTAINER_NS}, container web"
    # the hook and NAT stage name the interface; the direction is in epb_flags (1 in, 2 out, 0 unknown)
    expected_dir = {"tc_ingress": 1, "nf_prerouting": 1, "tc_egress": 2, "nf_postrouting": 2, "nf_forward": 0, "drop": 0}
    for line in lines:
        hook = line[0].split()[0].removeprefix("hook=")
        assert line[8].endswith(":" + hook) or line[8] == hook == "drop", line
        assert int(line[9], 16) == expected_dir[hook.split("/")[0]], line
        # epb_packetid: tracer's packet id (a number; the comment has it as tracer prints ids, hex)
        assert int(line[10]) == int(line[0].split(" packet=")[1].split()[0], 16)
    drops = [line for line in lines if line[0].startswith("hook=drop")]
    assert len(drops) == 3 and all("reason=" in line[0] for line in drops)
    # packets get their flow from the netfilter rows even where tc could not see it
    assert all(" flow=-" not in line[0] for line in lines if "packet=65 " in line[0])


@needs_tshark
def test_tshark_filters_on_comments(tmp_path: Path, lab):
    rows, _ = lab
    out = tmp_path / "out.pcapng"
    export_pcapng(event_table(rows), out)
    proc = subprocess.run([TSHARK, "-r", str(out), "-Y", 'frame.comment contains "hook=tc_egress if=veth3f2a1b"'],
                          capture_output=True, text=True, timeout=60)
    expected = sum(1 for r in rows if r["hook"] == "tc_egress" and r["ifname"] == "veth3f2a1b")
    assert len(proc.stdout.splitlines()) == expected > 0


def test_empty_capture_still_valid(tmp_path: Path):
    out = tmp_path / "e.pcapng"
    assert export_pcapng(event_table([]), out) == 0
    assert [t for t, _ in _blocks(out.read_bytes())] == [0x0A0D0D0A]


@needs_tshark
def test_tcp_header_length_from_the_data_offset(tmp_path: Path):
    """A SYN with 20 bytes of options (Linux's) is Len=0, a data segment with
    timestamps (doff 8) carries tot_len - 52 bytes; a capture without
    tcp_doff (written before it was recorded) keeps the 20-byte header."""
    base = dict(src_ip=CLIENT, dst_ip=HOST, src_port=40000, dst_port=8000, hook="tc_ingress", ifname="veth-lab-h",
                if_role="external", packet_id=1)
    rows = [
        event_defaults(**base, ktime_ns=1, tcp_flags=0x02, length=60, tcp_doff=10, tcp_seq=1000, tcp_ack=0),
        event_defaults(**base, ktime_ns=2, tcp_flags=0x18, length=152, tcp_doff=8, tcp_seq=1001, tcp_ack=5),
        event_defaults(**base, ktime_ns=3, tcp_flags=0x10, length=52, tcp_doff=None, tcp_seq=1101, tcp_ack=5),
    ]
    out = tmp_path / "o.pcapng"
    export_pcapng(event_table(rows), out)
    lines = _tshark(out, "tcp.hdr_len", "tcp.len", "frame.cap_len", "frame.len", "tcp.option_kind")
    assert [line[:4] for line in lines] == [["40", "0", "60", "60"], ["32", "100", "52", "152"], ["20", "12", "40", "52"]]
    assert set(lines[0][4].split(",")) == {"0"}  # options not recorded: End of Option List + padding


def test_at_selects_places(tmp_path: Path, lab):
    from tracer.errors import TracerError
    from tracer.pcapng import select_places

    rows, _ = lab
    table = event_table(rows)
    ext = select_places(table, ["external"])  # a role: its tc hooks, both directions
    assert set(zip(ext["hook"].to_pylist(), ext["ifname"].to_pylist())) == {("tc_ingress", "veth-lab-h"), ("tc_egress", "veth-lab-h")}
    assert select_places(table, ["veth-lab-h"]).num_rows == ext.num_rows  # the interface's name: the same rows
    nat = select_places(table, ["nf_prerouting/after", "tc_egress@veth"])
    assert set(zip(nat["hook"].to_pylist(), nat["nat_stage"].to_pylist())) == {("nf_prerouting", "after"), ("tc_egress", None)}
    assert nat.num_rows == sum(1 for r in rows if (r["hook"], r["nat_stage"]) == ("nf_prerouting", "after")
                               or (r["hook"], r["ifname"]) == ("tc_egress", "veth3f2a1b"))
    with pytest.raises(TracerError, match="--at nowhere: no sighting there; places in this capture: .*tc_egress@veth"):
        select_places(table, ["nowhere"])


def test_export_at_a_place_a_lean_capture_has_no_tc_hook_at(tmp_path: Path, lab):
    """--hooks lean attaches no tc to docker0: netfilter rows still name it
    (their interface), but --at docker0 matches tc hooks only, so it is no
    place to offer; the error says the capture is lean."""
    from tracer.sensors.hook_profile import left_out

    rows, _ = lab
    lean = [r for r in rows if not left_out("lean", r["hook"], r["nat_stage"], r["if_role"])]
    assert any(r["ifname"] == "docker0" for r in lean), "netfilter rows name docker0"
    cap = write_capture(tmp_path / "lean.arrows", capture_table(lean), {**METADATA, "hooks": "lean"})
    result = CliRunner().invoke(cli, ["export", "--pcapng", str(tmp_path / "x.pcapng"), "--at", "docker0", str(cap)])
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]
    assert "--at docker0: no sighting there (recorded with --hooks lean, which leaves it out)" in line, line
    places = line.split("places in this capture: ")[1].split(", ")
    assert "docker0" not in places and "bridge" not in places and "tc_egress@veth" in places, places

    def last_line(*at, cap=cap):
        result = CliRunner().invoke(cli, ["export", "--pcapng", str(tmp_path / "x.pcapng"), *at, str(cap)])
        assert result.exit_code != 0, result.output
        return result.output.strip().splitlines()[-1]

    # The note only for a place the profile leaves out; a typo is only a typo (review S13A #5).
    for left in ("nf_forward", "bridge", "tc_egress@bridge", "nf_postrouting/before"):
        assert f"--at {left}: no sighting there (recorded with --hooks lean, which leaves it out);" in last_line("--at", left)
    assert "--at nowhere: no sighting there; places" in last_line("--at", "nowhere")
    # With --iface the capture kept PREROUTING before NAT: the base profile is named, and a
    # kept hop is not said to be left out.
    kept = write_capture(tmp_path / "kept.arrows", capture_table([r for r in lean if r["nat_stage"] != "before"]),
                         {**METADATA, "hooks": "lean", "hooks_kept": "nf_prerouting/before"})
    assert "--at nf_forward: no sighting there (recorded with --hooks lean, which" in last_line("--at", "nf_forward", cap=kept)
    assert "--at nf_prerouting/before: no sighting there; places" in last_line("--at", "nf_prerouting/before", cap=kept)


def test_export_at_cli(tmp_path: Path, lab):
    rows, _ = lab
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    out = tmp_path / "c.pcapng"
    result = CliRunner().invoke(cli, ["export", "--pcapng", str(out), "--at", "container", str(cap)])
    assert result.exit_code == 0, result.output
    epbs = [b for t, b in _blocks(out.read_bytes()) if t == 6]
    assert len(epbs) == sum(1 for r in rows if r["ifname"] == "eth0")
    bad = CliRunner().invoke(cli, ["export", "--pcapng", str(out), "--at", "nowhere", str(cap)])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert bad.output.strip().splitlines() == [bad.output.strip()]  # one line
    assert not out.exists()  # and no half-written file
