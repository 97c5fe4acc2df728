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

import re
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tracer import addresses, events
from tracer.expand import expand

PAGES = 64
HOOK_TC_INGRESS = events.HOOKS.index("tc_ingress")


def frame(ip_id: int, seq: int, dport: int = 8000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, seq, 0, 5 << 4, 0x10, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, ip_id, 0, 64, 6, 0,
                     socket.inet_aton("198.18.0.2"), socket.inet_aton("198.18.0.1"))
    return b"\x02" * 12 + b"\x08\x00" + ip + tcp


def frame6(flow: int, seq: int, dport: int = 8000, next_header: int = 6) -> bytes:
    """Ethernet + IPv6 + TCP: [fd00:198:18::2]:40000 -> [fd00:198:18::1]:dport
    (next_header 0 puts a hop-by-hop options header before the TCP header)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, seq, 0, 5 << 4, 0x10, 65535, 0, 0)
    ext = b"\x06\x00" + b"\x01\x04\x00\x00\x00\x00" if next_header == 0 else b""
    ip = struct.pack("!IHBB16s16s", 6 << 28 | flow, len(ext) + len(tcp), next_header, 64,
                     addresses.packed("fd00:198:18::2")[:16], addresses.packed("fd00:198:18::1"))
    return b"\x02" * 12 + b"\x86\xdd" + ip + ext + tcp


def _packet_group() -> int:
    """bpf/common.h's PACKET_GROUP, read from the source (a copy could drift)."""
    text = (Path(__file__).resolve().parents[2] / "bpf" / "common.h").read_text()
    return int(re.search(r"^#define PACKET_GROUP (\d+)$", text, re.M).group(1))


PACKET_GROUP = _packet_group()


def pcache_set_index(ip_id: int, seq: int, entries: int) -> int:
    """The set pcache_set (bpf/common.h) picks for frame(ip_id, seq); the
    tests that use it check the kernel agrees (pcache_holds)."""
    a = struct.unpack("<Q", struct.pack("!II", seq, 0))[0]
    b = struct.unpack("<Q", struct.pack("!HH", ip_id, 40) + struct.pack("<BBH", 6, 0x10, 0))[0]  # proto, flags, jslot 0
    m = (1 << 64) - 1
    h = ((a ^ (b * 0x9E3779B97F4A7C15 & m)) * 0xC2B2AE3D27D4EB4F) & m
    group = ((seq >> 12) * 0x9E3779B97F4A7C15 & m) >> 32 if seq else h >> 32  # TCP: seq xor ack (0 here), to 4 KiB
    return (group & (entries - 1) & ~(PACKET_GROUP - 1)) | ((h >> 32) & (PACKET_GROUP - 2))


def pcache_holds(k, index: int, seq: int, ip_ids: list[int] | None = None) -> bool:
    """Whether the kernel's packet-cache set at ``index`` holds frames of
    ``seq`` (and, if given, exactly the IP ids ``ip_ids``)."""
    slots = [k.bpf["pcache"][k.bpf["pcache"].Key(i)] for i in (index, index + 1)]
    held = [s for s in slots if socket.ntohl(s.fp.seq) == seq]
    if ip_ids is None:
        return bool(held)
    return sorted(socket.ntohs(s.fp.ip_id) for s in held) == sorted(ip_ids)


class Kernel:
    def __init__(self, pages: int = PAGES, pool: int | None = None) -> None:
        """``pool``: journey slots per CPU (JOURNEY_POOL) if not the
        shipped number: a small pool comes round in a few claims."""
        from tracer.drain import RingBufferDrain
        from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun
        from tracer.kernel.cpus import cpu_id_bound
        from tracer.kernel.program import FP_WINDOW_NS, SWEEP_CHUNK, Filter, Program, journey_pool
        from tracer.kernel.sweep import JourneySweeper
        from tracer.sensors.drops import DropSensor
        from tracer.sensors.netfilter import NetfilterSensor
        from tracer.sensors.tc import TcSensor

        self.window_ns = FP_WINDOW_NS
        program = Program([TcSensor([]), NetfilterSensor(), DropSensor()], Filter(ports=(8000,)), ringbuf_pages=pages)
        self.entries = program.packet_entries
        cflags = program.cflags()
        if pool is not None:
            cflags = [f for f in cflags if not f.startswith(("-DJOURNEY_POOL=", "-DJOURNEY_SLOTS="))]
            cflags += [f"-DJOURNEY_POOL={pool}", f"-DJOURNEY_SLOTS={pool * cpu_id_bound()}"]
        self.pool = pool or journey_pool(cpu_id_bound())
        self.bpf = program.compile(cflags=cflags)
        program.filter.fill_maps(self.bpf)
        self.fd = {name: self.bpf.load_func(name, BPF_PROG_TYPE_SCHED_CLS).fd for name in ("trc_tc_in", "trc_tc_in_ct")}
        self.run_cls = ProgTestRun
        self.drain = RingBufferDrain(self.bpf["events"].map_fd, pages * 4096, sample=events.JOURNEY_DTYPE)
        self.sweeper = JourneySweeper(self.bpf, self.entries, SWEEP_CHUNK, FP_WINDOW_NS)

    def see(self, prog: str, packet: bytes, times: int = 1) -> None:
        for _ in range(times):
            self.run_cls(self.fd[prog], packet).run(1)

    def records(self) -> np.ndarray:
        return self.drain.read()

    def ends(self) -> dict[str, int]:
        table = self.bpf["journey_ends"]
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(events.JOURNEY_ENDS) if name}

    def faults(self) -> dict[str, int]:
        """What the kernel left out rather than write a wrong journey."""
        table = self.bpf["journey_ends"]
        base = len(events.JOURNEY_ENDS)
        return {name: int(sum(table[table.Key(base + i)])) for i, name in enumerate(events.JOURNEY_FAULTS)}

    def close(self) -> None:
        self.drain.close()
        self.bpf.cleanup()


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


def end_name(record) -> str:
    return events.JOURNEY_ENDS[int(record["end"])]


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


def test_one_sweep_reaches_every_slot(clean):
    """A sweep is one BPF_PROG_TEST_RUN repeated over the cache's chunks:
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


SMALL_POOL = 4  # journey slots per CPU in the `small` kernel: its pool comes round every 4 claims


@pytest.fixture(scope="module")
def small_kernel():
    k = Kernel(pool=SMALL_POOL)
    yield k
    k.close()


@pytest.fixture
def small(small_kernel):
    small_kernel.sweeper.flush()
    small_kernel.records()
    yield small_kernel
    small_kernel.sweeper.flush()
    small_kernel.records()


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


def frame_marked(i: int, seq: int) -> bytes:
    """frame() whose source port and TTL say which packet it is (i): a hop of
    it written into another packet's journey shows as a second address tuple
    or a foreign TTL."""
    sport, ttl = 20000 + i % 30000, 1 + i % 250
    tcp = struct.pack("!HHIIBBHHH", sport, 8000, seq, 0, 5 << 4, 0x10, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, ttl, 6, 0,
                     socket.inet_aton("198.18.0.2"), socket.inet_aton("198.18.0.1"))
    return b"\x02" * 12 + b"\x08\x00" + ip + tcp


CONTENDED = 1  # guard refusals the cross-CPU case waits for
MAX_CLAIMS = 900_000  # its packets' seq (base + i * 4096) must not wrap


def test_sightings_on_two_cpus_never_put_a_hop_in_another_packets_journey(small):
    """The cross-CPU case of the pool: one thread pinned to one CPU claims
    packet after packet (its pool of SMALL_POOL comes round every few
    claims), another pinned to a second CPU keeps appending hops to the
    packets the first just claimed, whose journey slots are in the first
    CPU's pool. BPF_PROG_TEST_RUN runs a tc program on the calling thread's
    CPU (its cpu/flags options are for raw tracepoints only), so pinned
    threads are how two CPUs drive one flow at once. Every record must hold
    one packet's hops only: its own TTL at each hop, its own addresses (one
    tuple); what could not be written is counted, and the kernel's own
    check after each write (mismatch) stays 0."""
    import os
    import threading

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: no cross-CPU case to drive")
    k = small
    base = 0x10000000
    faults_before = k.faults()
    latest = [-1]
    stop = threading.Event()
    errors: list[BaseException] = []

    def seq_of(i: int) -> int:
        return (base + i * 4096) & 0xFFFFFFFF

    def claimer() -> None:
        try:
            os.sched_setaffinity(0, {cpus[0]})
            i = 0
            while not stop.is_set() and i < MAX_CLAIMS:
                k.run_cls(k.fd["trc_tc_in"], frame_marked(i, seq_of(i))).run(1)
                latest[0] = i
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def appender() -> None:
        try:
            os.sched_setaffinity(0, {cpus[1]})
            r = 0
            while not stop.is_set():
                # The packet just claimed, and in turn the ones before it
                # whose pool slots the claimer is about to take back: where
                # the two CPUs meet in one slot.
                i = latest[0] - r % k.pool
                r += 1
                if i >= 0:  # 4 hops in one test run: the full path, then the tc fast path
                    k.run_cls(k.fd["trc_tc_in"], frame_marked(i, seq_of(i))).run(4)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=claimer), threading.Thread(target=appender)]
    recs = []
    for t in threads:
        t.start()
    # At least 5 s (the old unguarded pool mixed a record in about one 3 s run
    # of four here), then on until the guard was contended at least
    # CONTENDED times (a hop refused or a claim failed: the two CPUs met in
    # one slot), up to 60 s: a run where they never met proves nothing.
    start = time.monotonic()

    def contended() -> int:
        now = k.faults()
        return sum(now[name] - faults_before[name] for name in ("hop_refused", "claim_failed"))

    while True:
        time.sleep(0.02)
        recs.append(k.records())  # the ring holds a few hundred: read as they come
        elapsed = time.monotonic() - start
        if elapsed >= 60.0 or latest[0] >= MAX_CLAIMS - 1 or (elapsed >= 5.0 and contended() >= CONTENDED):
            break
    stop.set()
    for t in threads:
        t.join()
    k.sweeper.flush()
    recs.append(k.records())
    assert not errors, errors
    recs = np.concatenate(recs)
    faults = {name: n - faults_before[name] for name, n in k.faults().items()}
    assert len(recs) > 1000, len(recs)
    wrong = []
    for r in recs:
        i = (int(r["tcp_seq"]) - base) % (1 << 32) // 4096
        n = int(r["n_hops"])
        ttls = {int(h["ttl"]) for h in r["hops"][:n]}
        sport = int(r["tuples"][0]["sport"])  # big-endian in the record: events.TUPLE_FIELDS
        if ttls != {1 + i % 250} or int(r["n_tuples"]) != 1 or sport != 20000 + i % 30000 \
                or int(r["ip_id"]) != i & 0xFFFF:
            wrong.append((i, end_name(r), n, sorted(ttls), int(r["n_tuples"]), sport))
    assert not wrong, f"{len(wrong)} of {len(recs)} records mix packets, e.g. {wrong[:5]}"
    assert faults["mismatch"] == 0, faults
    met = faults["hop_refused"] + faults["claim_failed"]
    assert met >= CONTENDED, (
        f"the two CPUs never met in a journey slot in {elapsed:.0f} s (hop_refused + claim_failed = {met}, "
        f"{len(recs)} records, faults {faults}): the guard was not exercised, the case proves nothing on this run")
    # The case was driven: journeys the second CPU appended to were taken
    # back by the first CPU's pool (evicted with more than their first hop).
    evicted_appended = sum(1 for r in recs if end_name(r) == "evicted" and int(r["n_hops"]) > 1)
    assert evicted_appended > 0, (len(recs), faults)


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
