"""A packet dropped inside a container's netns names the container, as the
container's eth0 hops do: the drop sensor's hop carries its device's netns
and ifindex (not the in-container flag tc sightings there carry), and the
place book resolved (container netns, eth0) to place `other`. Real kernel,
real lab: UDP datagrams from the host to a port nothing listens on in the
lab's container are freed there (NO_SOCKET, after the ICMP unreachable),
seen live (`trace --json`) and read back from the capture it wrote."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from tests.e2e.tracing import REPO, Tracer, own_source_ports

CLOSED_PORT = 9  # discard: nothing listens on it in the lab's container


def _drop_hops(journeys: list[dict], sport: int) -> list[dict]:
    ours = [j for j in journeys if j["protocol"] == "udp" and j["hops"]
            and any(h["src"] and h["src"].endswith(f":{sport}") for h in j["hops"])]
    return [h for j in ours for h in j["hops"] if h["hook"] == "drop"]


def test_a_drop_in_the_containers_netns_names_the_container(lab, tmp_path):
    capture = tmp_path / "drops.arrows"
    sport = own_source_ports(1)[0]
    t = Tracer("--proto", "udp", "--host", lab["container_ip"], "--duration", "30", "-w", str(capture))
    t.wait_ready()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", sport))
        for _ in range(3):
            s.sendto(b"x" * 20, (lab["container_ip"], CLOSED_PORT))
            time.sleep(0.05)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    shown = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", str(capture)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    for where, seen in (("live", journeys), ("capture", [json.loads(line) for line in shown.stdout.splitlines()])):
        drops = _drop_hops(seen, sport)
        assert len(drops) >= 3, (where, seen)
        for hop in drops:
            assert hop["container"] == lab["container"], (where, hop)
            assert hop["ifname"] == "eth0", (where, hop)
            assert hop["container_id"] == lab["container_id"], (where, hop)
