"""The tc and netfilter programs as one compiled body each, with the hook,
the container-netns flag and the NAT stage written in at load
(bpf/common.h trc_param, tracer/kernel/program_cache.py patch): on real lab
traffic they follow a connection's packets in both directions, through
DNAT and into the container's netns, hop for hop as BCC's own build (a
function per program, TRACER_DEBUG) does."""

from __future__ import annotations

import time

from tests.e2e.tracing import Tracer, connect_from, kernel_snapshot, own_source_ports, wait_gone


def _hops(journey: dict) -> list[tuple]:
    return [(h["hook"], h["nat_stage"], h["ifname"], h["container"], h["netns"]) for h in journey["hops"]]


def _handshake(lab, env: dict) -> tuple[dict, dict]:
    """The SYN and the SYN-ACK of one connection of our own, as traced."""
    t = Tracer("--port", str(lab["port"]), "--duration", "60", env=env)
    t.wait_ready(60)
    sport = own_source_ports(1)[0]
    connect_from(lab, sport)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    ours = [j for j in journeys if any(h["src"].endswith(f":{sport}") or h["dst"].endswith(f":{sport}") for h in j["hops"])]
    syn = [j for j in ours if j["tcp_flags"] == "S" and j["direction"] == "original"]
    synack = [j for j in ours if j["tcp_flags"] == "SA" and j["direction"] == "reply"]
    assert syn and synack, f"no SYN/SYN-ACK journeys from port {sport}: {[(j['tcp_flags'], j['direction']) for j in ours]}"
    return syn[0], synack[0]


def test_shared_bodies_trace_both_directions_like_bccs_own_build(lab, tmp_path):
    before = kernel_snapshot()
    shared = _handshake(lab, {"TRACER_PROGRAM_CACHE_DIR": str(tmp_path / "programs")})
    per_program = _handshake(lab, {"TRACER_DEBUG": "1"})
    syn, synack = shared
    host_ns = syn["hops"][0]["netns"]
    ctr = lab["container"]

    # The request: in by the host's interface, DNAT between the two
    # PREROUTING hooks, out by the bridge and the veth, and it ends at the
    # container's eth0 ingress, in the container's netns.
    assert syn["hops"][0]["hook"] == "tc_ingress" and syn["hops"][0]["container"] is None
    hooks = [(h["hook"], h["nat_stage"]) for h in syn["hops"]]
    pre_b, pre_a = hooks.index(("nf_prerouting", "before")), hooks.index(("nf_prerouting", "after"))
    assert pre_b < pre_a and syn["hops"][pre_b]["dst"] != syn["hops"][pre_a]["dst"], "DNAT between the two"
    assert ("tc_egress", None) in hooks[pre_a:]
    last = syn["hops"][-1]
    assert (last["hook"], last["ifname"], last["container"]) == ("tc_ingress", "eth0", ctr) and last["netns"] != host_ns
    assert syn["container"] == ctr and syn["verdict"] == "delivered"

    # The reply: starts at the container's eth0 egress in its netns, comes
    # in on the veth's host side, and its source is translated back after
    # POSTROUTING's NAT.
    first = synack["hops"][0]
    assert (first["hook"], first["ifname"], first["container"]) == ("tc_egress", "eth0", ctr) and first["netns"] != host_ns
    assert any(h["hook"] == "tc_ingress" and h["container"] == ctr and h["netns"] == host_ns for h in synack["hops"])
    post = {h["nat_stage"]: h for h in synack["hops"] if h["hook"] == "nf_postrouting"}
    assert post["before"]["src"] != post["after"]["src"], "reverse NAT between the two"

    assert [_hops(j) for j in shared] == [_hops(j) for j in per_program], \
        "the same hops, NAT stages, interfaces and netns as a function per program"
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)


def test_shared_entries_off_is_bccs_per_program_build_without_tracer_debug(lab, tmp_path):
    """TRACER_SHARED_ENTRIES=0: a refusal of the shared bodies can be compared
    with a function per program without TRACER_DEBUG's other changes; BCC
    compiles and loads it, so nothing goes into the program cache."""
    before = kernel_snapshot()
    cache = tmp_path / "programs"
    shared = _handshake(lab, {"TRACER_PROGRAM_CACHE_DIR": str(cache)})
    kept = sorted(cache.glob("*.prog"))
    per_program = _handshake(lab, {"TRACER_PROGRAM_CACHE_DIR": str(cache), "TRACER_SHARED_ENTRIES": "0"})
    assert sorted(cache.glob("*.prog")) == kept, "the per-program build is not cached"
    assert [_hops(j) for j in shared] == [_hops(j) for j in per_program]
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)


def test_one_cached_build_serves_every_filter_each_start_writing_its_own(lab, tmp_path):
    """The filter's port is a value slot (bpf/common.h TRC_FILTER_PORT): a
    start with --port P takes the entry a start with another port compiled,
    unchanged on disk, and follows P's connections alone; the first start,
    from its fresh compile, follows its own port alone too. So do starts
    with --host, --container and --proto (TRC_FILTER_ON)."""
    before = kernel_snapshot()
    cache = tmp_path / "programs"
    env = {"TRACER_PROGRAM_CACHE_DIR": str(cache)}
    web, iperf = lab["port"], lab["iperf_port"]

    def ports_seen(port: int, to_web: int, to_iperf: int, *options: str) -> set[int]:
        t = Tracer(*(options or ("--port", str(port))), "--duration", "60", env=env)
        t.wait_ready(60)
        connect_from(lab, to_web)
        connect_from(dict(lab, port=iperf), to_iperf, request=False)
        time.sleep(0.5)
        journeys = t.stop()
        assert t.returncode == 0, t.stderr
        return {int(end.rsplit(":", 1)[1]) for j in journeys for h in j["hops"] for end in (h["src"], h["dst"])}

    a, b, c, d = own_source_ports(4)
    seen = ports_seen(iperf, a, b)
    assert b in seen and iperf in seen and a not in seen and web not in seen, sorted(seen)
    entries = sorted(cache.glob("*.prog"))
    assert len(entries) == 1, entries
    compiled = entries[0].stat().st_ino
    seen = ports_seen(web, c, d)
    assert c in seen and web in seen and d not in seen and iperf not in seen, sorted(seen)
    assert sorted(cache.glob("*.prog")) == entries and entries[0].stat().st_ino == compiled, \
        "the other port's entry, taken as it was (a compile would have stored a new file)"
    # Which parts of the filter are on is a value too (TRC_FILTER_ON): any
    # --host, --container, --proto from the same entry, each followed alone.
    e, f, g, h, i, k = own_source_ports(6)
    seen = ports_seen(0, e, f, "--host", lab["client_address"], "--port", str(web))
    assert e in seen and f not in seen and iperf not in seen, sorted(seen)
    seen = ports_seen(0, g, h, "--container", lab["container"])
    assert g in seen and h in seen, sorted(seen)
    seen = ports_seen(0, i, k, "--container", lab["container"], "--proto", "udp")
    assert i not in seen and k not in seen, sorted(seen)
    assert sorted(cache.glob("*.prog")) == entries and entries[0].stat().st_ino == compiled, "one entry for every filter"
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)
