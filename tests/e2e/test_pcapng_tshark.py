"""pcapng fidelity on real traffic (issue 13): the demo's clean traffic
(requests through DNAT, one connection out through MASQUERADE), recorded by
the real tracer on the real kernel, exported and opened in tshark."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.own_client import HOST_IF, record_demo
from tests.e2e.tracing import REPO

TSHARK = shutil.which("tshark")
WARNING = 0x00600000  # _ws.expert.severity of a warning; errors are higher


@pytest.fixture(scope="module")
def demo_capture(lab, tmp_path_factory) -> Path:
    """A capture of our own client's demo traffic only (see own_client)."""
    return record_demo(lab, tmp_path_factory.mktemp("pcapng") / "demo.arrows")


def export(capture: Path, out: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tracer", "export", "--pcapng", str(out), *args, str(capture)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def tshark(path: Path, *args: str) -> list[list[str]]:
    done = subprocess.run([TSHARK, "-r", str(path), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def expert(path: Path, *prefs: str) -> dict[str, int]:
    """{frame: highest expert severity} for every frame with expert info."""
    rows = tshark(path, *prefs, "-T", "fields", "-E", "separator=\t", "-e", "frame.number", "-e", "_ws.expert.severity")
    return {r[0]: max(int(x) for x in r[1].split(",")) for r in rows if len(r) > 1 and r[1]}


def summary(path: Path, *prefs: str) -> str:
    return subprocess.run([TSHARK, "-r", str(path), *prefs, "-q", "-z", "expert"], capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (scripts/setup.sh installs it)")
def test_demo_traffic_opens_in_tshark_without_warnings(demo_capture, tmp_path):
    # One place, both directions: what tcpdump on that interface would show.
    # Wireshark's TCP analysis runs (its default) and finds nothing wrong.
    for at in ("external", "container"):
        out = tmp_path / f"at-{at}.pcapng"
        export(demo_capture, out, "--at", at)
        sev = expert(out)
        assert not {f: s for f, s in sev.items() if s >= WARNING}, summary(out)
        text = summary(out)
        assert "retransmission" not in text and "Duplicate ACK" not in text, text
        rows = tshark(out, "-T", "fields", "-E", "separator=\t", "-e", "tcp.flags.syn", "-e", "tcp.hdr_len",
                      "-e", "tcp.len", "-e", "frame.interface_name", "-e", "frame.packet_flags_direction")
        syns = [r for r in rows if r[0] == "1"]
        # 5 connections in and one out, SYN and SYN-ACK each; Linux's SYNs carry options: Len=0, not 20
        assert len(syns) == 12, rows
        assert all(int(r[1]) > 20 and r[2] == "0" for r in syns), syns
        # names carry the hook; flags the direction (1 inbound at tc ingress, 2 outbound at tc egress)
        for r in rows:
            hook = r[3].split(":")[-1]
            assert hook in ("tc_ingress", "tc_egress"), r
            assert int(r[4], 16) == (1 if hook == "tc_ingress" else 2), r
        names = {r[3] for r in rows}
        if at == "external":
            assert names == {f"{HOST_IF}:tc_ingress", f"{HOST_IF}:tc_egress"}
        else:
            assert names == {"eth0:tc_ingress", "eth0:tc_egress"}

    # Every sighting: each packet appears once per hook, which sequence
    # analysis calls retransmissions; with it off (as the README says) there
    # is no warning either, and the hooks on both sides of NAT are there.
    out = tmp_path / "all.pcapng"
    export(demo_capture, out)
    off = ("-o", "tcp.analyze_sequence_numbers:FALSE")
    sev = expert(out, *off)
    assert not {f: s for f, s in sev.items() if s >= WARNING}, summary(out, *off)
    rows = tshark(out, "-T", "fields", "-E", "separator=\t", "-e", "frame.interface_name", "-e", "frame.packet_id")
    names = {r[0] for r in rows}
    assert {f"{HOST_IF}:nf_prerouting/before", f"{HOST_IF}:nf_prerouting/after", "docker0:nf_postrouting/after",
            f"{HOST_IF}:nf_postrouting/after"} <= names, names
    per_packet: dict[str, int] = {}
    for r in rows:
        per_packet[r[1]] = per_packet.get(r[1], 0) + 1
    assert min(per_packet.values()) >= 6  # every packet crossed the host: one id, many sightings
