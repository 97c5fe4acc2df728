"""Journeys assembled in the kernel (bpf/journey.h), driven packet by packet.

The real tc programs, built as `tracer trace --port 8000` builds them, run on
crafted frames through BPF_PROG_TEST_RUN (which runs them on the loopback
device: a host interface with no role, so `trc_tc_in` is a sighting that does
not end a journey and `trc_tc_in_ct`, a container's eth0 ingress, is one that
does). Records are read from the real ring buffer. Each outcome the issue
names has a case: a journey that ends, one with more hops than a slot holds,
one that goes quiet, one whose slot is taken by another packet, one whose
packet id wraps, the flush when tracing stops, and a ring buffer nobody
reads.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from tests.e2e.journey_kernel import (HOOK_TC_INGRESS, Kernel, end_name, frame, frame6, pcache_holds,
                                      pcache_jslot, pcache_set_index, pool_cursor)
from tracer import addresses, events
from tracer.expand import expand

JOURNEY_CLOSED = 1 << 32  # bpf/journey.h: the closed bit of journey.busy


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    yield k
    k.close()


@pytest.fixture
def clean(kernel):
    """Start and end each case with no open journey and an empty ring."""
    kernel.sweeper.flush()
    kernel.records()
    yield kernel
    kernel.sweeper.flush()
    kernel.records()


def test_a_journey_is_one_record_emitted_where_it_ends(clean):
    k = clean
    packet = frame(101, 1001)
    k.see("trc_tc_in", packet, 3)
    assert len(k.records()) == 0, "a journey that has not ended stays in the kernel"
    k.see("trc_tc_in_ct", packet)
    recs = k.records()
    assert len(recs) == 1
    r = recs[0]
    assert end_name(r) == "terminal" and r["n_hops"] == 4 and r["packet_id"] != 0
    codes = r["hops"]["code"][:4]
    assert [c & 0x0F for c in codes] == [HOOK_TC_INGRESS] * 4
    assert [bool(c & events.HOP_IN_CT_BIT) for c in codes] == [False, False, False, True]
    dts = r["hops"]["dt_ns"][:4].astype(int)
    assert dts[0] == 0 and all(np.diff(dts) >= 0)
    assert r["n_tuples"] == 1 and addresses.text_of(r["tuples"]["daddr"][0].tobytes()) == "198.18.0.1"
    rows = expand(recs)
    assert len(rows) == 4 and set(rows["packet_id"]) == {r["packet_id"]}
    assert rows["flags"][0] & events.FLAG_NEW_PACKET and not rows["flags"][1] & events.FLAG_NEW_PACKET
    assert not (rows["flags"] & events.FLAG_INCOMPLETE).any()
    assert list(rows["dst_port"]) == [8000] * 4


def test_an_ipv6_journey_carries_its_addresses(clean):
    k = clean
    packet = frame6(0x5A123, 2001)
    k.see("trc_tc_in", packet, 2)
    k.see("trc_tc_in_ct", packet)
    recs = k.records()
    assert len(recs) == 1 and end_name(recs[0]) == "terminal" and recs[0]["n_hops"] == 3
    r = recs[0]
    assert addresses.text_of(r["tuples"]["saddr"][0].tobytes()) == "fd00:198:18::2"
    assert addresses.text_of(r["tuples"]["daddr"][0].tobytes()) == "fd00:198:18::1"
    # No IP id in IPv6: the flow label's low 16 bits; length as IPv4 counts it.
    assert r["ip_id"] == 0xA123 and r["length"] == 40 + 20 and r["hops"]["ttl"][0] == 64
    rows = expand(recs)
    assert list(rows["dst_port"]) == [8000] * 3 and list(rows["src_port"]) == [40000] * 3
    assert addresses.texts(rows["src_ip"]) == ["fd00:198:18::2"] * 3


def test_ipv6_behind_an_extension_header_is_keyed_by_addresses_alone(clean):
    """Extension headers are not followed: no ports, so a port filter does
    not match it (and nothing is misread as a port)."""
    k = clean
    k.see("trc_tc_in", frame6(0x1, 3001, next_header=0))
    k.see("trc_tc_in_ct", frame6(0x1, 3001, next_header=0))
    assert len(k.records()) == 0


def test_untraced_packets_leave_nothing(clean):
    k = clean
    k.see("trc_tc_in_ct", frame(102, 2002, dport=5201), 3)
    k.sweeper.flush()
    assert len(k.records()) == 0


def test_more_hops_than_a_slot_holds_is_emitted_in_parts(clean):
    k = clean
    packet = frame(103, 3003)
    k.see("trc_tc_in", packet, events.MAX_HOPS)
    first = k.records()
    assert len(first) == 1 and end_name(first[0]) == "full" and first[0]["n_hops"] == events.MAX_HOPS
    k.see("trc_tc_in_ct", packet)
    rest = k.records()
    assert len(rest) == 1 and end_name(rest[0]) == "terminal" and rest[0]["n_hops"] == 1
    assert rest[0]["packet_id"] == first[0]["packet_id"], "the continuation keeps the packet's id"
    rows = expand(np.concatenate([first, rest]))
    assert len(rows) == events.MAX_HOPS + 1
    assert (rows["flags"][: events.MAX_HOPS] & events.FLAG_INCOMPLETE).all()
    assert not rows["flags"][-1] & (events.FLAG_NEW_PACKET | events.FLAG_INCOMPLETE)


def test_a_journey_that_goes_quiet_is_swept_out_incomplete(clean):
    k = clean
    k.see("trc_tc_in", frame(104, 4004), 2)
    k.sweeper.sweep()
    assert len(k.records()) == 0, "not quiet yet: a later sighting could still join it"
    time.sleep(2 * k.window_ns / 1e9)
    before = k.ends()["quiet"]
    k.sweeper.sweep()
    recs = k.records()
    assert len(recs) == 1 and end_name(recs[0]) == "quiet" and recs[0]["n_hops"] == 2
    assert k.ends()["quiet"] == before + 1
    k.sweeper.sweep()
    assert len(k.records()) == 0, "emitted once"


def test_one_sweep_reaches_every_packet_cache_slot(clean):
    """A sweep is one BPF_PROG_TEST_RUN repeated over the cache's chunks
    (the walk of every sweep but each JOURNEY_WALK_EVERY-th):
    quiet journeys in the first and the last chunk, and in between, all go
    out in one sweep."""
    from tracer.kernel.program import SWEEP_CHUNK

    k = clean
    chunks = k.entries // SWEEP_CHUNK
    wanted, seq = {}, 9000  # chunk -> a frame's seq whose set falls in it
    while not ({0, chunks - 1} <= wanted.keys() and len(wanted) >= 6):  # the first, the last, four others
        seq += 1
        chunk = pcache_set_index(300, seq, k.entries) // SWEEP_CHUNK
        if chunk in (0, chunks - 1) or len(wanted) < 4:
            wanted.setdefault(chunk, seq)
    for seq in wanted.values():
        k.see("trc_tc_in", frame(300, seq), 2)
        assert pcache_holds(k, pcache_set_index(300, seq, k.entries), seq), "the kernel's set is the one computed here"
    time.sleep(2 * k.window_ns / 1e9)
    k.sweeper.sweep()
    recs = k.records()
    assert sorted(end_name(r) for r in recs) == ["quiet"] * len(wanted), sorted(wanted)
    assert all(r["n_hops"] == 2 for r in recs)


def test_one_journey_slot_walk_reaches_every_pool_slot(clean):
    """The sweep's other walk (every JOURNEY_WALK_EVERY-th sweep, and the
    flush) is one BPF_PROG_TEST_RUN repeated over the journey slots in
    chunks, every CPU's pool: quiet journeys in the first and the last slot
    of each CPU's pool, and in between, all go out in one walk. Each CPU's next pool slot is set (jpool_next) before a claim
    pinned to that CPU, so the journeys land where the test says."""
    import os

    k = clean
    table = k.bpf["jpool_next"]
    saved = list(table[table.Key(0)])
    affinity = os.sched_getaffinity(0)
    positions = sorted({0, 1, k.pool // 2, k.pool - 1})
    placed, seq = [], 9000
    try:
        for cpu in sorted(affinity):
            os.sched_setaffinity(0, {cpu})  # BPF_PROG_TEST_RUN runs here: this CPU's pool
            for pos in positions:
                table[table.Key(0)] = table.Leaf(*([pos] * len(saved)))
                seq += 1
                k.see("trc_tc_in", frame(300, seq), 2)  # claimed, then a second hop: open
                placed.append(cpu * k.pool + pos)
    finally:
        os.sched_setaffinity(0, affinity)
    if 0 in affinity and max(affinity) == k.journey_slots // k.pool - 1:
        assert {0, k.journey_slots - 1} <= set(placed), "the array's first and last journey slots"
    time.sleep(2 * k.window_ns / 1e9)
    k.sweeper.sweep_journey_slots()
    recs = k.records()
    assert sorted(end_name(r) for r in recs) == ["quiet"] * len(placed), (len(recs), placed)
    assert all(r["n_hops"] == 2 for r in recs)


def test_a_stolen_slot_emits_the_journey_it_held(clean):
    k = clean
    by_set: dict[int, list[int]] = {}
    for ip_id in range(1, 65536):
        ids = by_set.setdefault(pcache_set_index(ip_id, 5005, k.entries), [])
        ids.append(ip_id)
        if len(ids) == 3:
            break
    a, b, c = (frame(i, 5005) for i in ids)
    k.see("trc_tc_in", a)
    k.see("trc_tc_in", b)
    assert pcache_holds(k, pcache_set_index(ids[0], 5005, k.entries), 5005, ids[:2]), "a and b share a set"
    assert len(k.records()) == 0
    k.see("trc_tc_in", c)  # a set holds two packets: the oldest (a) goes out
    recs = k.records()
    assert len(recs) == 1 and end_name(recs[0]) == "evicted"
    assert int(recs[0]["ip_id"]) == ids[0] and recs[0]["n_hops"] == 1
    assert expand(recs)["flags"][0] & events.FLAG_INCOMPLETE, "shown as a journey cut short, not a whole one"
    assert k.ends()["evicted"] >= 1
    k.sweeper.flush()
    flushed = k.records()
    assert sorted(int(r["ip_id"]) for r in flushed) == sorted(ids[1:])
    assert {end_name(r) for r in flushed} == {"flushed"}


def test_a_pool_slot_that_comes_round_emits_the_journey_it_held(small):
    """Journey slots are a pool per CPU taken in turn (journey_take,
    bpf/journey.h). A journey still open when its slot comes round is
    emitted then, as evicted; the packet seen again after that is a
    continuation with the same packet id, in a slot of its own. A pool of
    SMALL_POOL comes round in a few test runs; the whole case must still fit
    in the joining window (the continuation is found by its fingerprint), so
    a run the machine stalled past it is tried again with other packets."""
    import os

    k = small
    affinity = os.sched_getaffinity(0)
    for attempt in range(10):
        seq0 = 8101 + attempt * 977 * 4096
        first = pcache_set_index(500, seq0, k.entries)
        fillers = []
        for n in range(1, 100_000):  # other packets, none in the first one's packet-cache set
            seq = seq0 + n * 4096
            if pcache_set_index(500, seq, k.entries) != first:
                fillers.append(frame(500, seq))
                if len(fillers) == k.pool:
                    break
        before = k.ends()["evicted"]
        os.sched_setaffinity(0, {min(affinity)})  # BPF_PROG_TEST_RUN runs here: one CPU's pool
        try:
            t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            k.see("trc_tc_in", frame(500, seq0))
            for packet in fillers[:-1]:
                k.see("trc_tc_in", packet)
            early = [r for r in k.records() if int(r["tcp_seq"]) == seq0]
            k.see("trc_tc_in", fillers[-1])  # takes the first journey's pool slot again
            recs = [r for r in k.records() if int(r["tcp_seq"]) == seq0]
            k.see("trc_tc_in_ct", frame(500, seq0))
            took = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - t0
            later = [r for r in k.records() if int(r["tcp_seq"]) == seq0]
        finally:
            os.sched_setaffinity(0, affinity)
        k.sweeper.flush()
        k.records()
        if took < k.window_ns // 2:
            break
    else:
        pytest.fail(f"10 tries, none within half the joining window (last {took / 1e6:.1f} ms): machine too loaded")
    assert not early, "open until its pool slot comes round"
    assert len(recs) == 1 and end_name(recs[0]) == "evicted" and recs[0]["n_hops"] == 1
    assert k.ends()["evicted"] >= before + 1
    assert len(later) == 1 and end_name(later[0]) == "terminal" and later[0]["n_hops"] == 1
    assert int(later[0]["packet_id"]) == int(recs[0]["packet_id"]), "a continuation of the same packet"


def test_a_claim_takes_its_cpus_last_slot_again_once_that_journey_ended(clean):
    """journey_take (bpf/journey.h) tries the slot its CPU's last claim took
    before the next one in turn: a journey usually ends before the next
    claim on its CPU, and that slot is still in the CPU's caches. Only a
    journey emitted and left by everybody lets it go again; one still open
    is passed over (the cursor moves), never evicted by it."""
    import os

    k = clean
    affinity = os.sched_getaffinity(0)
    cpu = min(affinity)

    os.sched_setaffinity(0, {cpu})  # BPF_PROG_TEST_RUN runs here: this CPU's pool
    try:
        n0 = pool_cursor(k, cpu)
        k.see("trc_tc_in", frame(701, 7001))
        first = pcache_jslot(k, 701, 7001)
        assert pool_cursor(k, cpu) == n0 + 1 and first == cpu * k.pool + (n0 & (k.pool - 1))
        k.see("trc_tc_in_ct", frame(701, 7001))  # ends: emitted, nobody in its slot
        k.see("trc_tc_in", frame(702, 7002))
        assert pcache_jslot(k, 702, 7002) == first and pool_cursor(k, cpu) == n0 + 1, "the ended journey's slot, again"
        k.see("trc_tc_in", frame(703, 7003))  # 702's journey is open: the next slot in turn
        assert pcache_jslot(k, 703, 7003) == cpu * k.pool + ((n0 + 1) & (k.pool - 1)) and pool_cursor(k, cpu) == n0 + 2
    finally:
        os.sched_setaffinity(0, affinity)
    recs = k.records()
    assert [(int(r["ip_id"]), end_name(r)) for r in recs] == [(701, "terminal")], "702 was not evicted"
    k.sweeper.flush()
    assert sorted((int(r["ip_id"]), end_name(r)) for r in k.records()) == [(702, "flushed"), (703, "flushed")]


def test_a_packet_id_that_wraps_starts_a_new_journey(clean):
    """Packet ids are a per-CPU 40-bit counter under the CPU number
    (new_packet_id, bpf/common.h). Set the counter just below the wrap: the
    packet that takes the last id and the one after it (the counter again
    at 0) are two whole journeys with the same CPU bits, and user space
    shows the second as a packet of its own, not a late part of the first."""
    import os

    from tracer.hold import RecordHold

    k = clean
    low = (1 << events.PACKET_ID_CPU_SHIFT) - 1
    table = k.bpf["id_seq"]
    saved = list(table[table.Key(0)])
    affinity = os.sched_getaffinity(0)
    cpu = min(affinity)
    os.sched_setaffinity(0, {cpu})  # BPF_PROG_TEST_RUN runs on this CPU: its counter is the one used
    try:
        table[table.Key(0)] = table.Leaf(*([low - 1] * len(saved)))
        a, b, c = frame(401, 7007), frame(402, 7008), frame(403, 7009)
        for packet in (a, b, c):
            k.see("trc_tc_in", packet)
        for packet in (a, b, c):
            k.see("trc_tc_in_ct", packet)
        recs = k.records()
    finally:
        os.sched_setaffinity(0, affinity)
        table[table.Key(0)] = table.Leaf(*saved)
    assert [int(r["ip_id"]) for r in recs] == [401, 402, 403]
    assert {end_name(r) for r in recs} == {"terminal"} and all(r["n_hops"] == 2 for r in recs)
    ids = [int(r["packet_id"]) for r in recs]
    cpu_bits = (cpu + 1) << events.PACKET_ID_CPU_SHIFT
    assert ids == [cpu_bits | low, cpu_bits | 0, cpu_bits | 1], [hex(i) for i in ids]
    rows = expand(recs)
    assert len(rows) == 6 and [len(set(rows["packet_id"][i:i + 2])) for i in (0, 2, 4)] == [1, 1, 1]
    assert all(rows["flags"][i] & events.FLAG_NEW_PACKET for i in (0, 2, 4))
    hold = RecordHold()
    hold.add(recs[:1])
    assert len(hold.pop_complete(0, 1 << 62)) == 1
    assert len(hold.add(recs[1:])) == 0 and hold.late == 0, "after the wrap: new packets, not late parts"
    assert sorted(int(i) for i in hold.pop_complete(0, 1 << 62)["packet_id"]) == sorted(ids[1:])


def test_a_full_ring_buffer_counts_lost_journeys():
    """Nobody reading for a while: what does not fit is counted per sensor,
    what fits reads back whole."""
    k = Kernel(pages=1)  # 4 KiB: a dozen 320-byte records
    try:
        n = 40
        for i in range(n):
            k.see("trc_tc_in_ct", frame(1000 + i, 9009 + i))  # each ends at once (container ingress)
        table = k.bpf["counters"]
        tc = events.SENSORS.index("tc")
        emitted, lost = (int(sum(table[table.Key(2 * tc + x)])) for x in (0, 1))
        recs = k.records()
        assert emitted + lost == n and lost > 0 and emitted == len(recs) > 0
        assert {end_name(r) for r in recs} == {"terminal"} and all(r["n_hops"] == 1 for r in recs)
        assert k.ends()["terminal"] == n, "counted by why it ended, queued or not"
    finally:
        k.close()


def test_a_ring_buffer_full_while_a_long_journey_runs_loses_whole_records_and_recovers():
    """The reader stalls with a packet's journey in parts: its first part
    (a full slot) gets out, then the ring fills and its continuation is
    lost. Counted per sensor; what is read is whole records only, the first
    part marked incomplete (never shown as a complete journey); once the
    reader catches up, journeys flow again."""
    k = Kernel(pages=1)  # 4 KiB: a dozen 320-byte records
    try:
        table = k.bpf["counters"]
        tc = events.SENSORS.index("tc")

        def lost() -> int:
            return int(sum(table[table.Key(2 * tc + 1)]))

        long = frame(2000, 12000)
        k.see("trc_tc_in", long, events.MAX_HOPS)  # its first part: out, ring not full yet
        i = 0
        while lost() == 0:  # nobody reads: fill the ring
            k.see("trc_tc_in_ct", frame(2100 + i, 12100 + i))
            i += 1
            assert i < 100, "a 4 KiB ring holds a dozen records"
        k.see("trc_tc_in_ct", long)  # its continuation: the ring is full
        assert lost() == 2, "the filler that did not fit and the continuation"
        recs = k.records()
        assert len(recs) == 1 + i - 1, (len(recs), i)
        first = recs[0]
        assert int(first["ip_id"]) == 2000 and end_name(first) == "full" and first["n_hops"] == events.MAX_HOPS
        assert {end_name(r) for r in recs[1:]} == {"terminal"} and all(r["n_hops"] == 1 for r in recs[1:])
        rows = expand(recs)
        ids = rows["packet_id"] == first["packet_id"]
        assert ids.sum() == events.MAX_HOPS and (rows["flags"][ids] & events.FLAG_INCOMPLETE).all()
        assert not (rows["flags"][~ids] & events.FLAG_INCOMPLETE).any()
        k.see("trc_tc_in_ct", frame(3000, 13000))
        again = k.records()
        assert len(again) == 1 and end_name(again[0]) == "terminal" and int(again[0]["ip_id"]) == 3000
        assert lost() == 2
    finally:
        k.close()


def test_a_failed_claim_does_not_reopen_a_journey_closed_while_it_held_the_slot(clean):
    """A claim holds the packet-cache slot it takes (PCACHE_BUSY_BIT); a
    close meanwhile cannot unmark the slot (journey_unmark fails on the held
    word). If the claim then finds no free journey slot, it lets the packet-
    cache slot go: with the open bit only if the journey the slot names is
    still open, else the closed packet's later sightings would be routed to
    its emitted journey and refused. Driven on one CPU: packet a's slot is
    held from here (the bit written in), the flush closes a's journey, the
    word goes back to the open one the claim will read, and the claim
    (packet b, a's set) finds both pool slots it may take busy (written
    here too: the one its CPU's last claim took, closed by the flush, and
    the next in turn)."""
    import os

    k = clean
    seq = 6006
    by_set: dict[int, list[int]] = {}
    for ip_id in range(1, 65536):
        ids = by_set.setdefault(pcache_set_index(ip_id, seq, k.entries), [])
        ids.append(ip_id)
        if len(ids) == 3:
            break
    a, a2, b = ids
    index = pcache_set_index(a, seq, k.entries)
    pcache, journeys = k.bpf["pcache"], k.bpf["journeys"]
    affinity = os.sched_getaffinity(0)
    cpu = min(affinity)
    os.sched_setaffinity(0, {cpu})  # BPF_PROG_TEST_RUN runs here: this CPU's pool
    saved: list = []  # (key, busy) to put back
    try:
        k.see("trc_tc_in", frame(a, seq))
        k.see("trc_tc_in", frame(a2, seq))  # the set is full; a's slot is the older
        assert pcache_holds(k, index, seq, [a, a2]), "a and a2 share a set"
        slot_key = next(pcache.Key(i) for i in (index, index + 1)
                        if socket.ntohs(pcache[pcache.Key(i)].fp.ip_id) == a)
        open_word = pcache[slot_key].packet_id
        assert open_word & events.JOURNEY_OPEN_BIT and not open_word & events.PCACHE_BUSY_BIT
        held = pcache[slot_key]
        held.packet_id = open_word | events.PCACHE_BUSY_BIT
        pcache[slot_key] = held
        k.sweeper.flush()  # closes a's journey (and a2's); the unmark fails on the held word
        emitted = {int(r["ip_id"]): int(r["packet_id"]) for r in k.records()}
        a_id = open_word & ~events.JOURNEY_OPEN_BIT
        assert emitted.get(a) == a_id, emitted
        assert pcache[slot_key].packet_id == open_word | events.PCACHE_BUSY_BIT, "nobody writes a held slot"
        word = pcache[slot_key]
        word.packet_id = open_word  # what the claim reads before it locks
        pcache[slot_key] = word
        n = pool_cursor(k, cpu)
        for pos in (n - 1, n):  # somebody in both slots the claim may take: journey_take fails
            key = journeys.Key(cpu * k.pool + (pos & (k.pool - 1)))
            j = journeys[key]
            saved.append((key, j.busy))
            j.busy = JOURNEY_CLOSED | 1
            journeys[key] = j
        failed = k.faults()["claim_failed"]
        k.see("trc_tc_in", frame(b, seq))
    finally:
        os.sched_setaffinity(0, affinity)
        for key, busy in saved:
            j = journeys[key]
            j.busy = busy
            journeys[key] = j
    assert k.faults()["claim_failed"] == failed + 1, "b's claim failed for want of a journey slot"
    assert len(k.records()) == 0
    assert pcache[slot_key].packet_id == a_id, (
        f"let go as {pcache[slot_key].packet_id:#x}: a's journey was closed, the slot must say so ({a_id:#x})")


def test_the_packet_cache_walk_leaves_a_held_slot_alone(clean):
    """A held packet-cache slot (PCACHE_BUSY_BIT: a claim or continuation
    writing it) is skipped by the sweep's packet-cache walk, not entered:
    its fp.jslot may be being rewritten, and an entry moves the busy count
    of whatever journey slot it names (a claim taking that slot then
    fails). Probed white-box: the journey slot is given the id the walk
    would enter with (the word without the open bit, busy bit kept), so an
    entry would succeed and emit it; skipped, nothing goes out. The slot
    then let go, the journey is flushed as usual."""
    k = clean
    seq, ip_id = 6106, 611
    k.see("trc_tc_in", frame(ip_id, seq))
    index = pcache_set_index(ip_id, seq, k.entries)
    pcache, journeys = k.bpf["pcache"], k.bpf["journeys"]
    slot_key = next(pcache.Key(i) for i in (index, index + 1)
                    if socket.ntohs(pcache[pcache.Key(i)].fp.ip_id) == ip_id)
    slot = pcache[slot_key]
    open_word = slot.packet_id
    assert open_word & events.JOURNEY_OPEN_BIT
    jkey = journeys.Key(slot.fp.jslot)
    journey_id = open_word & ~events.JOURNEY_OPEN_BIT

    def set_ids(word: int, jid: int) -> None:
        s = pcache[slot_key]
        s.packet_id = word
        pcache[slot_key] = s
        j = journeys[jkey]
        j.packet_id = jid
        journeys[jkey] = j

    set_ids(open_word | events.PCACHE_BUSY_BIT, journey_id | events.PCACHE_BUSY_BIT)
    try:
        k.sweeper._arm(0, 0)  # the packet-cache walk, every open slot whatever its age
        k.sweeper._run()
        walked = k.records()
    finally:
        set_ids(open_word, journey_id)
    assert len(walked) == 0, f"the walk entered a held slot's journey: {[hex(int(r['packet_id'])) for r in walked]}"
    k.sweeper.flush()
    recs = k.records()
    assert [int(r["packet_id"]) for r in recs] == [journey_id] and end_name(recs[0]) == "flushed"
