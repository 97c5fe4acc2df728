"""Latency mode against the real kernel: a known delay on one hop shows up in
that segment only; --sample picks whole flows."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict

import pytest

from tests.e2e.tracing import Tracer, kernel_snapshot, wait_gone
from tracer import traffic

TBF_LATENCY_MS = 20


def _segments(intervals: list[dict]) -> dict[str, dict]:
    """The busiest interval's stats per segment."""
    busiest = max(intervals, key=lambda i: i["packets"])
    return {s["segment"]: s for s in busiest["segments"]}


def _udp_stream(lab, seconds: int = 3) -> None:
    # Unsegmented UDP at more than the tbf rate keeps its queue full, so the
    # queueing delay is the tbf latency (limit / rate).
    subprocess.run(["ip", "netns", "exec", lab["netns"], "iperf3", "-c", lab["host_address"], "-p", str(lab["iperf_port"]),
                    "-u", "-b", "50M", "-l", "1200", "-t", str(seconds)], capture_output=True, timeout=30, check=True)


def _measure(lab) -> dict[str, dict]:
    t = Tracer("--port", str(lab["iperf_port"]), "--proto", "udp", "--interval", "1", command="latency")
    t.wait_ready()
    _udp_stream(lab)
    time.sleep(1.2)
    intervals = t.stop()
    assert t.returncode == 0, t.stderr
    return _segments(intervals)


@pytest.fixture
def tbf_on_container_veth(lab):
    dev = lab["container_veth"]
    subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "20mbit", "burst", "5kb",
                    "latency", f"{TBF_LATENCY_MS}ms"], check=True)
    try:
        yield dev
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], check=True)


DELAYED = "tc_egress@veth → tc_ingress@container"


def test_tbf_delay_shows_in_its_segment_only(lab, tbf_on_container_veth):
    before = kernel_snapshot()
    delayed = _measure(lab)
    subprocess.run(["tc", "qdisc", "del", "dev", tbf_on_container_veth, "root"], check=True)
    subprocess.run(["tc", "qdisc", "add", "dev", tbf_on_container_veth, "root", "pfifo_fast"], check=False)
    baseline = _measure(lab)

    p50 = delayed[DELAYED]["p50_ns"] / 1e6
    assert 0.5 * TBF_LATENCY_MS <= p50 <= 1.6 * TBF_LATENCY_MS, delayed[DELAYED]
    assert baseline[DELAYED]["p50_ns"] < 1e6, baseline[DELAYED]
    for name, seg in delayed.items():
        if name != DELAYED and not name.endswith("drop") and seg["packets"] > 50:
            assert seg["p50_ns"] < 1e6, (name, seg)
    # Packets the full queue dropped are counted as such, not as missing.
    assert "tc_egress@veth → drop" in delayed
    progs, links = wait_gone(before)
    assert not progs and not links


def test_latency_bad_input_is_one_line():
    t = Tracer("--port", "0", command="latency")
    t.finish()
    assert t.returncode != 0
    assert len(t.stderr.strip().splitlines()) == 1 and "Traceback" not in t.stderr


def test_sample_4_traces_a_quarter_of_flows_each_whole(lab):
    connections = 120
    t = Tracer("--port", str(lab["port"]), "--sample", "4")
    t.wait_ready()
    for _ in range(connections):
        traffic.client_http_get(lab)
    time.sleep(0.6)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    flows = defaultdict(list)
    for j in journeys:
        flows[j["flow_id"]].append(j)
    flows.pop(None, None)
    # Binomial(120, 1/4): mean 30, sd ~4.7.
    assert 12 <= len(flows) <= 50, len(flows)
    for flow_id, js in flows.items():
        kinds = {(j["direction"], j["tcp_flags"]) for j in js}
        assert ("original", "S") in kinds and ("reply", "SA") in kinds, (flow_id, kinds)
        assert all(j["verdict"] == "delivered" for j in js if j["tcp_flags"] in ("S", "SA"))
