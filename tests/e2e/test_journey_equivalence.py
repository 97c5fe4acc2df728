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


def signature(j: dict) -> tuple:
    return (
        j["flow_id"], j["direction"], j["protocol"], j["tcp_flags"], j["container"], j["verdict"], j["drop_reason"],
        tuple((h["hook"], h["nat_stage"], h["ifname"], h["container"], h["src"], h["dst"]) for h in j["hops"]),
    )


def test_kernel_journeys_match_the_per_sighting_oracle(lab):
    ports = ("--port", str(lab["port"]), "--port", str(lab["server_port"]), "--duration", "60")
    oracle = Tracer(*ports, env={"TRACER_SIGHTING_EVENTS": "1"})
    oracle.wait_ready()
    shipped = Tracer(*ports)
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
