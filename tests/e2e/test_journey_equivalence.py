"""Journeys assembled in the kernel against the per-sighting design, on the
same live traffic.

Two real `tracer trace --json` processes run at once on the lab: one as
shipped (one ring-buffer record per packet, bpf/journey.h), one built with
TRACER_SIGHTING_EVENTS=1 (one record per sighting, joined in user space: the
design before). Both see the same packets, so they must print the same
journeys: same hops in the same order with the same interfaces, containers
and addresses (NAT labels follow from those), same verdicts, directions and
flows. Only packet ids and times differ. Packet by packet, too: a packet
the one delivered the other delivered; one the kernel really dropped (a
loaded machine drops) both saw dropped, with the same reason, at the same
hop.

Other engineers' tests may send traffic through the same lab while this runs,
and the two tracers do not start at the same instant: the comparison keeps
the test's own packets (connections from source ports it picks, and the
container's connection to a server the test starts in the client netns, on
a port it picks as well).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

from tests.e2e.tracing import Tracer, burst_from, connect_from, ours, own_source_ports, wait_until_all_shown
from tracer.capture.reader import read_capture
from tracer.journeys import build_journeys


def signature(j: dict) -> tuple:
    return (
        j["flow_id"], j["direction"], j["protocol"], j["tcp_flags"], j["container"], j["verdict"], j["drop_reason"],
        tuple((h["hook"], h["nat_stage"], h["ifname"], h["container"], h["src"], h["dst"]) for h in j["hops"]),
    )


def captured(path, ports: set[int]) -> dict[tuple, Counter]:
    """Per packet of the test's own traffic, keyed by what it carries (its
    first hop's addresses, IP id, TCP sequence and acknowledgement numbers,
    flags and length: packet ids differ between the tracers), what became
    of it: verdict, drop reason and its sightings as a capture holds them
    (hook, stage, interface, addresses and the TTL there, not in the JSON).
    A Counter per key: a retransmission may carry the same."""
    cap = read_capture([str(path)])
    rows = {(r["packet_id"], r["ktime_ns"]): r for r in
            cap.events.select(["packet_id", "ktime_ns", "ttl", "ip_id", "tcp_seq", "tcp_ack"]).to_pylist()}
    packets: dict[tuple, Counter] = {}
    for j in build_journeys(cap.events):
        if not any(ours(ports, (h.src, h.dst)) for h in j.hops):
            continue
        first = rows[(j.packet_id, j.hops[0].ktime_ns)]
        key = (j.hops[0].src, j.hops[0].dst, first["ip_id"], first["tcp_seq"], first["tcp_ack"], j.tcp_flags, j.length)
        fate = (j.verdict, j.drop_reason,
                tuple((h.hook, h.nat_stage, h.ifname, h.src, h.dst, rows[(j.packet_id, h.ktime_ns)]["ttl"]) for h in j.hops))
        packets.setdefault(key, Counter())[fate] += 1
    return packets


def test_kernel_journeys_match_the_per_sighting_oracle(lab, tmp_path):
    *sports, out_port = own_source_ports(26)  # out_port: the container's connection (MASQUERADE) to a server of the test's
    server = subprocess.Popen(["ip", "netns", "exec", lab["netns"], sys.executable, "-m", "http.server", str(out_port),
                               "--bind", lab["server_address"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        journeys = _run_both(lab, tmp_path, sports, out_port)
    finally:
        server.terminate()
        server.wait(10)
    _compare(lab, tmp_path, *journeys, set(sports) | {out_port})


def _run_both(lab, tmp_path, sports: list[int], out_port: int) -> tuple[list, list]:
    ports = ("--port", str(lab["port"]), "--port", str(out_port), "--duration", "120")
    oracle = Tracer(*ports, "-w", str(tmp_path / "oracle.arrows"), env={"TRACER_SIGHTING_EVENTS": "1"},
                    stdout_file=tmp_path / "oracle.json")
    oracle.wait_ready()
    shipped = Tracer(*ports, "-w", str(tmp_path / "shipped.arrows"), stdout_file=tmp_path / "shipped.json")
    shipped.wait_ready()
    # Five connections one after the other, then twenty at once (each
    # tracer's fast paths see packets interleave on a CPU), from source
    # ports no other test's connections use (tracing.own_source_ports).
    for sport in sports[:5]:
        connect_from(lab, sport)
    burst_from(lab, sports[5:]).wait(30)
    url = f"http://{lab['server_address']}:{out_port}/"
    deadline = time.monotonic() + 60  # the server may take a moment to listen (seconds on a loaded machine)
    while subprocess.run(["docker", "exec", lab["container"], "wget", "-q", "-O", "/dev/null", url],
                         capture_output=True, timeout=30).returncode != 0:
        assert time.monotonic() < deadline, f"the test's server on {url} never answered the container"
        time.sleep(0.2)
    # Stopped only once both have shown all of the test's packets: one
    # stopped while a last packet is still on its way (or still held, a
    # loaded machine shows late, the per-sighting build later still) would
    # miss a packet the other has.
    wait_until_all_shown([shipped, oracle], set(sports) | {out_port})
    kernel, sightings = shipped.stop(), oracle.stop()
    assert shipped.returncode == 0 and oracle.returncode == 0, shipped.stderr + oracle.stderr
    assert "TRACER_SIGHTING_EVENTS" in oracle.stderr and "TRACER_SIGHTING_EVENTS" not in shipped.stderr
    (tmp_path / "summaries.txt").write_text(f"kernel-assembled: {_summary(shipped.stderr)}\noracle: {_summary(oracle.stderr)}")
    return kernel, sightings


def _summary(stderr: str) -> str:
    """The summary's counts of what a tracer lost or left incomplete (for a failure's message)."""
    return "; ".join(line.strip() for line in stderr.splitlines()
                     if line.strip().startswith(("summary", "lost", "incomplete", "journey faults", "left out"))
                     or "left out" in line)


def _compare(lab, tmp_path, kernel: list, sightings: list, ports: set[int]) -> None:
    kernel = [j for j in kernel if any(ours(ports, (h["src"], h["dst"])) for h in j["hops"])]
    sightings = [j for j in sightings if any(ours(ports, (h["src"], h["dst"])) for h in j["hops"])]
    # Both DNAT (inbound) and MASQUERADE (outbound) paths are in the traffic.
    assert any(h["src"].startswith(lab["host_address"]) for j in kernel if j["direction"] == "original" for h in j["hops"])
    assert len(kernel) >= 25 * 8, f"too few journeys for 25 requests and one outbound GET: {len(kernel)}"
    mine, oracle_sigs = Counter(map(signature, kernel)), Counter(map(signature, sightings))
    only_ours, only_oracle = mine - oracle_sigs, oracle_sigs - mine
    assert not only_ours and not only_oracle, (
        f"{sum(only_ours.values())} journeys only in the kernel-assembled output, {sum(only_oracle.values())} only in the "
        f"oracle's; first of each: {next(iter(only_ours), None)} / {next(iter(only_oracle), None)}; "
        f"{(tmp_path / 'summaries.txt').read_text()}"
    )
    assert any(j["verdict"] == "delivered" for j in kernel)
    # Packet by packet, the captures agree: each packet's verdict, drop
    # reason and hops, TTL at each hop included (the netfilter sensor's fast
    # path reads it rather than parsing the packet again). A drop under load
    # is a drop in both, never delivered in one.
    shipped, oracle = captured(tmp_path / "shipped.arrows", ports), captured(tmp_path / "oracle.arrows", ports)
    packets = sum(sum(fates.values()) for fates in shipped.values())
    assert packets >= 25 * 8, f"too few packets in the kernel-assembled capture to compare: {packets}"
    assert shipped.keys() == oracle.keys(), (
        f"{len(shipped.keys() - oracle.keys())} packets only in the kernel-assembled capture, "
        f"{len(oracle.keys() - shipped.keys())} only in the oracle's")
    differ = [key for key in shipped if shipped[key] != oracle[key]]
    assert not differ, (f"{len(differ)} packets whose fate differs; first: {differ[0]}: kernel "
                        f"{dict(shipped[differ[0]])} / oracle {dict(oracle[differ[0]])}")
