"""`--hooks lean` against the full hook profile, on the same live traffic.

Two real tracers run at once on the lab, one with every hook (the default)
and one with `--hooks lean` (tracer/sensors/hook_profile.py: without
PREROUTING, INPUT and POSTROUTING before NAT, FORWARD and tc on docker0).
The second's netfilter links take the next free priorities (the kernel
refuses one already taken: tracer/sensors/netfilter.py steps on), still on
the same side of NAT. Both see the same packets, so every packet the full
tracer followed the lean one followed too: its hops exactly the full
journey's minus the left-out hooks, the same NAT labels at the same hops
(a label compares a hop with the one before it), the same verdict, drop
reason, container, direction and flow id (flow ids are keyed hashes the
same in every tracer of a boot). Packets are matched by what they carry
(first hop's addresses, IP id, TCP sequence and acknowledgement numbers,
flags, length): packet ids differ between tracers. Latency mode: lean's
segments are coarser, its end-to-end rows count the same packets.

Other engineers' traffic may cross the lab meanwhile: both compare only
the test's own connections (source ports only it uses; the container's
connection to a server of the test's, on a port it picks).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

from tests.e2e.tracing import (REPO, Tracer, burst_from, connect_from, kernel_snapshot, ours, own_source_ports, wait_gone,
                               wait_until_all_shown)
from tracer.capture.reader import read_capture
from tracer.journeys import build_journeys, nat_translation
from tracer.sensors.hook_profile import left_out


def packets(path, ports: set[int], drop_left_out: bool) -> dict[tuple, Counter]:
    """Per packet of the test's own traffic (keyed by what it carries), its
    fate: verdict, drop reason, container, direction, flow, its hops (hook,
    stage, interface, addresses) and the NAT labels with the hop each is
    at. ``drop_left_out``: the hops lean does not attach to are left out
    (the NAT labels are the full journey's own)."""
    cap = read_capture([str(path)])
    assert cap.metadata.get("hooks") == ("all" if drop_left_out else "lean"), cap.metadata
    rows = {(r["packet_id"], r["ktime_ns"]): r for r in
            cap.events.select(["packet_id", "ktime_ns", "ip_id", "tcp_seq", "tcp_ack"]).to_pylist()}
    out: dict[tuple, Counter] = {}
    for j in build_journeys(cap.events):
        if not any(ours(ports, (h.src, h.dst)) for h in j.hops):
            continue
        first = rows[(j.packet_id, j.hops[0].ktime_ns)]
        key = (j.hops[0].src, j.hops[0].dst, first["ip_id"], first["tcp_seq"], first["tcp_ack"], j.tcp_flags, j.length)
        labels = tuple((hop.label, nat) for prev, hop in zip(j.hops, j.hops[1:])
                       if (nat := nat_translation(prev, hop)))
        hops = [h for h in j.hops if not (drop_left_out and left_out("lean", h.hook, h.nat_stage, h.if_role))]
        fate = (j.verdict, j.drop_reason, j.container, j.direction, j.flow_id, labels,
                tuple((h.hook, h.nat_stage, h.ifname, h.src, h.dst) for h in hops))
        out.setdefault(key, Counter())[fate] += 1
    return out


def test_lean_journeys_are_the_full_ones_without_the_left_out_hooks(lab, tmp_path):
    before = kernel_snapshot()
    *sports, out_port = own_source_ports(21)
    server = subprocess.Popen(["ip", "netns", "exec", lab["netns"], sys.executable, "-m", "http.server", str(out_port),
                               "--bind", lab["server_address"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ports = ("--port", str(lab["port"]), "--port", str(out_port), "--duration", "120")
    mine = set(sports) | {out_port}
    full = Tracer(*ports, "-w", str(tmp_path / "full.arrows"), stdout_file=tmp_path / "full.json")
    lean = None
    try:
        full.wait_ready()
        lean = Tracer(*ports, "--hooks", "lean", "-w", str(tmp_path / "lean.arrows"), stdout_file=tmp_path / "lean.json")
        lean.wait_ready()
        for sport in sports[:5]:
            connect_from(lab, sport)
        burst_from(lab, sports[5:]).wait(30)
        url = f"http://{lab['server_address']}:{out_port}/"  # out through MASQUERADE, replies back (reverse SNAT)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "exec", lab["container"], "wget", "-q", "-O", "/dev/null", url],
                             capture_output=True, timeout=30).returncode != 0:
            assert time.monotonic() < deadline, f"the test's server on {url} never answered the container"
            time.sleep(0.2)
        wait_until_all_shown([full, lean], mine)
    finally:
        full.stop()
        if lean is not None:
            lean.stop()
        server.terminate()
        server.wait(10)
    assert full.returncode == 0 and lean.returncode == 0, full.stderr + lean.stderr
    assert "left out in slot races" not in lean.stderr, lean.stderr
    want, got = packets(tmp_path / "full.arrows", mine, True), packets(tmp_path / "lean.arrows", mine, False)
    n = sum(sum(c.values()) for c in want.values())
    assert n >= 20 * 8, f"too few packets of the test's traffic: {n}"
    assert want.keys() == got.keys(), (f"{len(want.keys() - got.keys())} packets only in the full capture, "
                                       f"{len(got.keys() - want.keys())} only in the lean one")
    differ = [k for k in want if want[k] != got[k]]
    assert not differ, f"{len(differ)} packets differ; first {differ[0]}: full {dict(want[differ[0]])} / lean {dict(got[differ[0]])}"
    # Every NAT the lab does is in the comparison, and lean did leave hops out.
    labels = {nat for fates in got.values() for fate in fates for _, nat in fate[5]}
    assert {"DNAT", "reverse DNAT", "SNAT", "reverse SNAT"} <= labels, labels
    hooks = {h[:2] for fates in got.values() for fate in fates for h in fate[6]}
    assert ("nf_forward", None) not in hooks and ("nf_prerouting", "before") not in hooks, hooks
    assert not any(h[0].startswith("tc_") and h[2] == "docker0" for fates in got.values() for f in fates for h in f[6])
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)


def test_lean_latency_counts_the_same_packets_end_to_end(lab):
    before = kernel_snapshot()
    sports = own_source_ports(16)
    ports = [arg for p in sports for arg in ("--port", str(p))]
    full = Tracer(*ports, "--interval", "1", command="latency")
    lean = Tracer(*ports, "--interval", "1", "--hooks", "lean", command="latency")
    try:
        full.wait_ready()
        lean.wait_ready()
        for sport in sports[:6]:
            connect_from(lab, sport)
        burst_from(lab, sports[6:]).wait(timeout=30)
        time.sleep(1.5)
    finally:
        got_full, got_lean = full.stop(), lean.stop()
    assert full.returncode == 0 and lean.returncode == 0, (full.stderr, lean.stderr)

    def totals(intervals):
        e2e, segments = Counter(), Counter()
        for interval in intervals:
            for direction, stats in interval.get("end_to_end", {}).items():
                e2e[direction] += stats["packets"]
            for seg in interval.get("segments", ()):
                segments[seg["segment"]] += seg["packets"]
        return e2e, segments

    (e2e_full, seg_full), (e2e_lean, seg_lean) = totals(got_full), totals(got_lean)
    assert e2e_full["original"] > 16 * 4 and e2e_full["reply"] > 16 * 4, e2e_full
    assert e2e_full == e2e_lean, (e2e_full, e2e_lean)
    # Coarser: the left-out hops are in no segment of lean's; one lean segment
    # spans those full ones (tc_ingress@external -> nf_prerouting/after is
    # full's -> nf_prerouting/before -> nf_prerouting/after).
    assert any("nf_forward" in s or "@bridge" in s for s in seg_full), seg_full
    assert not any("nf_forward" in s or "@bridge" in s or "/before" in s for s in seg_lean), seg_lean
    assert seg_lean["tc_ingress@external → nf_prerouting/after"] == seg_full["tc_ingress@external → nf_prerouting/before"]
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)


def test_lean_with_iface_keeps_the_address_before_dnat(lab, tmp_path):
    """--iface narrows tc to one interface (the host's uplink, not the lab's
    trc-host): a packet from the lab client has no tc hop on the way in, so
    lean keeps PREROUTING before NAT: its first hop still has the published
    address, and the DNAT is named. The start line and the capture say
    that hop was kept (`hooks_kept`), and `stats` names it."""
    before = kernel_snapshot()
    uplink = json.loads(subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True, text=True,
                                       check=True).stdout)[0]["dev"]
    sport = own_source_ports(1)[0]
    lean = Tracer("--iface", uplink, "--port", str(sport), "--hooks", "lean", "--duration", "30",
                  "-w", str(tmp_path / "lean.arrows"))
    try:
        lean.wait_ready()
        connect_from(lab, sport)
        time.sleep(0.5)
    finally:
        journeys = lean.stop()
    assert lean.returncode == 0, lean.stderr
    syn = next(j for j in journeys if j["tcp_flags"] == "S" and j["hops"][0]["src"].endswith(f":{sport}"))
    first = syn["hops"][0]
    path = [(h["hook"], h["nat_stage"], h["ifname"], h["dst"]) for h in syn["hops"]]
    assert (first["hook"], first["nat_stage"]) == ("nf_prerouting", "before"), path
    assert first["dst"] == f"{lab['host_address']}:{lab['port']}", path
    assert any(h["hook"] == "nf_prerouting" and h["nat_stage"] == "after"
               and h["dst"] == f"{lab['container_ip']}:{lab['container_port']}" for h in syn["hops"]), path
    assert not any(h["hook"] == "nf_forward" for h in syn["hops"]), path  # still lean
    assert ", lean hooks + nf_prerouting/before (ready" in lean.stderr, lean.stderr
    meta = read_capture([str(tmp_path / "lean.arrows")]).metadata
    assert (meta["hooks"], meta["hooks_kept"]) == ("lean", "nf_prerouting/before"), meta
    stats = subprocess.run([sys.executable, "-m", "tracer", "stats", str(tmp_path / "lean.arrows")], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert stats.stdout.splitlines()[0].endswith("hooks lean + nf_prerouting/before"), stats.stdout + stats.stderr
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)
