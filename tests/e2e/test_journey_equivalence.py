"""Journeys assembled in the kernel against the per-sighting design, on the
same live traffic.

Two real `tracer trace --json` processes run at once on the lab: one as
shipped (one ring-buffer record per packet, bpf/journey.h), one built with
TRACER_SIGHTING_EVENTS=1 (one record per sighting, joined in user space: the
design before). Both see the same packets, so they must print the same
journeys: same hops in the same order with the same interfaces, containers
and addresses (NAT labels follow from those), same verdicts, directions and
flows. Only packet ids and times differ.
"""

from __future__ import annotations

import time
from collections import Counter

from tests.e2e.tracing import Tracer
from tracer import traffic
from tracer.capture.reader import read_capture
from tracer.journeys import build_journeys


def signature(j: dict) -> tuple:
    return (
        j["flow_id"], j["direction"], j["protocol"], j["tcp_flags"], j["container"], j["verdict"], j["drop_reason"],
        tuple((h["hook"], h["nat_stage"], h["ifname"], h["container"], h["src"], h["dst"]) for h in j["hops"]),
    )


def captured(path) -> Counter:
    """Per packet, its sightings as a capture holds them: hook, stage,
    interface, addresses and the TTL there (not in the JSON)."""
    cap = read_capture([str(path)])
    ttl = {(r["packet_id"], r["ktime_ns"]): r["ttl"] for r in cap.events.select(["packet_id", "ktime_ns", "ttl"]).to_pylist()}
    return Counter(
        tuple((h.hook, h.nat_stage, h.ifname, h.src, h.dst, ttl[(j.packet_id, h.ktime_ns)]) for h in j.hops)
        for j in build_journeys(cap.events)
    )


def test_kernel_journeys_match_the_per_sighting_oracle(lab, tmp_path):
    ports = ("--port", str(lab["port"]), "--port", str(lab["server_port"]), "--duration", "60")
    oracle = Tracer(*ports, "-w", str(tmp_path / "oracle.arrows"), env={"TRACER_SIGHTING_EVENTS": "1"})
    oracle.wait_ready()
    shipped = Tracer(*ports, "-w", str(tmp_path / "shipped.arrows"))
    shipped.wait_ready()
    for _ in range(5):
        traffic.client_http_get(lab)
    traffic.container_http_get(lab)
    time.sleep(0.5)
    ours, theirs = shipped.stop(), oracle.stop()
    assert shipped.returncode == 0 and oracle.returncode == 0, shipped.stderr + oracle.stderr
    assert "TRACER_SIGHTING_EVENTS" in oracle.stderr and "TRACER_SIGHTING_EVENTS" not in shipped.stderr
    # Both DNAT (inbound) and MASQUERADE (outbound) paths are in the traffic.
    assert any(h["src"].startswith(lab["host_address"]) for j in ours if j["direction"] == "original" for h in j["hops"])
    assert len(ours) >= 5 * 8, f"too few journeys for 5 requests and one outbound GET: {len(ours)}"
    mine, oracle_sigs = Counter(map(signature, ours)), Counter(map(signature, theirs))
    only_ours, only_oracle = mine - oracle_sigs, oracle_sigs - mine
    assert not only_ours and not only_oracle, (
        f"{sum(only_ours.values())} journeys only in the kernel-assembled output, {sum(only_oracle.values())} only in the "
        f"oracle's; first of each: {next(iter(only_ours), None)} / {next(iter(only_oracle), None)}"
    )
    assert {j["verdict"] for j in ours} == {"delivered"}
    # The captures agree too, TTL at each hop included (the netfilter
    # sensor's fast path reads it rather than parsing the packet again).
    assert captured(tmp_path / "shipped.arrows") == captured(tmp_path / "oracle.arrows")
