"""The kernel's journey records, read two ways that must agree.

`trace` reads JourneyRows straight from the records (tracer/journey_records.py);
a capture holds the same records laid out as sighting rows (tracer/expand.py)
and decoded, which the journey builder groups again. On the same records both
give the same JSON lines, human text and summary, including packets that come
in parts (a drop after delivery, more hops than a record holds), drops,
incomplete journeys, ICMP, and two containers whose eth0 share an ifindex.
"""

from __future__ import annotations


import numpy as np

from tests.unit.test_decode import CT_NS, ctx
from tracer import addresses, events
from tracer.decode import decode
from tracer.expand import expand
from tracer.hold import RecordHold, sort_records
from tracer.journey_records import journey_rows_of_records
from tracer.journey_json import journey_json_lines
from tracer.journey_rows import journey_rows, journeys_of_table
from tracer.render import Summary, render_journey
from tracer.render_rows import render_rows

H = {name: i for i, name in enumerate(events.HOOKS) if name}
BEFORE, AFTER = 1, 2
CLIENT, HOST, WEB, DB = "198.18.0.2", "198.18.0.1", "172.17.0.2", "172.17.0.3"


def ip(text: str) -> np.ndarray:
    """The 16 bytes the kernel records (IPv4-mapped for IPv4)."""
    return np.frombuffer(addresses.packed(text), np.uint8)


def hop(hook: str, ifindex: int, tuple_idx: int = 0, stage: int = 0, in_ct: bool = False, dt: int = 0) -> tuple:
    return (H[hook] | stage << events.HOP_STAGE_SHIFT | (events.HOP_IN_CT_BIT if in_ct else 0), ifindex, tuple_idx, dt)


def record(pid: int, t0: int, hops: list[tuple], tuples: list[tuple], end: str = "terminal", flow: int = 0,
           direction: int = 0, protocol: int = 6, new: bool = True, reason: int = 0, drop_netns: int = 0) -> np.ndarray:
    r = events.empty_journeys(1)
    r["packet_id"], r["first_ktime"], r["flow_id"], r["direction"] = pid, t0, flow, direction
    r["protocol"], r["tcp_flags"], r["length"], r["ip_id"], r["cpu"] = protocol, 0x12, 60, pid & 0xFFFF, 1
    r["drop_reason"], r["drop_netns"], r["end"] = reason, drop_netns, events.JOURNEY_ENDS.index(end)
    for i, (s, d, sp, dp) in enumerate(tuples):
        r["tuples"][0, i] = (ip(s), ip(d), sp, dp)
    r["n_tuples"] = len(tuples)
    for i, (code, ifindex, t, dt) in enumerate(hops):
        r["hops"][0, i] = (dt or 1000 * i, ifindex, code | (0x80 if new and i == 0 else 0), 64, t, 0)
    r["n_hops"] = len(hops)
    r["last_ktime"] = t0 + int(r["hops"]["dt_ns"][0, len(hops) - 1])
    return r


REQUEST = [hop("tc_ingress", 7), hop("nf_prerouting", 7, 0, BEFORE), hop("nf_prerouting", 7, 1, AFTER),
           hop("nf_forward", 7, 1), hop("tc_egress", 9, 1), hop("tc_ingress", 2, 1, in_ct=True)]
REQ_TUPLES = [(CLIENT, HOST, 40000, 8000), (CLIENT, WEB, 40000, 8080)]


def records() -> np.ndarray:
    parts = [
        # delivered request through DNAT, then freed by the socket (a one-hop continuation)
        record(101, 10_000, REQUEST, REQ_TUPLES, flow=5, direction=1),
        record(101, 90_000, [hop("drop", 2, in_ct=True)], [REQ_TUPLES[1]], end="drop", new=False, reason=12, drop_netns=CT_NS),
        # reply with reverse DNAT, leaving by the external interface
        record(202, 20_000, [hop("tc_egress", 2, in_ct=True), hop("tc_ingress", 9), hop("nf_postrouting", 7, 0, BEFORE),
                             hop("nf_postrouting", 7, 1, AFTER), hop("tc_egress", 7, 1)],
               [(WEB, CLIENT, 8080, 40000), (HOST, CLIENT, 8000, 40000)], flow=5, direction=2),
        # dropped in FORWARD
        record(303, 30_000, REQUEST[:4] + [hop("drop", 7, 1)], REQ_TUPLES, end="drop", flow=6, direction=1, reason=12),
        # went quiet after two hops: incomplete
        record(404, 5_000, REQUEST[:2], REQ_TUPLES[:1], end="quiet"),
        # ICMP to the second container (same eth0 ifindex, told apart by address)
        record(505, 40_000, [hop("tc_egress", 9), hop("tc_ingress", 2, in_ct=True)], [(CLIENT, DB, 7, 0)], protocol=1),
        # ICMP whose echo id NAT rewrote: not shown, so no NAT label either
        record(707, 45_000, [hop("tc_ingress", 7), hop("nf_prerouting", 7, 1, AFTER)], [(CLIENT, HOST, 7, 0), (CLIENT, HOST, 9, 0)],
               end="quiet", protocol=1),
        # more hops than a record holds: a full part, then the rest
        record(606, 50_000, [hop("tc_ingress", 7)] * events.MAX_HOPS, REQ_TUPLES[:1], end="full"),
        record(606, 70_000, [hop("tc_ingress", 2, in_ct=True)], REQ_TUPLES[:1], new=False),
    ]
    return np.concatenate(parts)


def both(recs: np.ndarray):
    c = ctx()
    recs = sort_records(recs)
    return journey_rows_of_records(recs, c), journey_rows(decode(expand(recs), c))


def test_records_read_directly_equal_their_sighting_rows():
    direct, rows = both(records())
    assert len(direct) == len(rows) == 7
    assert journey_json_lines(direct) == journey_json_lines(rows)
    assert [render_journey(j, False) for j in journeys_of_table(direct)] == \
           [render_journey(j, False) for j in journeys_of_table(rows)]
    for color in (False, True):  # the column-wise text is render_journey's, byte for byte
        expected = "".join(render_journey(j, color) + "\n" for j in journeys_of_table(direct))
        assert bytes(render_rows(direct, color)).decode() == expected
        assert bytes(render_rows(rows, color)).decode() == expected
    shuffled = records()[np.random.default_rng(1).permutation(len(records()))]
    assert journey_json_lines(journey_rows_of_records(shuffled, ctx())) == journey_json_lines(rows), "any order in"
    a, b = Summary(), Summary()
    a.add_table(direct)
    b.add_table(rows)
    assert a.to_dict() == b.to_dict()


def test_what_the_journeys_say():
    direct, _ = both(records())
    js = {j.packet_id: j for j in journeys_of_table(direct)}
    assert [j.packet_id for j in journeys_of_table(direct)] == [404, 101, 202, 303, 505, 707, 606]  # by first sighting
    req = js[101]
    assert req.verdict == "delivered" and req.hops[-1].hook == "drop" and req.drop_reason is None
    assert req.hops[2].dst == f"{WEB}:8080" and req.hops[1].dst == f"{HOST}:8000"
    assert req.hops[-1].dt_ns == 80_000 and req.container == "web"
    assert js[202].verdict == "delivered" and js[202].hops[-1].src == f"{HOST}:8000" and js[202].direction == "reply"
    assert js[303].verdict == "dropped" and js[303].drop_reason == "NETFILTER_DROP" and js[303].last_seen.hook == "nf_forward"
    assert js[404].verdict == "unknown"
    assert js[505].hops[-1].container == "db" and js[505].hops[0].dst == DB and js[505].protocol == "icmp"
    assert len(js[606].hops) == events.MAX_HOPS + 1 and js[606].verdict == "delivered"
    assert "NAT" not in bytes(render_rows(direct, False)).decode().split("#2c3 ")[1].split("#")[0]  # 707


def test_head_keeps_the_first_journeys():
    direct, rows = both(records())
    assert journey_json_lines(direct.head(2)) == journey_json_lines(rows)[:2]
    assert direct.head(99) is direct


def test_hold_joins_parts_and_counts_late_ones():
    recs = records()
    hold = RecordHold()
    assert len(hold.add(recs[:1])) == 0
    assert len(hold.pop_complete(idle_ns=1_000_000, now_ktime=20_000)) == 0, "101 was seen 5 µs ago"
    hold.add(recs[1:2])  # its continuation, before it was let go
    out = hold.pop_complete(idle_ns=1_000, now_ktime=200_000)
    assert list(out["packet_id"]) == [101, 101] and len(hold) == 0
    late = hold.add(record(101, 300_000, [hop("drop", 2, in_ct=True)], [REQ_TUPLES[1]], end="drop", new=False))
    assert len(late) == 1 and hold.late == 1 and len(hold) == 0
    hold.add(recs[2:])
    assert len(hold.flush()) == len(recs) - 2


def test_the_hold_lets_packets_go_in_order_of_first_sighting():
    """A quiet packet first seen after one still held waits for it, so that
    `trace` shows packets in order of first sighting across passes, as
    `show` orders the capture: a pass's cut between two packets that overlap
    in time showed the later one first (once in a full e2e run)."""
    from tracer import record_words

    hold = RecordHold()
    long = record(1, 100, [hop("tc_ingress", 7), hop("tc_ingress", 9, dt=50_000)], REQ_TUPLES[:1])  # to 50,100
    short = record(2, 200, [hop("tc_ingress", 7), hop("tc_ingress", 9, dt=300)], REQ_TUPLES[:1])  # to 500
    later = record(3, 60_000, [hop("tc_ingress", 7)], REQ_TUPLES[:1])  # not quiet at the second pop
    hold.add(record_words.concat([long, short, later]))
    assert len(hold.pop_complete(idle_ns=1_000, now_ktime=10_000)) == 0, "2 is quiet, but 1 was seen first"
    assert list(hold.pop_complete(idle_ns=1_000, now_ktime=55_000)["packet_id"]) == [1, 2]
    assert list(hold.flush()["packet_id"]) == [3]


def test_packet_ids_that_wrap_are_new_packets():
    """Ids are a per-CPU 40-bit counter under the CPU number: after 2^40
    packets on one CPU they start again from 0. A wrapped id is a new
    packet, not a straggler of one shown long ago."""
    from tracer.hold import RecentIds

    cpu = np.uint64(2 << events.PACKET_ID_CPU_SHIFT)
    top = cpu + np.uint64((1 << events.PACKET_ID_CPU_SHIFT) - 3)
    recent = RecentIds(size=4)
    recent.add(np.array([top, top + np.uint64(1), top + np.uint64(2)], np.uint64))
    wrapped = np.array([cpu + np.uint64(0), cpu + np.uint64(1)], np.uint64)
    assert not recent.seen(wrapped).any()
    assert recent.seen(np.array([top + np.uint64(1)], np.uint64)).all()
    hold = RecordHold()
    hold.add(record(int(top), 10, [hop("tc_ingress", 7)], REQ_TUPLES[:1]))
    assert len(hold.pop_complete(0, 1 << 40)) == 1
    assert len(hold.add(record(int(cpu) + 1, 20, [hop("tc_ingress", 7)], REQ_TUPLES[:1]))) == 0, "not late"
    assert hold.late == 0 and len(hold) == 1


def test_hold_lets_go_part_of_a_batch_and_keeps_the_rest():
    recs = records()  # one batch; first sightings between 5 µs and 90 µs
    hold = RecordHold()
    hold.add(recs)
    first = hold.pop_complete(idle_ns=0, now_ktime=30_000)  # quiet by then: packets whose parts all ended before 30 µs
    assert 0 < len(first) < len(recs) and len(hold) == len(recs) - len(first)
    assert not set(first["packet_id"]) & set(hold.flush()["packet_id"]), "a packet is let go once, whole"
    assert len(hold) == 0


def test_what_a_pass_lets_go_is_copied_once_in_the_order_it_came():
    """pop_complete gathers the done records of every batch straight into
    one array (record_words.gather): the same bytes as taking each batch's
    and concatenating them; a lone whole batch is handed over as it is."""
    from tracer import record_words

    recs = records()
    hold = RecordHold()
    hold.add(recs)
    assert hold.pop_complete(idle_ns=0, now_ktime=1 << 40) is recs, "a lone whole batch: no copy"
    # (packet 101's second part, at 90 µs, would hold back every packet first seen after it)
    older, newer = recs[2:6].copy(), record_words.concat([recs[:2], recs[6:]])
    hold = RecordHold()  # the last one let these go
    hold.add(older)
    kept = hold.pop_complete(idle_ns=0, now_ktime=30_000)  # part of the older batch stays held
    assert 0 < len(kept) < len(older)
    hold.add(newer)
    out = hold.pop_complete(idle_ns=0, now_ktime=1 << 40)
    still = ~np.isin(older["packet_id"], kept["packet_id"])
    expected = record_words.concat([record_words.take(older, still), newer])
    assert out.dtype == expected.dtype and out.tobytes() == expected.tobytes()
    assert not np.shares_memory(out, newer), "two batches: one new array"
    mixed = [(older, np.array([1, 0])), (newer.astype(newer.dtype.newbyteorder()), None)]
    with np.errstate(all="ignore"):
        assert len(record_words.gather(mixed)) == 2 + len(newer), "dtypes that differ: concatenated as numpy does"
