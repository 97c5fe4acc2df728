"""IPv6 through the real kernel and the lab (issue 11): the lab's client
netns reaches the host's IPv6 address on the published port, which Docker's
default configuration serves with docker-proxy on [::]:8000 (no IPv6 NAT).
Every sensor sees the packets: tc on the host's lab veth and the netfilter
IPv6 hooks; captures, `show` and pcapng carry the addresses."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.tracing import REPO, Tracer, index_of
from tracer import addresses


def _get6(lab, timeout: float = 10) -> None:
    url = f"http://[{lab['host_address6']}]:{lab['port']}/"
    out = subprocess.run(["ip", "netns", "exec", lab["netns"], "curl", "-s", "-g", "-m", "5", "-o", "/dev/null",
                          "-w", "%{http_code}", url], capture_output=True, text=True, timeout=timeout)
    assert out.stdout == "200", (out.stdout, out.stderr)


@pytest.fixture
def lab6(lab):
    if not lab.get("host_address6"):
        pytest.fail("the lab has no IPv6 addresses after `lab up`")
    return lab


def _v6(journeys, lab):
    """Journeys with the IPv6 client at either end of some hop (TCP/UDP
    endpoints are '[addr]:port', ICMPv6 ones the bare address)."""
    client = lab["client_address6"]

    def mine(end):
        return end is not None and (end == client or end.startswith(f"[{client}]:"))

    return [j for j in journeys if any(mine(h["src"]) or mine(h["dst"]) for h in j["hops"])]


def test_ipv6_request_and_reply_through_the_proxy_port(lab6, tmp_path: Path):
    lab = lab6
    cap = tmp_path / "v6.arrows"
    t = Tracer("--port", str(lab["port"]), "--duration", "30", "-w", str(cap))
    t.wait_ready()
    _get6(lab)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    mine = [j for j in _v6(journeys, lab) if j["protocol"] == "tcp"]
    host, client = f"[{lab['host_address6']}]:{lab['port']}", f"[{lab['client_address6']}]:"

    syn = next(j for j in mine if j["tcp_flags"] == "S")
    assert syn["protocol"] == "tcp" and syn["verdict"] == "delivered"
    i = index_of(syn, "tc_ingress", ifname=lab["host_iface"])
    assert syn["hops"][i]["src"].startswith(client) and syn["hops"][i]["dst"] == host
    i = index_of(syn, "nf_prerouting", "before", start=i)
    i = index_of(syn, "nf_prerouting", "after", start=i)
    assert syn["hops"][i]["dst"] == host, "no IPv6 NAT: the proxy's port is the destination"
    i = index_of(syn, "nf_input", "after", start=i)
    assert i == len(syn["hops"]) - 1, "delivered to the host (docker-proxy) at INPUT"

    synack = next(j for j in mine if j["tcp_flags"] == "SA" and j["hops"][-1]["dst"] == syn["hops"][0]["src"])
    # No IPv6 conntrack here (no IPv6 table uses it): the netfilter sensor
    # gives the 5-tuple a flow id of its own, shared by request and reply.
    assert syn["flow_id"] and syn["flow_id"] == synack["flow_id"], (syn["flow_id"], synack["flow_id"])
    assert (syn["direction"], synack["direction"]) == ("original", "reply")
    i = index_of(synack, "nf_output", "before")
    i = index_of(synack, "nf_postrouting", "after", start=i)
    i = index_of(synack, "tc_egress", ifname=lab["host_iface"], start=i)
    assert synack["hops"][i]["src"] == host and synack["verdict"] == "delivered"
    # One id per packet across tc and netfilter: every packet of this
    # test's connection (its client port; an earlier test's connection from
    # the same client may still be closing when tracing starts) has both
    # kinds of sighting (the fingerprint joined them).
    client_end = syn["hops"][index_of(syn, "tc_ingress", ifname=lab["host_iface"])]["src"]
    this = [j for j in mine if any(client_end in (h["src"], h["dst"]) for h in j["hops"])]
    assert len(this) >= 5, [[h["hook"] for h in j["hops"]] for j in mine]
    both = [j for j in this if {h["hook"][:3] for h in j["hops"]} == {"tc_", "nf_"}]
    # IPv6 has no IP id: the fingerprint uses the flow label, constant per
    # connection, so two pure ACKs with the same seq/ack/length close together
    # (a window update) look alike and one may be left apart (issue 11 note).
    # Packets with their own sequence numbers (SYN, SYN-ACK) always join.
    for flags in ("S", "SA"):
        assert all(j in both for j in this if j["tcp_flags"] == flags), (flags, [[h["hook"] for h in j["hops"]] for j in this])
    assert len(both) >= 0.75 * len(this), [[h["hook"] for h in j["hops"]] for j in this]

    # The capture says the same: show --host with the address spelled another way.
    spelled = lab["client_address6"].replace("::", ":0::")
    shown = subprocess.run([*_tracer(), "show", "--json", "--host", spelled, str(cap)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(mine) and all(client in ln for ln in lines)

    if shutil.which("tshark"):
        pcap = tmp_path / "v6.pcapng"
        subprocess.run([*_tracer(), "export", "--pcapng", str(pcap), str(cap)], check=True, timeout=120, cwd=REPO)
        out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "ipv6.src", "-e", "tcp.dstport",
                              "-Y", f"ipv6.src == {lab['client_address6']}"],
                             capture_output=True, text=True, timeout=120)
        rows = [ln.split("\t") for ln in out.stdout.splitlines()]
        assert rows and all(r == [lab["client_address6"], str(lab["port"])] for r in rows), out.stdout[:500]


def test_host_filter_takes_an_ipv6_address(lab6):
    """--host fd00:198:18::2 follows the IPv6 client only, in the kernel: the
    same client's IPv4 request at the same time is not traced."""
    lab = lab6
    t = Tracer("--host", lab["client_address6"], "--duration", "30")
    t.wait_ready()
    _get6(lab)
    subprocess.run(["ip", "netns", "exec", lab["netns"], "curl", "-s", "-m", "5", "-o", "/dev/null",
                    f"http://{lab['host_address']}:{lab['port']}/"], timeout=10)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    assert journeys and len(_v6(journeys, lab)) == len(journeys)
    assert not any(lab["client_address"] in (h["src"] or "") for j in journeys for h in j["hops"])


def test_ipv6_echo_is_icmp6(lab6):
    lab = lab6
    t = Tracer("--proto", "icmp6", "--host", lab["client_address6"], "--duration", "30")
    t.wait_ready()
    from tracer.lab_base import busybox

    subprocess.run(["ip", "netns", "exec", lab["netns"], busybox(), "ping", "-6", "-c", "2", "-W", "1",
                    lab["host_address6"]], capture_output=True, timeout=20)
    time.sleep(0.5)
    journeys = t.stop()
    echo = [j for j in journeys if j["hops"][0]["src"] == lab["client_address6"]
            and j["hops"][0]["dst"] == lab["host_address6"]]
    assert len(echo) >= 2, journeys
    for j in echo:
        where = [(h["hook"], h["nat_stage"]) for h in j["hops"]]
        assert j["protocol"] == "icmp6" and where[0] == ("tc_ingress", None) and ("nf_input", "after") in where, where


def test_packed_forms():
    assert addresses.host_text("FD00:0198:0018:0:0:0:0:1") == "fd00:198:18::1"
    assert addresses.host_text("[::1]") == "::1"
    assert addresses.text_of(addresses.packed("198.18.0.1")) == "198.18.0.1"


def _tracer() -> list[str]:
    import sys

    return [sys.executable, "-m", "tracer"]


def _curl6(lab, *extra: str) -> int:
    """One request from the client netns to the host's IPv6 address on the
    published port; returns curl's local port (this connection's client end)."""
    url = f"http://[{lab['host_address6']}]:{lab['port']}/"
    out = subprocess.run(["ip", "netns", "exec", lab["netns"], "curl", "-s", "-g", "-m", "5", "-o", "/dev/null",
                          "-w", "%{http_code} %{local_port}", *extra, url], capture_output=True, text=True, timeout=10)
    code, port = out.stdout.split()
    assert code != "000", (out.stdout, out.stderr)  # an HTTP answer (the lab's server may refuse a POST: fine)
    return int(port)


def _connection(journeys, lab, client_port: int) -> list[dict]:
    end = f"[{lab['client_address6']}]:{client_port}"
    return [j for j in journeys if any(end in (h["src"], h["dst"]) for h in j["hops"])]


def test_expression_length_of_ipv6_packets(lab6):
    """`less`/`greater`/`len` in an expression are the IPv6 packet's length
    (payload length + 40) in the kernel filter, not the flow label that sits
    where IPv4 keeps its total length: a SYN (80 bytes) is `less 100` and
    never `greater 1000`; a connection first matched by a 3000-byte POST's
    full-sized segment is followed from that segment on, replies included
    (no IPv6 conntrack here: the tuple's own flow, README)."""
    lab = lab6
    port = lab["port"]
    t = Tracer(f"ip6 and tcp dst port {port} and less 100", "--duration", "30")
    t.wait_ready()
    small = _curl6(lab)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    mine = _connection(journeys, lab, small)
    assert {"S", "SA"} <= {j["tcp_flags"] for j in mine}, [(j["direction"], j["tcp_flags"]) for j in mine]

    t = Tracer(f"ip6 and tcp dst port {port} and greater 1000", "--duration", "30")
    t.wait_ready()
    small = _curl6(lab)
    big = _curl6(lab, "-H", "Expect:", "--data-binary", "x" * 3000)  # the body at once, no 100-continue wait
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    assert _connection(journeys, lab, small) == [], "no packet of a small GET is greater than 1000"
    followed = _connection(journeys, lab, big)
    flags = [j["tcp_flags"] for j in followed]
    assert followed and "S" not in flags and "SA" not in flags, flags  # picked up at the big segment, then followed
    assert any(j["direction"] == "reply" for j in followed), flags
    assert len({j["flow_id"] for j in followed}) == 1 and followed[0]["flow_id"], [j["flow_id"] for j in followed]


def test_untracked_ipv6_flow_id_is_the_same_in_two_tracers(lab6):
    """Without IPv6 conntrack the flow id is made of the 5-tuple: two
    tracers at once give one IPv6 connection the same id, both directions."""
    lab = lab6
    port = lab["port"]
    a = Tracer(f"ip6 and tcp port {port}", "--duration", "30")
    b = Tracer("--host", lab["client_address6"], "--duration", "30")
    a.wait_ready()
    b.wait_ready()
    client_port = _curl6(lab)
    time.sleep(0.5)
    ja, jb = a.stop(), b.stop()
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ids_a = {j["flow_id"] for j in _connection(ja, lab, client_port)}
    ids_b = {j["flow_id"] for j in _connection(jb, lab, client_port)}
    assert len(ids_a) == 1 and ids_a == ids_b and None not in ids_a, (ids_a, ids_b)
    directions = {(j["tcp_flags"], j["direction"]) for j in _connection(ja, lab, client_port)}
    assert {("S", "original"), ("SA", "reply")} <= directions, directions
