"""Journeys from synthetic event tables (no root, no kernel).

The lab's addresses: client 198.18.0.2 in its own netns, host 198.18.0.1 on
the client-facing veth, container 'web' 172.17.0.2:8080 published on host
port 8000.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from tests.unit.event_rows import CONTAINER_NS, HOST_NS, event_defaults
from tracer.events import EVENT_SCHEMA, FLAG_IN_CONTAINER_NS
from tracer.journey_assembler import JourneyAssembler
from tracer.journeys import Hop, build_journeys, fill_flows, nat_translation

CLIENT, HOST, CONTAINER = "198.18.0.2", "198.18.0.1", "172.17.0.2"
FLOW = 0xFFFF8880_1234_5600

# Interfaces of the lab: (ifname, if_role, netns, container name)
EXT = ("veth-lab-h", "external", HOST_NS, None)
BRIDGE = ("docker0", "bridge", HOST_NS, None)
VETH = ("veth3f2a1b", "veth", HOST_NS, "web")
ETH0 = ("eth0", "container", CONTAINER_NS, "web")

_DEFAULTS = event_defaults(ifindex=1, ip_id=7, tcp_flags=0x02, tcp_seq=1000)


def events(rows: list[dict]) -> pa.Table:
    """An EVENT_SCHEMA table from partial row dicts (unspecified columns get defaults)."""
    return pa.Table.from_pylist([{**_DEFAULTS, **r} for r in rows], schema=EVENT_SCHEMA)


def _addr(text: str) -> tuple[str, int]:
    ip, _, port = text.partition(":")
    return ip, int(port or 0)


def ev(pid: int, t: int, hook: str, where: tuple, src: str, dst: str, stage: str | None = None, **kw) -> dict:
    """One sighting. Netfilter rows know the conntrack entry, tc rows do not,
    unless the test says otherwise."""
    ifname, role, netns, container = where
    (sip, sport), (dip, dport) = _addr(src), _addr(dst)
    row = {
        "packet_id": pid, "ktime_ns": t, "hook": hook, "nat_stage": stage, "ifname": ifname,
        "if_role": role, "netns": netns, "container_name": container,
        "src_ip": sip, "src_port": sport, "dst_ip": dip, "dst_port": dport,
    }
    if hook.startswith("nf_"):
        row["flow_id"], row["direction"] = FLOW, kw.pop("direction", "original")
    row.update(kw)
    return row


def inbound_request(pid: int = 1, t0: int = 1_000_000) -> list[dict]:
    c, h, k = f"{CLIENT}:40000", f"{HOST}:8000", f"{CONTAINER}:8080"
    return [
        ev(pid, t0 + 0, "tc_ingress", EXT, c, h),
        ev(pid, t0 + 2_000, "nf_prerouting", EXT, c, h, "before"),
        ev(pid, t0 + 5_000, "nf_prerouting", EXT, c, k, "after"),
        ev(pid, t0 + 7_000, "nf_forward", EXT, c, k),
        ev(pid, t0 + 8_000, "nf_postrouting", BRIDGE, c, k, "before"),
        ev(pid, t0 + 9_000, "nf_postrouting", BRIDGE, c, k, "after"),
        ev(pid, t0 + 11_000, "tc_egress", BRIDGE, c, k),
        ev(pid, t0 + 12_000, "tc_egress", VETH, c, k),
        ev(pid, t0 + 20_000, "tc_ingress", ETH0, c, k),
    ]


def inbound_reply(pid: int = 2, t0: int = 2_000_000) -> list[dict]:
    c, h, k = f"{CLIENT}:40000", f"{HOST}:8000", f"{CONTAINER}:8080"
    rep = {"direction": "reply"}
    return [
        ev(pid, t0 + 0, "tc_egress", ETH0, k, c, tcp_flags=0x12),
        ev(pid, t0 + 3_000, "tc_ingress", VETH, k, c, tcp_flags=0x12),
        ev(pid, t0 + 4_000, "tc_ingress", BRIDGE, k, c, tcp_flags=0x12),
        ev(pid, t0 + 6_000, "nf_prerouting", BRIDGE, k, c, "before", tcp_flags=0x12, **rep),
        ev(pid, t0 + 7_000, "nf_prerouting", BRIDGE, k, c, "after", tcp_flags=0x12, **rep),
        ev(pid, t0 + 8_000, "nf_forward", BRIDGE, k, c, tcp_flags=0x12, **rep),
        ev(pid, t0 + 9_000, "nf_postrouting", EXT, k, c, "before", tcp_flags=0x12, **rep),
        ev(pid, t0 + 10_000, "nf_postrouting", EXT, h, c, "after", tcp_flags=0x12, **rep),
        ev(pid, t0 + 12_000, "tc_egress", EXT, h, c, tcp_flags=0x12),
    ]


def masquerade_out(pid: int = 3, t0: int = 3_000_000) -> list[dict]:
    k, s, m = f"{CONTAINER}:45000", f"{CLIENT}:9000", f"{HOST}:45000"
    return [
        ev(pid, t0 + 0, "tc_egress", ETH0, k, s),
        ev(pid, t0 + 2_000, "tc_ingress", VETH, k, s),
        ev(pid, t0 + 3_000, "nf_prerouting", BRIDGE, k, s, "before"),
        ev(pid, t0 + 4_000, "nf_prerouting", BRIDGE, k, s, "after"),
        ev(pid, t0 + 5_000, "nf_forward", BRIDGE, k, s),
        ev(pid, t0 + 6_000, "nf_postrouting", EXT, k, s, "before"),
        ev(pid, t0 + 8_000, "nf_postrouting", EXT, m, s, "after"),
        ev(pid, t0 + 9_000, "tc_egress", EXT, m, s),
    ]


def masquerade_reply(pid: int = 4, t0: int = 4_000_000) -> list[dict]:
    k, s, m = f"{CONTAINER}:45000", f"{CLIENT}:9000", f"{HOST}:45000"
    rep = {"direction": "reply", "tcp_flags": 0x12}
    return [
        ev(pid, t0 + 0, "tc_ingress", EXT, s, m, tcp_flags=0x12),
        ev(pid, t0 + 1_000, "nf_prerouting", EXT, s, m, "before", **rep),
        ev(pid, t0 + 2_000, "nf_prerouting", EXT, s, k, "after", **rep),
        ev(pid, t0 + 3_000, "nf_forward", EXT, s, k, **rep),
        ev(pid, t0 + 5_000, "tc_egress", BRIDGE, s, k, tcp_flags=0x12),
        ev(pid, t0 + 6_000, "tc_egress", VETH, s, k, tcp_flags=0x12),
        ev(pid, t0 + 8_000, "tc_ingress", ETH0, s, k, tcp_flags=0x12),
    ]


def dropped_request(pid: int = 5, t0: int = 5_000_000) -> list[dict]:
    rows = inbound_request(pid, t0)[:4]  # up to nf_forward
    rows.append(
        {"packet_id": pid, "ktime_ns": t0 + 7_500, "hook": "drop", "drop_reason": "NETFILTER_DROP",
         "ifname": "veth-lab-h", "netns": HOST_NS}
    )
    return rows


def nat_labels(j) -> dict[str, str]:
    labels = {}
    for prev, hop in zip(j.hops, j.hops[1:]):
        label = nat_translation(prev, hop)
        if label:
            labels[hop.label] = label
    return labels


def test_inbound_request_is_delivered_with_dnat_at_prerouting_after():
    (j,) = build_journeys(events(inbound_request()))
    assert j.verdict == "delivered" and j.drop_reason is None
    assert [h.label for h in j.hops] == [
        "tc_ingress@external", "nf_prerouting/before", "nf_prerouting/after", "nf_forward",
        "nf_postrouting/before", "nf_postrouting/after", "tc_egress@bridge", "tc_egress@veth",
        "tc_ingress@container",
    ]
    # tc rows carry no conntrack facts; the packet's netfilter rows do.
    assert j.flow_id == FLOW and j.direction == "original"
    assert all(h.direction == "original" for h in j.hops)
    assert j.protocol == "tcp" and j.tcp_flags == "S" and j.length == 60
    assert j.container == "web"
    assert nat_labels(j) == {"nf_prerouting/after": "DNAT"}
    assert j.hops[0].dst == f"{HOST}:8000" and j.hops[-1].dst == f"{CONTAINER}:8080"
    dts = [h.dt_ns for h in j.hops]
    assert dts[0] == 0 and dts == sorted(dts) and dts[-1] == 20_000
    assert j.first_ktime == 1_000_000 and j.last_ktime == 1_020_000


def test_rows_in_any_order_give_the_same_journey():
    rows = inbound_request()
    rows.reverse()
    (j,) = build_journeys(events(rows))
    assert [h.dt_ns for h in j.hops] == sorted(h.dt_ns for h in j.hops)
    assert j.verdict == "delivered"


def test_reply_gets_reverse_dnat_at_postrouting_after_and_shares_the_flow():
    req, rep = build_journeys(events(inbound_reply() + inbound_request()))  # ordered by first sighting
    assert (req.packet_id, rep.packet_id) == (1, 2)
    assert rep.direction == "reply" and rep.flow_id == req.flow_id == FLOW
    assert rep.tcp_flags == "SA"
    assert nat_labels(rep) == {"nf_postrouting/after": "reverse DNAT"}
    assert rep.verdict == "delivered"  # left toward the client
    assert rep.hops[-1].src == f"{HOST}:8000"


def test_masquerade_is_snat_and_its_reply_reverse_snat():
    out, back = build_journeys(events(masquerade_out() + masquerade_reply()))
    assert nat_labels(out) == {"nf_postrouting/after": "SNAT"}
    assert out.verdict == "delivered" and out.container == "web"
    assert nat_labels(back) == {"nf_prerouting/after": "reverse SNAT"}
    assert back.verdict == "delivered" and back.hops[-1].dst == f"{CONTAINER}:45000"


def test_drop_row_ends_the_journey_with_its_reason():
    rows = dropped_request()
    rows.insert(0, rows.pop())  # batch order must not matter
    (j,) = build_journeys(events(rows))
    assert j.verdict == "dropped" and j.drop_reason == "NETFILTER_DROP"
    assert j.hops[-1].hook == "drop" and j.hops[-1].drop_reason == "NETFILTER_DROP"
    assert j.last_seen is not None and j.last_seen.hook == "nf_forward"
    assert j.flow_id == FLOW  # the drop row has no conntrack facts of its own
    assert nat_labels(j) == {"nf_prerouting/after": "DNAT"}  # the drop row says nothing about NAT
    # The drop row read no headers: it shows the addresses where the packet was last seen.
    assert (j.hops[-1].src, j.hops[-1].dst) == (f"{CLIENT}:40000", f"{CONTAINER}:8080")


def test_freed_after_delivery_is_delivered_not_dropped():
    # e.g. QUEUE_PURGE: the container's socket closed with the data unread.
    rows = inbound_request(pid=6)
    rows.append({"packet_id": 6, "ktime_ns": rows[-1]["ktime_ns"] + 50_000, "hook": "drop",
                 "drop_reason": "QUEUE_PURGE", "ifname": "eth0", "netns": HOST_NS})
    (j,) = build_journeys(events(rows))
    assert j.verdict == "delivered" and j.drop_reason is None
    assert j.hops[-1].hook == "drop" and j.hops[-1].drop_reason == "QUEUE_PURGE"


def test_journey_that_stops_at_the_bridge_is_unknown():
    rows = inbound_request()[:7]  # ... tc_egress@bridge, then nothing
    (j,) = build_journeys(events(rows))
    assert j.verdict == "unknown" and j.drop_reason is None
    assert j.hops[-1].label == "tc_egress@bridge"


@pytest.mark.parametrize(
    "hook, stage, role, verdict",
    [
        ("nf_input", "after", None, "delivered"),
        ("nf_input", None, None, "delivered"),
        ("nf_input", "before", None, "unknown"),  # INPUT NAT still to come
        ("tc_egress", None, "external", "delivered"),
        ("tc_egress", None, "veth", "unknown"),
        ("tc_ingress", None, "container", "delivered"),
        ("nf_postrouting", "after", None, "unknown"),
    ],
)
def test_terminal_sightings(hook, stage, role, verdict):
    row = ev(9, 100, hook, ("x", role, HOST_NS, None), f"{CLIENT}:1", f"{HOST}:2", stage)
    (j,) = build_journeys(events([row]))
    assert j.verdict == verdict


def test_in_container_flag_stands_in_for_a_missing_role():
    row = ev(9, 100, "tc_ingress", ("eth0", None, CONTAINER_NS, None), f"{CLIENT}:1", f"{CONTAINER}:2",
             flags=FLAG_IN_CONTAINER_NS)
    (j,) = build_journeys(events([row]))
    assert j.hops[0].if_role == "container" and j.verdict == "delivered"


def test_json_dict_has_the_contract_keys():
    (j,) = build_journeys(events(inbound_request()))
    d = j.to_json_dict()
    assert set(d) == {"packet_id", "flow_id", "time", "ktime_ns", "direction", "protocol", "tcp_flags", "container",
                      "verdict", "drop_reason", "hops"}
    assert d["ktime_ns"] == 1_000_000 and d["time"] is None  # these rows carry no wall clock
    # container_id is an extra beside the contract's hop keys.
    assert all(set(h) == {"hook", "nat_stage", "ifname", "netns", "container", "src", "dst", "dt_ns", "container_id"}
               for h in d["hops"])
    assert d["hops"][2] == {"hook": "nf_prerouting", "nat_stage": "after", "ifname": "veth-lab-h",
                            "netns": HOST_NS, "container": None, "src": f"{CLIENT}:40000",
                            "dst": f"{CONTAINER}:8080", "dt_ns": 5_000, "container_id": None}
    assert d["hops"][-1]["container"] == "web"
    import json

    assert json.loads(json.dumps(d)) == d


def test_icmp_endpoints_have_no_port():
    rows = [
        ev(7, 10, "tc_ingress", EXT, f"{CLIENT}:0", f"{HOST}:0", protocol="icmp", tcp_flags=0,
           src_port=0x1234, dst_port=1),
        ev(7, 20, "nf_input", EXT, f"{CLIENT}:0", f"{HOST}:0", protocol="icmp", tcp_flags=0,
           src_port=0x1234, dst_port=1),
    ]
    (j,) = build_journeys(events(rows))
    assert (j.hops[0].src, j.hops[0].dst) == (CLIENT, HOST)
    assert j.protocol == "icmp" and j.tcp_flags is None and j.verdict == "delivered"


def test_rows_without_packet_id_are_left_out_and_empty_tables_work():
    assert build_journeys(events([])) == []
    assert build_journeys(events([ev(0, 10, "tc_ingress", EXT, f"{CLIENT}:1", f"{HOST}:2")])) == []


def test_no_flow_known_gives_none():
    rows = [ev(8, 10, "tc_ingress", EXT, f"{CLIENT}:1", f"{HOST}:2")]
    (j,) = build_journeys(events(rows))
    assert j.flow_id is None and j.direction is None


def test_nat_translation_labels():
    def hop(src, dst, direction, hook="nf_postrouting"):
        return Hop(hook, "after", "x", None, 0, None, src, dst, 0, 0, None, direction)

    assert nat_translation(hop("a:1", "b:2", "original"), hop("a:1", "c:3", "original")) == "DNAT"
    assert nat_translation(hop("a:1", "b:2", "original"), hop("d:1", "b:2", "original")) == "SNAT"
    assert nat_translation(hop("a:1", "b:2", "reply"), hop("d:1", "b:2", "reply")) == "reverse DNAT"
    assert nat_translation(hop("a:1", "b:2", "reply"), hop("a:1", "c:2", "reply")) == "reverse SNAT"
    assert nat_translation(hop("a:1", "b:2", "original"), hop("a:1", "b:2", "original")) is None
    assert nat_translation(hop("a:1", "b:2", "original"), hop(None, None, "original", "drop")) is None


def test_fill_flows_spreads_conntrack_facts_to_tc_rows():
    table = fill_flows(events(inbound_request() + masquerade_out()))
    assert table.schema == EVENT_SCHEMA
    assert set(table["flow_id"].to_pylist()) == {FLOW}
    assert set(table["direction"].to_pylist()) == {"original"}


def test_assembler_splits_complete_from_incomplete_across_batches():
    a = inbound_request(pid=1, t0=1_000_000)  # ends at 1_020_000
    b = inbound_reply(pid=2, t0=2_000_000)  # 2_000_000 .. 2_012_000
    c = masquerade_out(pid=3, t0=3_000_000)
    asm = JourneyAssembler()
    asm.add(events(a + b[:4]))
    done = asm.pop_complete(idle_ns=500_000, now_ktime=2_100_000)
    assert [j.packet_id for j in done] == [1]
    assert asm.pending_rows == 4  # only the incomplete packet is held

    asm.add(events(b[4:] + c[:2]))
    assert asm.pop_complete(idle_ns=500_000, now_ktime=2_400_000) == []  # b last seen 2_012_000
    done = asm.pop_complete(idle_ns=500_000, now_ktime=2_600_000)
    assert [j.packet_id for j in done] == [2]
    assert len(done[0].hops) == 9 and done[0].verdict == "delivered"  # rows from both batches
    assert nat_labels(done[0]) == {"nf_postrouting/after": "reverse DNAT"}

    # A straggler of an emitted packet is counted, not shown as a new journey.
    asm.add(events(a[-1:] + c[2:]))
    assert asm.late_rows == 1
    rest = asm.flush()
    assert [j.packet_id for j in rest] == [3] and rest[0].verdict == "delivered"
    assert asm.pending_rows == 0 and asm.flush() == []


def test_assembler_orders_by_first_sighting():
    asm = JourneyAssembler()
    asm.add(events(inbound_request(pid=9, t0=100) + inbound_request(pid=3, t0=50_000)))
    assert [j.packet_id for j in asm.pop_complete(idle_ns=1_000, now_ktime=10**9)] == [9, 3]


def test_capture_missing_newer_columns_still_builds():
    table = events(inbound_request()).drop_columns(["if_role", "container_id", "flags"])
    (j,) = build_journeys(table)
    assert [h.if_role for h in j.hops] == [None] * 9
    assert j.verdict == "unknown"  # without roles no sighting is known to be terminal
    assert j.container == "web" and j.flow_id == FLOW


def test_plain_string_columns_are_accepted():
    table = events(inbound_request())
    plain = table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_dictionary(f.type) else f
                                  for f in table.schema]))
    (j,) = build_journeys(plain)
    assert j.verdict == "delivered" and nat_labels(j) == {"nf_prerouting/after": "DNAT"}


def test_absolute_time_of_a_journey():
    """`time` (RFC 3339, ns, UTC) is the first hop's wall clock, `ktime_ns`
    its kernel clock; both paths (objects, columns) and the header agree."""
    from tracer.journey_json import journey_json_lines
    from tracer.journey_rows import journey_rows, journeys_of_table
    from tracer.render import render_journey
    from tracer.render_rows import render_rows

    wall0 = 1_764_468_448_123_456_789  # 2025-11-30T02:07:28.123456789Z
    offset = wall0 - 1_000_000
    rows = [{**r, "time": r["ktime_ns"] + offset} for r in inbound_request()]
    rows += [{**r, "time": r["ktime_ns"] + offset} for r in inbound_request(pid=2, t0=3_000_000_000)]
    table = events(rows)
    js = build_journeys(table)
    assert [j.to_json_dict()["time"] for j in js] == ["2025-11-30T02:07:28.123456789Z", "2025-11-30T02:07:31.122456789Z"]
    assert [j.to_json_dict()["ktime_ns"] for j in js] == [1_000_000, 3_000_000_000]
    assert journey_json_lines(table) == [json.dumps(j.to_json_dict()) for j in js]
    assert [j.time_ns for j in journeys_of_table(table)] == [j.time_ns for j in js]
    header = render_journey(js[0], color=False).splitlines()[0]
    assert header.startswith("02:07:28.123456 #1 tcp S ")
    assert bytes(render_rows(journey_rows(table), False)).decode() == "".join(render_journey(j, False) + "\n" for j in js)


# Docker's hairpin NAT (dockerd --userland-proxy=false): a container reaching a
# published port of the host goes out of its eth0, is DNATed at PREROUTING and
# (reaching itself) MASQUERADEd at POSTROUTING on the bridge, and comes back
# in through the same veth, as the lab shows it (README, The lab).
DB = "172.17.0.3"
GATEWAY = "172.17.0.1"
DB_VETH = ("veth9d98f5d", "veth", HOST_NS, "db")
DB_ETH0 = ("eth0", "container", CONTAINER_NS + 1, "db")
IDS = {"web": "a" * 64, "db": "d" * 64}


def hairpin(src_where: tuple, dst_where: tuple, src_ip: str, dst_ip: str, masquerade: bool, pid: int = 9) -> list[dict]:
    (sv, se), (dv, de) = src_where, dst_where
    c, h, k = f"{src_ip}:46326", f"{HOST}:8000", f"{dst_ip}:8080"
    m = f"{GATEWAY}:46326" if masquerade else c
    rows = [
        ev(pid, 0, "tc_egress", se, c, h), ev(pid, 1_000, "tc_ingress", sv, c, h),
        ev(pid, 2_000, "nf_prerouting", BRIDGE, c, h, "before"), ev(pid, 3_000, "nf_prerouting", BRIDGE, c, k, "after"),
        ev(pid, 4_000, "nf_forward", BRIDGE, c, k), ev(pid, 5_000, "nf_postrouting", BRIDGE, c, k, "before"),
        ev(pid, 6_000, "nf_postrouting", BRIDGE, m, k, "after"),
        ev(pid, 7_000, "tc_egress", dv, m, k), ev(pid, 8_000, "tc_ingress", de, m, k),
    ]
    for r in rows:
        r["container_id"] = IDS.get(r["container_name"])
    return rows


def test_hairpin_to_itself_is_one_journey_with_dnat_and_snat_at_the_bridge():
    (j,) = build_journeys(events(hairpin((VETH, ETH0), (VETH, ETH0), CONTAINER, CONTAINER, masquerade=True)))
    assert j.verdict == "delivered" and j.hops[-1].label == "tc_ingress@container"
    assert nat_labels(j) == {"nf_prerouting/after": "DNAT", "nf_postrouting/after": "SNAT"}
    assert j.container == "web" and j.to_container is None, "to itself: one container"
    from tracer.render import render_journey

    assert "[web]" in render_journey(j, False).splitlines()[0]


def test_hairpin_to_another_container_names_both():
    (j,) = build_journeys(events(hairpin((VETH, ETH0), (DB_VETH, DB_ETH0), CONTAINER, DB, masquerade=False)))
    assert j.verdict == "delivered" and nat_labels(j) == {"nf_prerouting/after": "DNAT"}
    assert (j.container, j.to_container) == ("web", "db")
    from tracer.journey_rows import journey_rows
    from tracer.render import render_journey
    from tracer.render_rows import render_rows

    text = render_journey(j, False)
    assert "  [web → db]  delivered" in text.splitlines()[0]
    table = events(hairpin((VETH, ETH0), (DB_VETH, DB_ETH0), CONTAINER, DB, masquerade=False))
    assert bytes(render_rows(journey_rows(table), False)).decode() == text + "\n"


def test_same_name_other_container_is_told_apart_by_id():
    """A container recreated under the same name is another container."""
    rows = hairpin((VETH, ETH0), (VETH, ETH0), CONTAINER, CONTAINER, masquerade=True)
    for r in rows[-2:]:
        r["container_id"] = "e" * 64
    (j,) = build_journeys(events(rows))
    assert (j.container, j.to_container) == ("web", "web")
    assert (build_journeys(events(inbound_request()))[0].to_container) is None  # from outside: one container
