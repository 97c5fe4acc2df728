"""pcap-filter expressions without the kernel: libpcap compiles them
(tracer/pcap.py); the vectorised run `show` uses (tracer/cbpf_numpy.py)
answers exactly as libpcap's own interpreter on thousands of generated
packets, whole and cut short; the C translation (tracer/cbpf.py) is
checked in the kernel by tests/e2e/test_pcap_filter.py; expressions that
cannot be taken give one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.unit.filter_cases import EXPRESSIONS, handmade, packets
from tests.unit.test_capture import table_of, write
from tracer.cbpf import check, to_c
from tracer.cbpf_numpy import run
from tracer.cli import cli
from tracer.pcap import FilterError, OfflineFilter, compile_filter, expression_of

PACKETS = packets(3000)


@pytest.fixture(scope="module")
def batch():
    width = max(map(len, PACKETS))
    buf = np.zeros((len(PACKETS), width), np.uint8)
    for i, p in enumerate(PACKETS):
        buf[i, : len(p)] = np.frombuffer(p, np.uint8)
    whole = np.array([len(p) for p in PACKETS])
    cut = np.minimum(whole, np.random.default_rng(7).integers(0, 90, len(PACKETS)))
    return buf, whole, cut


@pytest.mark.parametrize("expression", EXPRESSIONS + handmade(), ids=str)
def test_vectorised_run_answers_as_libpcap(batch, expression):
    buf, whole, cut = batch
    compiled = expression if not isinstance(expression, str) else compile_filter(expression)
    oracle = OfflineFilter(compiled)
    for caplen in (whole, cut):
        want = np.array([oracle(p[:n], len(p)) for p, n in zip(PACKETS, caplen)])
        got = run(compiled, buf, caplen, whole)
        assert (got == want).all(), f"{int((got != want).sum())} differ"
    to_c(compiled)  # every case translates


def test_cases_exercise_every_instruction_kind():
    codes = {c for e in [*map(compile_filter, EXPRESSIONS), *handmade()] for c, *_ in e.insns}
    classes = {c & 7 for c in codes}
    assert classes == {0, 1, 2, 3, 4, 5, 6, 7}  # ld ldx st stx alu jmp ret misc
    modes = {c & 0xE0 for c in codes if c & 7 in (0, 1)}
    assert {0x00, 0x20, 0x40, 0x60, 0x80, 0xA0} <= modes  # imm abs ind mem len msh
    alu = {c & 0xF0 for c in codes if c & 7 == 4}
    assert {0x00, 0x10, 0x20, 0x30, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0} <= alu


def test_translation_is_straight_line_with_forward_gotos():
    text = to_c(compile_filter("tcp port 8000 and not host 198.18.0.9"))
    assert "pcap_filter_run(const u8 *P, u32 caplen, u32 wirelen)" in text
    lines = text.splitlines()
    for line in lines:
        for target in [int(w[1:].rstrip(";")) for w in line.split() if w.startswith("L") and w.rstrip(";")[1:].isdigit()]:
            label_line = next(i for i, x in enumerate(lines) if x.startswith(f"L{target}:"))
            assert label_line > lines.index(line)  # forward only
    assert "while" not in text and "for (" not in text


@pytest.mark.parametrize("expression,words", [
    ("tcp prot 80", "syntax error"),
    ("ether host 01:02:03:04:05:06", "ethernet"),
    ("vlan", "VLAN"),
    ("inbound", "metadata"),
    ("ifindex 3", "metadata"),
    ("ip broadcast", "netmask"),
    ("arp", "rejects all packets"),
    ("port 70000", "port"),
    ("host nothost", "nothost"),
])
def test_expressions_that_cannot_be_taken(expression, words, tmp_path):
    with pytest.raises(FilterError, match=words):
        check(compile_filter(expression))
    for command in (["trace"], ["latency"], ["record", "-w", str(tmp_path / "x.arrows")], ["show", "any.arrows"]):
        result = CliRunner().invoke(cli, [*command, *expression.split()])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("tracer: error:"), (command, result.stderr)
        assert words in lines[0] and "Traceback" not in result.output


def test_expression_words_join_as_tcpdump():
    assert expression_of(["tcp", "port", "80"]) == "tcp port 80"
    assert expression_of(["tcp port 80 and", "not host 1.2.3.4"]) == "tcp port 80 and not host 1.2.3.4"
    assert expression_of([]) is None and expression_of(["  "]) is None


def test_show_takes_len_of_ipv6_rows_as_their_length(tmp_path):
    """`len`/`greater`/`less` on IPv6 rows: the recorded length (payload + 40),
    as on IPv4 rows; the flow label (IPv6 bytes 2-3) plays no part."""
    from tests.unit.test_capture import _ip, context, raw_packets
    from tracer.decode import decode

    raw = raw_packets(4)
    for r in raw:
        r["src_ip"], r["dst_ip"] = _ip("fd00:198:18::2"), _ip("fd00:198:18::1")
        r["length"] = 1200 if r["packet_id"] % 2 == 0 else 80
        r["ip_id"] = 7  # what the sensors record of the flow label: small, below every length here
    path = tmp_path / "v6.arrows"
    write(path, [decode(raw, context())])

    def show(expression):
        result = CliRunner().invoke(cli, ["show", "--json", str(path), expression])
        assert result.exit_code == 0, result.stderr
        return [int(json.loads(x)["packet_id"], 16) for x in result.stdout.splitlines()]

    assert show("ip6") == [1, 2, 3, 4]
    assert show("len > 1000") == show("greater 1000") == show("ip6 and greater 1199") == [2, 4]
    assert show("less 80") == show("len < 100") == [1, 3]
    assert show("ip6[4:2] + 40 = len") == [1, 2, 3, 4]  # payload length + 40
    assert show("greater 1201") == []


def test_show_applies_the_expression_to_recorded_headers(tmp_path):
    path = tmp_path / "cap.arrows"
    write(path, [table_of(3), table_of(2, first_id=50, client_port=50000, t0=20 * 10**9)])

    def show(*args):
        result = CliRunner().invoke(cli, ["show", "--json", *args])
        assert result.exit_code == 0, result.stderr
        return [int(json.loads(x)["packet_id"], 16) for x in result.stdout.splitlines()]

    everything = show(str(path))
    assert len(everything) == 5
    assert show(str(path), "tcp") == everything
    assert show(str(path), "udp or icmp") == []
    # before DNAT and after it: a packet matches at one hop or another
    assert show(str(path), "tcp dst port 8000") == everything == show(str(path), "dst host 172.17.0.2 and port 8080")
    assert show(str(path), "tcp src port 50001") == [51]
    assert show("tcp", "src", "port", "50001", str(path)) == [51]  # either order
    assert show("-r", str(path), "tcp src port 50001") == [51]  # tcpdump's -r
    assert show(str(path), "not tcp src port 50001") == [i for i in everything if i != 51]
    # combined with the options: both must match
    assert show(str(path), "--port", "50001", "tcp src port 40000") == []
    result = CliRunner().invoke(cli, ["show", "tcp", "port", "80"])
    assert result.exit_code != 0 and "no capture FILES" in result.stderr
