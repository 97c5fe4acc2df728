"""Each attach kind really counts packets, and really leaves nothing behind.

Everything happens between two network namespaces of our own joined by a veth
pair (names ``trct-*``, addresses 198.19.255.0/30); the host netns is untouched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass

import pytest

if os.geteuid() != 0:
    pytest.skip("needs root (BPF links, network namespaces)", allow_module_level=True)

from tracer.kernel import bpf_syscall as sc
from tracer.kernel import links, rtnl
from tracer.kernel.netns import in_netns

ADDR_A, ADDR_B = "198.19.255.1", "198.19.255.2"

COUNTER_SRC = r"""
#include <uapi/linux/pkt_cls.h>
BPF_ARRAY(counts, u64, 2);

static __always_inline void bump(int key) {
    u64 *v = counts.lookup(&key);
    if (v) __sync_fetch_and_add(v, 1);
}

int tc_count(struct __sk_buff *skb) { bump(0); return TC_ACT_OK; }

struct nfctx { u64 state; u64 skb; };
int nf_count(struct nfctx *ctx) { bump(1); return 1; /* NF_ACCEPT */ }
"""


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class Pair:
    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    ifindex_a: int


@pytest.fixture
def pair():
    tag = uuid.uuid4().hex[:6]
    p = Pair(f"trct-a-{tag}", f"trct-b-{tag}", f"trct-{tag}a", f"trct-{tag}b", 0)
    try:
        run("ip", "netns", "add", p.ns_a)
        run("ip", "netns", "add", p.ns_b)
        run("ip", "link", "add", p.dev_a, "netns", p.ns_a, "type", "veth", "peer", "name", p.dev_b, "netns", p.ns_b)
        for ns, dev, addr in ((p.ns_a, p.dev_a, ADDR_A), (p.ns_b, p.dev_b, ADDR_B)):
            run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        with in_netns(p.ns_a):
            p.ifindex_a = socket.if_nametoindex(p.dev_a)
        yield p
    finally:
        run("ip", "netns", "del", p.ns_a, check=False)
        run("ip", "netns", "del", p.ns_b, check=False)


@pytest.fixture(scope="module")
def counter():
    from bcc import BPF

    from tracer.kernel.headers import ensure_bcc_headers

    ensure_bcc_headers()
    b = BPF(text=COUNTER_SRC)
    try:
        yield b
    finally:
        b.cleanup()


def ping(p: Pair, count: int = 3) -> None:
    """UDP echo A -> B -> A, sockets made inside each netns (no ping binary needed)."""
    with in_netns(p.ns_b):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with in_netns(p.ns_a):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind((ADDR_B, 0))
        server.settimeout(2)
        client.settimeout(2)
        client.bind((ADDR_A, 0))
        for i in range(count):
            client.sendto(b"trct-%d" % i, server.getsockname())
            data, peer = server.recvfrom(64)
            server.sendto(data, peer)
            assert client.recv(64) == data


def read_count(b, key: int) -> int:
    return b["counts"][b["counts"].Key(key)].value


def reset(b) -> None:
    b["counts"].clear()


def our_links(prog_ids: set[int]) -> tuple[list, list]:
    """Links referencing our programs, per bpf() and per bpftool."""
    mine = [l for l in sc.list_links() if l.prog_id in prog_ids]
    tool = [l for l in json.loads(run("bpftool", "-j", "link", "list").stdout or "[]") if l.get("prog_id") in prog_ids]
    return mine, tool


def wait_gone(prog_ids: set[int], timeout: float = 3.0) -> tuple[list, list]:
    deadline = time.monotonic() + timeout
    while True:  # link release after fd close/exit is asynchronous (RCU)
        mine, tool = our_links(prog_ids)
        if (not mine and not tool) or time.monotonic() > deadline:
            return mine, tool
        time.sleep(0.05)


def tc_filters(p: Pair) -> str:
    return "".join(run("ip", "netns", "exec", p.ns_a, "tc", "filter", "show", "dev", p.dev_a, d).stdout
                   for d in ("ingress", "egress"))


def tc_qdiscs(p: Pair) -> str:
    return run("ip", "netns", "exec", p.ns_a, "tc", "qdisc", "show", "dev", p.dev_a).stdout


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_tcx_counts_and_detaches(pair, counter, direction):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    prog_id = sc.prog_info_by_fd(fn.fd).id
    reset(counter)
    with links.TcxLink(fn.fd, pair.ifindex_a, direction, netns=pair.ns_a) as link:
        info = link.info()
        assert info.type_name == "tcx" and info.prog_id == prog_id
        assert info.ifindex == pair.ifindex_a and info.attach_type == links.TCX_ATTACH[direction]
        mine, tool = our_links({prog_id})
        assert len(mine) == 1 and len(tool) == 1, "bpf() and bpftool should both list the attached link"
        ping(pair)
        assert read_count(counter, 0) >= 3
    assert link.closed
    link.close()  # idempotent
    assert wait_gone({prog_id}) == ([], [])
    assert "bpf" not in tc_filters(pair)


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_clsact_counts_and_detaches(pair, counter, direction):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    reset(counter)
    assert "clsact" not in tc_qdiscs(pair)
    with links.attach_tc(fn.fd, pair.ifindex_a, direction, netns=pair.ns_a, mode="clsact") as filt:
        assert isinstance(filt, links.ClsactFilter) and filt.created_qdisc
        shown = tc_filters(pair)
        assert filt.name in shown and "direct-action" in shown
        ping(pair)
        assert read_count(counter, 0) >= 3
    filt.close()
    assert tc_filters(pair).strip() == ""
    assert "clsact" not in tc_qdiscs(pair), "the clsact qdisc we created was left behind"


@pytest.mark.parametrize("first", ["ingress", "egress"])
def test_clsact_qdisc_shared_by_both_directions_is_removed(pair, counter, first):
    # A tracer attaches ingress and egress on each interface: the qdisc the
    # first filter added must go when the last of the two closes.
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    ingress = links.ClsactFilter(fn.fd, pair.ifindex_a, "ingress", netns=pair.ns_a)
    egress = links.ClsactFilter(fn.fd, pair.ifindex_a, "egress", netns=pair.ns_a)
    order = [ingress, egress] if first == "ingress" else [egress, ingress]
    order[0].close()
    assert "clsact" in tc_qdiscs(pair), "still used by the other direction"
    order[1].close()
    assert "clsact" not in tc_qdiscs(pair), "the clsact qdisc we created was left behind"


def test_clsact_keeps_foreign_qdisc_and_filters(pair, counter):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    run("ip", "netns", "exec", pair.ns_a, "tc", "qdisc", "add", "dev", pair.dev_a, "clsact")
    with links.ClsactFilter(fn.fd, pair.ifindex_a, "ingress", netns=pair.ns_a) as filt:
        assert not filt.created_qdisc
    assert "clsact" in tc_qdiscs(pair)


def test_netfilter_counts_and_detaches(pair, counter):
    fn = counter.load_func("nf_count", sc.BPF_PROG_TYPE_NETFILTER, attach_type=sc.BPF_NETFILTER)
    prog_id = sc.prog_info_by_fd(fn.fd).id
    reset(counter)
    with links.NetfilterLink(fn.fd, "output", -7, netns=pair.ns_a) as link:
        info = link.info()
        assert (info.type_name, info.pf, info.hooknum, info.priority) == ("netfilter", 2, 3, -7)
        assert [len(x) for x in our_links({prog_id})] == [1, 1]
        ping(pair)
        assert read_count(counter, 1) >= 3
    assert wait_gone({prog_id}) == ([], [])


def test_netfilter_priority_clash_is_explained(pair, counter):
    fn = counter.load_func("nf_count", sc.BPF_PROG_TYPE_NETFILTER, attach_type=sc.BPF_NETFILTER)
    with links.NetfilterLink(fn.fd, "input", 13, netns=pair.ns_a):
        with pytest.raises(links.TracerError, match="priority 13 on input is already taken"):
            links.NetfilterLink(fn.fd, "input", 13, netns=pair.ns_a)


def test_bad_interface_and_netns(counter):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    with pytest.raises(links.TracerError, match="no such interface"):
        links.TcxLink(fn.fd, 999_999, "ingress")
    with pytest.raises(links.TracerError, match="no such network namespace"):
        links.TcxLink(fn.fd, 1, "ingress", netns="trct-does-not-exist")


def test_tcx_available_here():
    assert links.tcx_available() is True


CHILD = textwrap.dedent("""
    import json, os, sys, time
    from tracer.kernel import bpf_syscall as sc, links
    mode, ns, ifindex = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tc = sc.load_trivial_prog(sc.BPF_PROG_TYPE_SCHED_CLS, 0)
    held = []
    if mode == "links":
        nf = sc.load_trivial_prog(sc.BPF_PROG_TYPE_NETFILTER, 1, expected_attach_type=sc.BPF_NETFILTER)
        held += [links.TcxLink(tc, ifindex, "ingress", ns), links.TcxLink(tc, ifindex, "egress", ns),
                 links.NetfilterLink(nf, "prerouting", -123, ns)]
        ids = [sc.prog_info_by_fd(tc).id, sc.prog_info_by_fd(nf).id]
    else:
        held.append(links.ClsactFilter(tc, ifindex, "ingress", ns))
        ids = [sc.prog_info_by_fd(tc).id]
    print(json.dumps(ids)); print("READY", flush=True)
    time.sleep(60)
""")


def _spawn_and_kill(mode: str, p: Pair) -> set[int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, p.ns_a, str(p.ifindex_a)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        ids = set(json.loads(proc.stdout.readline() or "[]"))
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        if mode == "links":
            assert [len(x) for x in our_links(ids)] == [3, 3]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ids


def test_sigkill_leaves_no_links(pair):
    ids = _spawn_and_kill("links", pair)
    assert wait_gone(ids) == ([], [])


def test_sigkill_clsact_leftover_is_swept(pair):
    ids = _spawn_and_kill("clsact", pair)
    assert "tracer_" in tc_filters(pair), "expected the killed run's filter to survive it"
    with in_netns(pair.ns_a):
        assert rtnl.clsact_present(), "the sweep looks only where a clsact is"
    assert links.sweep_clsact_leftovers(pair.ns_a) == 1
    assert tc_filters(pair).strip() == ""
    with in_netns(pair.ns_a):
        assert not rtnl.clsact_present(), "the clsact that held only our filter went with it"
    assert links.sweep_clsact_leftovers(pair.ns_a) == 0
    deadline = time.monotonic() + 3
    while {p.id for p in sc.list_progs()} & ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {p.id for p in sc.list_progs()} & ids, "the filter's program is still loaded"


def test_sweep_spares_foreign_and_live_filters(pair, counter):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    run("ip", "netns", "exec", pair.ns_a, "tc", "qdisc", "add", "dev", pair.dev_a, "clsact")
    # someone else's filter, and one of a live tracer (pid 1 is always alive)
    with in_netns(pair.ns_a):
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.tc("add-filter", "bpf", pair.ifindex_a, ":1", fd=fn.fd, name="other", parent=0xFFFFFFF2,
                   classid=1, direct_action=True)
    with links.ClsactFilter(fn.fd, pair.ifindex_a, "egress", pair.ns_a, name="tracer_1_live"):
        assert links.sweep_clsact_leftovers(pair.ns_a) == 0
        shown = tc_filters(pair)
        assert "other" in shown and "tracer_1_live" in shown


def test_auto_mode_prefers_tcx(pair, counter):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    with links.attach_tc(fn.fd, pair.ifindex_a, "ingress", netns=pair.ns_a) as link:
        assert isinstance(link, links.TcxLink)


def test_dropped_reference_detaches(pair, counter):
    fn = counter.load_func("tc_count", counter.SCHED_CLS)
    prog_id = sc.prog_info_by_fd(fn.fd).id
    links.TcxLink(fn.fd, pair.ifindex_a, "egress", netns=pair.ns_a)  # never closed explicitly: __del__ does it
    links.ClsactFilter(fn.fd, pair.ifindex_a, "ingress", netns=pair.ns_a)
    assert wait_gone({prog_id}) == ([], [])
    assert tc_filters(pair).strip() == ""
