"""Live tracing through the real kernel, dockerd and the lab (issue: follow
real packets end to end). Every test runs the real `tracer trace` CLI."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.e2e.tracing import (Tracer, clsact_devices, connect_from, index_of, kernel_snapshot, own_source_ports,
                               tc_filters_named_tracer, wait_gone)
from tracer import traffic


def _client_get(lab, port=None):
    return traffic.client_http_get(lab, port=port)


def _first(journeys, **match):
    for j in journeys:
        if all(j.get(k) == v for k, v in match.items()):
            return j
    raise AssertionError(f"no journey with {match} among {[(j['tcp_flags'], j['direction']) for j in journeys]}")


@pytest.fixture
def nothing_left():
    """Checker: none of our programs, links or tc filters that appeared
    during the test remain (a developer's own tracer may run meanwhile)."""
    before = kernel_snapshot()
    filters_before = set(tc_filters_named_tracer())
    qdiscs_before = clsact_devices()

    def check() -> None:
        progs, links = wait_gone(before)
        assert not links, f"links of ours still attached: {links}"
        assert not progs, f"programs of ours still loaded: {progs}"
        assert not set(tc_filters_named_tracer()) - filters_before
        assert not clsact_devices() - qdiscs_before, "clsact qdiscs left behind"

    return check


def test_inbound_request_and_reply_journeys(lab, nothing_left):
    t = Tracer("--port", str(lab["port"]), "--duration", "30")
    t.wait_ready()
    _client_get(lab)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    host, client, ctr = lab["host_address"], lab["client_address"], lab["container_ip"]

    syn = _first(journeys, tcp_flags="S", direction="original")
    i = index_of(syn, "tc_ingress", ifname=lab["host_iface"])
    assert syn["hops"][i]["dst"] == f"{host}:{lab['port']}"
    i = index_of(syn, "nf_prerouting", "before", start=i)
    assert syn["hops"][i]["dst"] == f"{host}:{lab['port']}"
    i = index_of(syn, "nf_prerouting", "after", start=i)
    assert syn["hops"][i]["dst"] == f"{ctr}:{lab['container_port']}"
    i = index_of(syn, "nf_forward", start=i)
    i = index_of(syn, "nf_postrouting", start=i)
    i = index_of(syn, "tc_egress", ifname=lab["bridge"], start=i)
    i = index_of(syn, "tc_egress", ifname=lab["container_veth"], start=i)
    i = index_of(syn, "tc_ingress", ifname="eth0", start=i)
    assert syn["hops"][i]["container"] == lab["container"]
    assert syn["hops"][i]["src"].startswith(client + ":")
    assert syn["verdict"] == "delivered"
    assert syn["container"] == lab["container"]

    synack = _first(journeys, tcp_flags="SA", direction="reply")
    i = index_of(synack, "tc_egress", ifname="eth0")
    i = index_of(synack, "tc_ingress", ifname=lab["container_veth"], start=i)
    i = index_of(synack, "nf_postrouting", "before", start=i)
    assert synack["hops"][i]["src"] == f"{ctr}:{lab['container_port']}"
    i = index_of(synack, "nf_postrouting", "after", start=i)
    assert synack["hops"][i]["src"] == f"{host}:{lab['port']}", "reverse DNAT at POSTROUTING"
    index_of(synack, "tc_egress", ifname=lab["host_iface"], start=i)
    assert synack["verdict"] == "delivered"

    assert syn["flow_id"] and syn["flow_id"] == synack["flow_id"]
    for j in journeys:
        dts = [h["dt_ns"] for h in j["hops"]]
        assert dts == sorted(dts) and dts[0] == 0
    nothing_left()


def test_outbound_masquerade(lab):
    t = Tracer("--container", lab["container"], "--duration", "30")
    t.wait_ready()
    traffic.container_http_get(lab)
    time.sleep(0.5)
    journeys = [j for j in t.stop() if j["protocol"] == "tcp"]
    assert t.returncode == 0, t.stderr
    ctr, host, server = lab["container_ip"], lab["host_address"], lab["server_address"]
    out = [j for j in journeys if j["hops"][0]["dst"] == f"{server}:{lab['server_port']}"]
    syn = _first(out, tcp_flags="S")
    i = index_of(syn, "nf_postrouting", "before")
    assert syn["hops"][i]["src"].startswith(ctr + ":")
    i = index_of(syn, "nf_postrouting", "after", start=i)
    assert syn["hops"][i]["src"].startswith(host + ":"), "MASQUERADE to the host address"
    index_of(syn, "tc_egress", ifname=lab["host_iface"], start=i)

    synack = _first(journeys, tcp_flags="SA", flow_id=syn["flow_id"])
    assert synack["direction"] == "reply"
    i = index_of(synack, "nf_prerouting", "before")
    assert synack["hops"][i]["dst"].startswith(host + ":")
    i = index_of(synack, "nf_prerouting", "after", start=i)
    assert synack["hops"][i]["dst"].startswith(ctr + ":"), "reply translated back at PREROUTING"
    index_of(synack, "tc_ingress", ifname="eth0", start=i)


@pytest.fixture
def drop_rule(lab):
    """A DROP in DOCKER-USER for this test's own connection only (a source
    port no other connection uses): the lab is shared with other tests."""
    sport = own_source_ports(1)[0]
    rule = ["DOCKER-USER", "-s", lab["client_address"], "-p", "tcp", "--sport", str(sport),
            "--dport", str(lab["container_port"]), "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield sport
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)


def test_drop_in_docker_user(lab, drop_rule):
    t = Tracer("--port", str(lab["port"]), "--duration", "30")
    t.wait_ready()
    connect_from(lab, drop_rule, seconds=2)
    journeys = t.stop()
    dropped = [j for j in journeys if j["verdict"] == "dropped"]
    assert dropped, [j["verdict"] for j in journeys]
    j = dropped[0]
    assert j["drop_reason"] == "NETFILTER_DROP"
    last_seen = [h for h in j["hops"] if h["hook"] != "drop"][-1]
    assert last_seen["hook"] == "nf_forward"
    assert j["hops"][-1]["hook"] == "drop"


def test_other_port_is_absent(lab):
    t = Tracer("--port", str(lab["port"]), "--duration", "30")
    t.wait_ready()
    subprocess.run(["ip", "netns", "exec", lab["netns"], "busybox", "nc", "-w", "1", lab["host_address"], str(lab["iperf_port"])],
                   input="", capture_output=True, timeout=10)
    _client_get(lab)
    time.sleep(0.5)
    journeys = t.stop()
    ports = {h["dst"].rsplit(":", 1)[-1] for j in journeys for h in j["hops"]} | {h["src"].rsplit(":", 1)[-1] for j in journeys for h in j["hops"]}
    assert str(lab["port"]) in ports
    assert str(lab["iperf_port"]) not in ports


def test_count_ends_cleanly(lab, nothing_left):
    t = Tracer("--port", str(lab["port"]), "--count", "3")
    t.wait_ready()
    deadline = time.monotonic() + 20
    while t.proc.poll() is None and time.monotonic() < deadline:
        _client_get(lab)
        time.sleep(0.2)
    journeys = t.finish()
    assert t.returncode == 0, t.stderr
    assert len(journeys) == 3
    nothing_left()


def test_duration_ends_cleanly(lab, nothing_left):
    start = time.monotonic()
    t = Tracer("--port", str(lab["port"]), "--duration", "1.5")
    t.wait_ready()
    t.finish()
    assert t.returncode == 0, t.stderr
    assert time.monotonic() - start < 20
    nothing_left()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("tc_mode", ["tcx", "clsact"])
def test_nothing_left_after_signal(lab, nothing_left, sig, tc_mode):
    t = Tracer("--port", str(lab["port"]), "--tc-mode", tc_mode)
    t.wait_ready()
    _client_get(lab)
    t.stop(sig)
    if sig == signal.SIGKILL and tc_mode == "clsact":
        # clsact filters outlive their process; the next run sweeps them.
        assert tc_filters_named_tracer()
        t2 = Tracer("--port", str(lab["port"]), "--duration", "0.5", "--tc-mode", "clsact")
        t2.wait_ready()
        t2.finish()
    else:
        assert t.returncode in (0, -signal.SIGKILL), t.stderr
    nothing_left()


def test_recreated_container_is_followed(lab):
    from tracer import lab as lab_mod

    t = Tracer("--container", lab["container"], "--duration", "60")
    t.wait_ready()
    subprocess.run(["docker", "rm", "-f", lab["container"]], check=True, capture_output=True)
    fresh = lab_mod.up()
    assert fresh["container_id"] != lab["container_id"]
    time.sleep(2)  # the events stream reports the start; the tracer attaches
    _client_get(fresh)
    time.sleep(0.5)
    journeys = t.stop()
    lab.update(fresh)  # later tests use the new container
    inbound = [j for j in journeys if j["direction"] == "original" and j["tcp_flags"] == "S"]
    assert inbound, t.stderr
    j = inbound[-1]
    veth_hops = [h for h in j["hops"] if h["ifname"] == fresh["container_veth"]]
    eth0_hops = [h for h in j["hops"] if h["ifname"] == "eth0"]
    assert veth_hops and eth0_hops, [(h["hook"], h["ifname"]) for h in j["hops"]]
    assert eth0_hops[0]["container_id"] == fresh["container_id"]


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--container", "no-such-container-xyz"], {}, "no running container"),
        (["--port", "70000"], {}, "70000 is not in the range 1<=x<=65535"),
        (["--proto", "sctpx"], {}, "'sctpx' is not one of 'tcp', 'udp', 'icmp'"),
        (["--host", "not-an-ip"], {}, "not an IPv4 or IPv6 address"),
        (["--host", "fd00::1::2"], {}, "not an IPv4 or IPv6 address"),
        (["--host", "fd00:198:18::1/64"], {}, "not an IPv4 or IPv6 address"),
        (["--host", "[fd00::1"], {}, "not an IPv4 or IPv6 address"),
        (["tcp prot 80"], {}, "syntax error"),
        (["inbound"], {}, "metadata"),
        (["--iface", "nosuchif0"], {}, "no interface"),
        (["--container", "web"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "no Docker engine"),
    ],
)
def test_bad_input_one_line_nothing_attached(args, env, message, nothing_left):
    t = Tracer(*args, "--duration", "1", env=env)
    journeys = t.finish()
    assert t.returncode != 0
    lines = [line for line in t.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, t.stderr
    assert message in lines[0] and "Traceback" not in t.stderr
    assert journeys == []
    nothing_left()


def test_tiny_icmp_is_joined_across_sensors(lab):
    """Echo requests with no payload (8 bytes of ICMP: too short to parse in
    place, so tc copies the headers out with a helper) to the lab's host
    address: the tc sighting and the netfilter ones are one packet (same
    fingerprint on both paths), delivered at nf_input."""
    t = Tracer("--proto", "icmp", "--host", lab["client_address"], "--duration", "30")
    t.wait_ready()
    subprocess.run(["ip", "netns", "exec", lab["netns"], lab_busybox(), "ping", "-c", "3", "-s", "0", "-W", "1",
                    lab["host_address"]], capture_output=True, timeout=20)
    time.sleep(0.5)
    journeys = t.stop()
    requests = [j for j in journeys if j["protocol"] == "icmp" and j["hops"][0]["src"].startswith(lab["client_address"])]
    assert len(requests) >= 3, journeys
    for j in requests:
        where = [(h["hook"], h["nat_stage"]) for h in j["hops"]]
        assert where[0] == ("tc_ingress", None), where
        assert ("nf_prerouting", "before") in where and ("nf_input", "after") in where, where
        assert j["verdict"] == "delivered", j
    replies = [j for j in journeys if j["protocol"] == "icmp" and j["hops"][0]["src"].startswith(lab["host_address"])]
    assert replies and all("tc_egress" in [h["hook"] for h in j["hops"]] for j in replies), \
        [[(h["hook"], h["nat_stage"]) for h in j["hops"]] for j in replies]


def lab_busybox() -> str:
    from tracer.lab_base import busybox

    return busybox()
