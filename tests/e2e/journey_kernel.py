"""The kernel side of journeys driven packet by packet (bpf/journey.h): the
real tc programs, built as `tracer trace --port 8000` builds them, run on
crafted frames through BPF_PROG_TEST_RUN, records read from the real ring
buffer. Shared by test_journey_kernel.py (one outcome per case) and
test_journey_races.py (two CPUs at once)."""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import numpy as np

from tracer import addresses, events

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


def pcache_jslot(k, ip_id: int, seq: int) -> int:
    """The journey slot (fp.jslot) the packet-cache slot of frame(ip_id, seq) names."""
    pcache = k.bpf["pcache"]
    index = pcache_set_index(ip_id, seq, k.entries)
    for i in (index, index + 1):
        slot = pcache[pcache.Key(i)]
        if socket.ntohs(slot.fp.ip_id) == ip_id and socket.ntohl(slot.fp.seq) == seq:
            return int(slot.fp.jslot)
    raise AssertionError(f"packet {ip_id}/{seq} not in the packet cache")


def pool_cursor(k, cpu: int) -> int:
    """CPU ``cpu``'s journey-pool cursor (jpool_next): its low bits are the
    next slot in turn, the one before it the slot its last claim took."""
    nexts = k.bpf["jpool_next"]
    return int(list(nexts[nexts.Key(0)])[cpu])


class Kernel:
    def __init__(self, pages: int = PAGES, pool: int | None = None) -> None:
        """``pool``: journey slots per CPU (JOURNEY_POOL) if not the
        shipped number: a small pool comes round in a few claims."""
        from tracer.drain import RingBufferDrain
        from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun
        from tracer.kernel.cpus import cpu_id_bound
        from tracer.kernel.kernel_filter import Filter
        from tracer.kernel.program import FP_WINDOW_NS, Program, journey_pool
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
        self.journey_slots = self.pool * cpu_id_bound()
        self.bpf = program.compile(cflags=cflags)
        program.filter.fill_maps(self.bpf)
        self.fd = {name: self.bpf.load_func(name, BPF_PROG_TYPE_SCHED_CLS).fd for name in ("trc_tc_in", "trc_tc_in_ct")}
        self.run_cls = ProgTestRun
        self.drain = RingBufferDrain(self.bpf["events"].map_fd, pages * 4096, sample=events.JOURNEY_DTYPE)
        self.sweeper = JourneySweeper(self.bpf, self.entries, self.journey_slots, FP_WINDOW_NS)

    def see(self, prog: str, packet: bytes, times: int = 1) -> None:
        for _ in range(times):
            self.run_cls(self.fd[prog], packet).run(1)

    def records(self) -> np.ndarray:
        return self.drain.read()

    def ends(self) -> dict[str, int]:
        table = self.bpf["journey_ends"]
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(events.JOURNEY_ENDS) if name}

    def opened(self) -> int:
        """Journeys the kernel opened (journey_ends[0]: claims and continuations)."""
        table = self.bpf["journey_ends"]
        return int(sum(table[table.Key(0)]))

    def ring_lost(self) -> int:
        """Records the ring buffer had no room for, all sensors."""
        table = self.bpf["counters"]
        return sum(int(sum(table[table.Key(2 * i + 1)])) for i in range(len(events.SENSORS)))

    def balance(self) -> tuple[int, int]:
        """(opened, emitted): after a flush with no traffic, every journey
        opened must have been emitted."""
        return self.opened(), sum(self.ends().values())

    def faults(self) -> dict[str, int]:
        """What the kernel left out rather than write a wrong journey."""
        table = self.bpf["journey_ends"]
        base = len(events.JOURNEY_ENDS)
        return {name: int(sum(table[table.Key(base + i)])) for i, name in enumerate(events.JOURNEY_FAULTS)}

    def close(self) -> None:
        self.drain.close()
        self.bpf.cleanup()



def end_name(record) -> str:
    return events.JOURNEY_ENDS[int(record["end"])]



def frame_marked(i: int, seq: int) -> bytes:
    """frame() whose source port and TTL say which packet it is (i): a hop of
    it written into another packet's journey shows as a second address tuple
    or a foreign TTL."""
    sport, ttl = 20000 + i % 30000, 1 + i % 250
    tcp = struct.pack("!HHIIBBHHH", sport, 8000, seq, 0, 5 << 4, 0x10, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, ttl, 6, 0,
                     socket.inet_aton("198.18.0.2"), socket.inet_aton("198.18.0.1"))
    return b"\x02" * 12 + b"\x08\x00" + ip + tcp


SMALL_POOL = 4  # journey slots per CPU in a small kernel: its pool comes round every 4 claims


ID_WINDOW = 100_000  # packet ids remembered (at least this many, at most twice): ids are never reused this soon


class MarkedRecords:
    """Records of frame_marked packets, checked batch by batch as they are
    read (a cross-CPU case reads millions: none is kept): each must hold one
    packet's hops only, its own TTL at every hop, its own addresses (one
    tuple), its own IP id. ``which`` gives each record's packet number i
    from something other than the marks checked here (a record's sequence
    number, or its source port: not the IP id, which would then be checked
    against itself).

    Across records: a packet id must name one packet. A continuation started
    under another packet's id (the record is then consistent in itself: its
    TTL, addresses and IP id are all the packet that started it) shows as a
    second packet number for an id seen before. The last ID_WINDOW to
    2 * ID_WINDOW ids are remembered (a journey's parts go out within a few
    claims of each other, or at the flush at the end of a run)."""

    def __init__(self, which) -> None:
        self.which = which
        self.count = 0
        self.wrong = 0
        self.examples: list[tuple] = []
        self.ids: dict[int, int] = {}  # packet id -> packet number, the newest ids
        self.older_ids: dict[int, int] = {}
        self.shared_ids = 0  # records whose packet id an earlier record gave another packet
        self.shared_examples: list[tuple] = []
        self.ends: dict[str, int] = {}
        self.evicted_first_hop_only = 0  # evicted with only the hop that gave the packet its id
        self.evicted_appended = 0  # evicted with more than their first hop

    def add(self, recs: np.ndarray) -> None:
        if not len(recs):
            return
        i = self.which(recs)
        n = recs["n_hops"].astype(np.int64)
        used = np.arange(events.MAX_HOPS)[None, :] < n[:, None]
        ttl_ok = ((recs["hops"]["ttl"] == (1 + i % 250)[:, None]) | ~used).all(axis=1)
        ok = (i >= 0) & (n > 0) & ttl_ok & (recs["n_tuples"] == 1) \
            & (recs["tuples"][:, 0]["sport"] == 20000 + i % 30000) & (recs["ip_id"] == i & 0xFFFF)
        self._check_ids(recs["packet_id"].tolist(), i.tolist(), recs["end"].tolist())
        self.count += len(recs)
        self.wrong += int((~ok).sum())
        for r, k in zip(recs[~ok][:5 - len(self.examples)], i[~ok]):
            self.examples.append((int(k), end_name(r), int(r["n_hops"]), int(r["n_tuples"]),
                                  sorted({int(h["ttl"]) for h in r["hops"][:int(r["n_hops"])]})))
        for e, c in zip(*np.unique(recs["end"], return_counts=True)):
            name = events.JOURNEY_ENDS[int(e)] or "none"
            self.ends[name] = self.ends.get(name, 0) + int(c)
        evicted = recs["end"] == events.JOURNEY_ENDS.index("evicted")
        first = (n > 0) & (recs["hops"][:, 0]["code"] & 0x80 != 0)
        self.evicted_first_hop_only += int((evicted & (n == 1) & first).sum())
        self.evicted_appended += int((evicted & (n > 1)).sum())

    def _check_ids(self, packet_ids: list[int], packets: list[int], ends: list[int]) -> None:
        for pid, i, end in zip(packet_ids, packets, ends):
            seen = self.ids.get(pid)
            if seen is None:
                seen = self.older_ids.get(pid)
            if seen is None:
                self.ids[pid] = i
            elif seen != i:
                self.shared_ids += 1
                if len(self.shared_examples) < 5:
                    self.shared_examples.append((hex(pid), seen, i, events.JOURNEY_ENDS[end]))
        if len(self.ids) >= ID_WINDOW:
            self.older_ids, self.ids = self.ids, {}

    def problem(self) -> str:
        out = []
        if self.wrong:
            out.append(f"{self.wrong} of {self.count} records mix packets, e.g. {self.examples}")
        if self.shared_ids:
            out.append(f"{self.shared_ids} of {self.count} records carry a packet id an earlier record gave another "
                       f"packet, e.g. (id, first packet, this packet, end) {self.shared_examples}")
        return "; ".join(out)
