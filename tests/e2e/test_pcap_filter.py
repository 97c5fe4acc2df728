"""pcap-filter expressions in the kernel.

The oracle: libpcap's own interpreter (pcap_offline_filter) on the same
bytes. The C that tracer/cbpf.py makes of libpcap's classic BPF, with the tc
sensor's glue (bpf/pcap_filter.h), is loaded into the kernel as a real
sched_cls program and run on thousands of generated packets with
BPF_PROG_TEST_RUN; every answer must be libpcap's. Then live: an expression
picks connections where they are first recognised and the connection is
followed whole, NAT'd replies included."""

from __future__ import annotations


import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from tests.e2e.tracing import Tracer
from tests.unit.filter_cases import EXPRESSIONS, handmade, ip_length, packets
from tracer import traffic
from tracer.cbpf import DEFAULT_SNAP, to_c
from tracer.kernel.bpf_syscall import ProgTestRun
from tracer.kernel.headers import ensure_bcc_headers
from tracer.kernel.program import BPF_DIR
from tracer.pcap import OfflineFilter, compile_filter

BPF_PROG_TYPE_SCHED_CLS = 3
ETHERNET = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
ETHERNET6 = ETHERNET[:12] + b"\x86\xdd"


def _program(compiled):
    from bcc import BPF

    source = "\n".join([
        "#include <uapi/linux/pkt_cls.h>",
        to_c(compiled),
        (BPF_DIR / "pcap_filter.h").read_text(),
        "int run_filter(struct __sk_buff *ctx) { return pcap_match_tc(ctx); }",
    ])
    # pcap_match_skb (netfilter, drops) is not called here: any offsets do
    flags = ["-DPCAP_FILTER", "-DOFF_SKB_HEAD=0", "-DOFF_SKB_NETWORK_HEADER=0", "-DOFF_SKB_TAIL=0"]
    return BPF(text=source, cflags=flags)


def _expected(oracle: OfflineFilter, packet: bytes) -> bool:
    """What the kernel filter must answer: libpcap's answer on what it
    sees (the first DEFAULT_SNAP bytes, no more than the length its IP
    header gives: IPv4's total length, IPv6's payload length + 40)."""
    if len(packet) < 20:
        return False
    wirelen = ip_length(packet)
    return oracle(packet[: min(len(packet), DEFAULT_SNAP, wirelen)], wirelen)


@pytest.fixture(scope="module")
def generated():
    ensure_bcc_headers()
    cases = packets(1500, seed=9)
    # and lengths that disagree with the bytes: padded frames, truncated ones
    cases += [p + b"\0" * 30 for p in cases[:100]] + [p[: max(20, len(p) // 2)] for p in cases[100:200]]
    return cases


@pytest.mark.parametrize("expression", EXPRESSIONS + handmade(), ids=str)
def test_kernel_translation_answers_as_libpcap(generated, expression):
    compiled = expression if not isinstance(expression, str) else compile_filter(expression)
    oracle = OfflineFilter(compiled)
    bpf = _program(compiled)
    try:
        fd = bpf.load_func("run_filter", BPF_PROG_TYPE_SCHED_CLS).fd
        wrong, accepted = [], 0
        for i, packet in enumerate(generated):
            # (the kernel refuses an IPv6 frame shorter than its header; the filter reads no ethertype)
            run = ProgTestRun(fd, (ETHERNET6 if packet[0] >> 4 == 6 and len(packet) >= 40 else ETHERNET) + packet)
            run.run(1)
            want = _expected(oracle, packet)
            accepted += want
            if bool(run.retval) != want:
                wrong.append((i, want, packet[:60].hex()))
        assert not wrong, f"{len(wrong)} of {len(generated)} differ from libpcap, e.g. {wrong[:3]}"
    finally:
        bpf.cleanup()
    # the cases say something: most expressions accept some packets and reject others
    if expression not in ("ip6", "tcp[100] = 1"):
        assert 0 < accepted < len(generated), accepted


def _trace(lab, *args):
    t = Tracer(*args, "--duration", "60")
    t.wait_ready()
    for _ in range(2):
        traffic.client_http_get(lab)
    traffic.container_http_get(lab)
    import time

    time.sleep(0.6)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    return journeys, t.stderr


def _ports(journey) -> set[int]:
    return {int(a.rsplit(":", 1)[1]) for h in journey["hops"] for a in (h["src"], h["dst"]) if a and ":" in a}


def test_expression_picks_connections_and_follows_them_through_nat(lab):
    port = lab["port"]
    journeys, err = _trace(lab, f"tcp port {port} and not host 198.18.0.9")
    assert f"'tcp port {port} and not host 198.18.0.9'" in err  # said in the start line
    assert len(journeys) >= 2 * 8, err
    assert all(port in _ports(j) for j in journeys)  # nothing of the MASQUERADE connection to :9000
    replies = [j for j in journeys if j["direction"] == "reply"]
    # replies are followed from the container, before reverse DNAT gives them port 8000 back
    assert replies and all(j["hops"][0]["src"].startswith(lab["container_ip"]) for j in replies)

    # an expression that only the first packet matches: the connection is still followed whole
    # (the lab is shared: other connections to the server may be traced too, each whole)
    journeys, err = _trace(lab, "tcp[tcpflags] & tcp-syn != 0 and dst port", str(lab["server_port"]))
    assert journeys and all(lab["server_port"] in _ports(j) for j in journeys)
    by_flow: dict = {}
    for j in journeys:
        by_flow.setdefault(j["flow_id"], []).append(j)
    whole = [f for f in by_flow.values()
             if {j["direction"] for j in f} == {"original", "reply"} and len(f) >= 8
             and sorted(j["tcp_flags"] for j in f if "S" in (j["tcp_flags"] or "")) == ["S", "SA"]]
    assert whole, [(fid, [(j["direction"], j["tcp_flags"]) for j in f]) for fid, f in by_flow.items()]
    # the reply's destination is translated back at PREROUTING: seen before and after MASQUERADE
    reply = next(j for j in whole[0] if j["direction"] == "reply")
    assert reply["hops"][0]["dst"].startswith(lab["host_address"]) and any(
        h["dst"] and h["dst"].startswith(lab["container_ip"]) for h in reply["hops"])

    # with the options: both must match
    journeys, err = _trace(lab, "--port", str(port), "udp")
    assert journeys == []
