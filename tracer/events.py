"""The one definition of the event record.

Every sensor writes the same fixed-size C struct into the BPF ring buffer. The C
struct text, the numpy dtype that views raw ring-buffer bytes, and the Arrow
schema of a capture are all generated from ``RAW_FIELDS`` below, so they cannot
drift apart.

Raw fields that the kernel copies straight from packet headers (addresses,
ports, ids, sequence numbers) stay in network byte order in the struct and are
declared big-endian in the dtype: the BPF programs do no byte swapping.
Addresses are 16 bytes (``struct trc_addr``): IPv6 as is, IPv4 as
IPv4-mapped IPv6 (``::ffff:a.b.c.d``); tracer/addresses.py formats them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# Codes shared with the BPF programs (emitted as #defines).
HOOKS = (
    None,  # 0: unused
    "tc_ingress",
    "tc_egress",
    "nf_prerouting",
    "nf_input",
    "nf_forward",
    "nf_output",
    "nf_postrouting",
    "drop",
)
NAT_STAGES = (None, "before", "after")
# Interface roles, where a sighting happened (the if_role column): the words
# are defined here and nowhere else. The kernel codes the first four
# (ROLE_*, tracer/kernel/hop_codes.py); OTHER is any other interface (lo, one
# that is down, one user space could not name).
EXTERNAL, BRIDGE, VETH, CONTAINER, OTHER = "external", "bridge", "veth", "container", "other"
ROLES = (EXTERNAL, BRIDGE, VETH, CONTAINER)
DIRECTIONS = (None, "original", "reply")
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6"}
# Protocols whose "ports" are an echo id and sequence (shown without ports).
ICMP_NUMBERS = frozenset({1, 58})
ICMP_NAMES = frozenset({"icmp", "icmp6"})
PROTOCOL_NUMBERS = {name: num for num, name in PROTOCOLS.items()}

# Sensors count emitted and lost records per sensor (index into the counters
# map). "sweep" is the program user space runs to emit journeys that went
# quiet without ending (bpf/journey.h).
SENSORS = ("tc", "netfilter", "drop", "sweep")

# packet_id = (cpu + 1) << PACKET_ID_CPU_SHIFT | per-CPU counter (bpf/common.h):
# unique without atomics, growing per CPU, below 2^53 for JSON readers.
PACKET_ID_CPU_SHIFT = 40

# Bits of the ``flags`` field.
FLAG_IN_CONTAINER_NS = 1  # tc program attached inside a container's netns
FLAG_NEW_PACKET = 2  # this sighting gave the packet its id
FLAG_INCOMPLETE = 4  # sighting of a journey the kernel emitted without seeing it end



_DICT_STR = pa.dictionary(pa.int32(), pa.string())
_ARROW_INTS = {"u1": pa.uint8(), "u2": pa.uint16(), "u4": pa.uint32(), "u8": pa.uint64()}


@dataclass(frozen=True)
class RawField:
    name: str
    ctype: str
    dtype: str  # numpy type string; '>' = network byte order in the struct
    doc: str
    # The capture column holds the value decoded to text (an index's name,
    # an address), dictionary-encoded, instead of the number.
    decoded: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """The type of its column in EVENT_SCHEMA."""
        return _DICT_STR if self.decoded else _ARROW_INTS[self.dtype[-2:]]


# Ordered for natural alignment (8-byte, then 4, 2, 1); the struct is padded to
# a multiple of 8 so ring-buffer records stay fixed-size and aligned.
RAW_FIELDS: tuple[RawField, ...] = (
    RawField("ktime_ns", "u64", "<u8", "bpf_ktime_get_ns() at the sighting"),
    RawField("skb", "u64", "<u8", "sk_buff address (0 where the sensor cannot see it: tc)"),
    RawField("packet_id", "u64", "<u8", "id given in the kernel by the first sensor that saw the packet"),
    RawField("flow_id", "u64", "<u8", "nf_conn address of the packet's connection (0 = not known at this hop)"),
    RawField("src_ip", "addr", "(16,)u1", "source as seen at this hop (IPv4-mapped for IPv4)", decoded=True),
    RawField("dst_ip", "addr", "(16,)u1", "destination as seen at this hop", decoded=True),
    RawField("drop_reason", "u32", "<u4", "skb_drop_reason for drop rows", decoded=True),
    RawField("netns", "u32", "<u4", "network namespace inode (0 = resolve from the attachment)"),
    RawField("ifindex", "u32", "<u4", "device of the sighting (nf: in-device at PRE/INPUT/FORWARD, out-device at OUTPUT/POST)"),
    RawField("out_ifindex", "u32", "<u4", "nf: out-device where known"),
    RawField("tcp_seq", "u32", ">u4", "TCP sequence number"),
    RawField("tcp_ack", "u32", ">u4", "TCP acknowledgement number"),
    RawField("src_port", "u16", ">u2", "L4 source port (ICMP: echo id)"),
    RawField("dst_port", "u16", ">u2", "L4 destination port (ICMP: echo sequence)"),
    RawField("ip_id", "u16", ">u2", "IPv4 identification (IPv6: the flow label's low 16 bits)"),
    RawField("length", "u16", ">u2", "IP total length (IPv6: payload length + 40)"),
    RawField("cpu", "u16", "<u2", "CPU that saw the packet"),
    RawField("hook", "u8", "u1", "index into HOOKS", decoded=True),
    RawField("nat_stage", "u8", "u1", "index into NAT_STAGES", decoded=True),
    RawField("direction", "u8", "u1", "index into DIRECTIONS (conntrack direction)", decoded=True),
    RawField("protocol", "u8", "u1", "IP protocol number", decoded=True),
    RawField("ttl", "u8", "u1", "IPv4 TTL (IPv6: hop limit)"),
    RawField("tcp_flags", "u8", "u1", "TCP flags byte (FIN=1 ... CWR=128)"),
    RawField("flags", "u8", "u1", "FLAG_* bits"),
    RawField("tcp_doff", "u8", "u1", "TCP data offset: header length in 32-bit words (0 = not TCP)"),
)

_C_SIZES = {"u64": 8, "u32": 4, "u16": 2, "u8": 1, "addr": 16}
# C type of each ctype: an address is struct trc_addr (two u64 words).
_C_TYPES = {"addr": "struct trc_addr"}
ADDR_C = "struct trc_addr {\n    u64 hi;\n    u64 lo;\n};"
_UNPADDED = sum(_C_SIZES[f.ctype] for f in RAW_FIELDS)
EVENT_SIZE = (_UNPADDED + 7) // 8 * 8
_PAD = EVENT_SIZE - _UNPADDED


def c_definitions() -> str:
    """C text for the BPF programs: the event struct and the shared codes."""
    lines = ["/* generated by tracer/events.py: do not edit */", ADDR_C, "struct event {"]
    lines += [f"    {_C_TYPES.get(f.ctype, f.ctype)} {f.name};" for f in RAW_FIELDS]
    if _PAD:
        lines.append(f"    u8 _pad[{_PAD}];")
    lines.append("};")
    for i, hook in enumerate(HOOKS):
        if hook:
            lines.append(f"#define HOOK_{hook.upper()} {i}")
    for i, stage in enumerate(NAT_STAGES):
        if stage:
            lines.append(f"#define NAT_{stage.upper()} {i}")
    for i, d in enumerate(DIRECTIONS):
        if d:
            lines.append(f"#define DIR_{d.upper()} {i}")
    for i, s in enumerate(SENSORS):
        lines.append(f"#define SENSOR_{s.upper()} {i}")
    lines.append(f"#define N_SENSORS {len(SENSORS)}")
    lines.append(f"#define FLAG_IN_CONTAINER_NS {FLAG_IN_CONTAINER_NS}")
    lines.append(f"#define FLAG_NEW_PACKET {FLAG_NEW_PACKET}")
    lines.append(f"#define FLAG_INCOMPLETE {FLAG_INCOMPLETE}")
    lines.append(f"#define EVENT_SIZE {EVENT_SIZE}")
    lines.append(f"#define PACKET_ID_CPU_SHIFT {PACKET_ID_CPU_SHIFT}")
    return "\n".join(lines) + "\n"


RAW_DTYPE = np.dtype(
    {
        "names": [f.name for f in RAW_FIELDS],
        "formats": [f.dtype for f in RAW_FIELDS],
        "offsets": list(np.cumsum([0] + [_C_SIZES[f.ctype] for f in RAW_FIELDS[:-1]])),
        "itemsize": EVENT_SIZE,
    }
)


def empty_raw(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=RAW_DTYPE)


# --- the journey record ---------------------------------------------------------
#
# In trace/record mode the kernel assembles each packet's journey in a slot of
# its own (bpf/journey.h) and emits one record per packet: the facts NAT does
# not change once, the addresses once per NAT step (``tuples``), and per
# sighting a compact hop. The slot and the record are the same struct.
# tracer/expand.py turns records back into the sighting rows above.

MAX_HOPS = 16  # sightings one record holds; a longer way is emitted in parts
MAX_TUPLES = 4  # distinct address tuples per record (first hop + NAT steps)

# Hop code byte: hook index | NAT stage << 4 | in-container-netns << 6.
HOP_STAGE_SHIFT = 4
HOP_IN_CT_BIT = 0x40

# Why the kernel emitted a journey (the record's ``end``). Only the first two
# are complete journeys; the others are counted and shown as incomplete.
JOURNEY_ENDS = (
    None,        # 0: never emitted with this
    "terminal",  # a sighting that ends the way through the host (journeys.TERMINAL_SIGHTINGS)
    "drop",      # freed by the kernel (skb:kfree_skb)
    "evicted",   # its slot was taken by a newer packet before it ended
    "full",      # MAX_HOPS sightings: emitted, and a later one starts a continuation
    "quiet",     # no sighting within the joining window: it left the sensors' view
    "flushed",   # still open when tracing stopped
)
COMPLETE_ENDS = frozenset({1, 2})

# What the kernel left out rather than risk a wrong journey (bpf/journey.h),
# counted in journey_ends after the ends (index len(JOURNEY_ENDS) + i).
# Captures written before journey closes were decided in the journey slot
# may also carry "lost" (a journey closed in a race without a record) in
# their stats' journey_faults: read by name and shown like these; the
# kernel no longer counts it.
JOURNEY_FAULTS = (
    "claim_failed",  # a first sighting found its CPU's next journey slot being written: packet not followed
    "hop_refused",   # a sighting's journey was being taken or was emitted meanwhile: its hop left out
    "mismatch",      # a slot held another packet after a hop was written into it (never expected: a bug)
    "foreign_hop",   # a sighting found a journey (or packet-cache slot) of another packet in a race: its hop left out
)
# The journey_ends map: the ends, then the faults
N_JOURNEY_COUNTS = len(JOURNEY_ENDS) + len(JOURNEY_FAULTS)

# Bit of pkt_slot.packet_id: the slot's journey is open (not yet emitted).
# Packet ids stay below 2^53.
JOURNEY_OPEN_BIT = 1 << 63
# Bit of pkt_slot.packet_id: a claim or continuation is writing the slot (its
# fingerprint, journey slot and id go together: bpf/journey.h).
PCACHE_BUSY_BIT = 1 << 62

TUPLE_FIELDS: tuple[RawField, ...] = (
    RawField("saddr", "addr", "(16,)u1", "source (IPv4-mapped for IPv4)"),
    RawField("daddr", "addr", "(16,)u1", "destination"),
    RawField("sport", "u16", ">u2", "source port (ICMP: echo id)"),
    RawField("dport", "u16", ">u2", "destination port"),
)
HOP_FIELDS: tuple[RawField, ...] = (
    RawField("dt_ns", "u32", "<u4", "ns since the journey's first_ktime (saturates at 4.29 s)"),
    RawField("ifindex", "u32", "<u4", "device, as ifindex in the sighting rows"),
    RawField("code", "u8", "u1", "hook | NAT stage << 4 | in-container-netns << 6"),
    RawField("ttl", "u8", "u1", "IPv4 TTL (IPv6: hop limit) at this hop"),
    RawField("tuple", "u8", "u1", "index into tuples: the addresses at this hop"),
    RawField("_pad", "u8", "u1", ""),
)
JOURNEY_FIELDS: tuple[RawField, ...] = (
    RawField("packet_id", "u64", "<u8", "id given by the first sensor (no open bit)"),
    # 64 bits: BCC's clang has no 32-bit atomics. Next to packet_id, in the
    # line every sighting writes anyway.
    RawField("busy", "u64", "<u8", "sightings writing the slot as it was copied (the kernel's bookkeeping: bpf/journey.h)"),
    RawField("flow_id", "u64", "<u8", "conntrack entry's flow id (0 = not seen)"),
    RawField("first_ktime", "u64", "<u8", "bpf_ktime_get_ns() at the first hop"),
    RawField("last_ktime", "u64", "<u8", "the latest sighting (may be a hop not carried; the last hop's time where dt_ns saturates: tracer/last_hop.py)"),
    RawField("skb", "u64", "<u8", "sk_buff address at the last netfilter/drop hop"),
    RawField("tcp_seq", "u32", ">u4", "TCP sequence number"),
    RawField("tcp_ack", "u32", ">u4", "TCP acknowledgement number"),
    RawField("drop_reason", "u32", "<u4", "skb_drop_reason of a drop hop"),
    RawField("drop_netns", "u32", "<u4", "netns inode of the drop hop's device"),
    RawField("fwd_out_ifindex", "u32", "<u4", "out-device at nf_forward"),
    RawField("ip_id", "u16", ">u2", "IPv4 identification (IPv6: flow label's low 16 bits)"),
    RawField("length", "u16", ">u2", "IP total length (IPv6: payload length + 40)"),
    RawField("cpu", "u16", "<u2", "CPU of the first hop"),
    RawField("protocol", "u8", "u1", "IP protocol number"),
    RawField("tcp_flags", "u8", "u1", "TCP flags byte"),
    RawField("direction", "u8", "u1", "index into DIRECTIONS"),
    # Set by the sighting that emits the record, to what the slot's writers
    # had published (hops_written, tuples_written) when it began the copy.
    RawField("n_hops", "u8", "u1", "hops used"),
    RawField("n_tuples", "u8", "u1", "tuples used"),
    RawField("end", "u8", "u1", "index into JOURNEY_ENDS"),
    RawField("tcp_doff", "u8", "u1", "TCP data offset (header length in 32-bit words)"),
    RawField("hops_written", "u8", "u1", "hops appended so far (the kernel's bookkeeping: n_hops is the record's)"),
    RawField("tuples_written", "u8", "u1", "tuples so far (the kernel's bookkeeping: n_tuples is the record's)"),
    RawField("_pad1", "u8", "u1", ""),
    RawField("pcache_slot", "u32", "<u4", "packet-cache slot that held the journey (the kernel's bookkeeping)"),
    # Last, and before them everything of fixed size: a record is the
    # slot's first bytes up to its n_hops-th hop (bpf/journey.h
    # journey_emit); the ring buffer's reader pads it back to the struct.
    RawField("tuples", f"struct jtuple[{MAX_TUPLES}]", "", "addresses: [0] at the first hop, then after each change"),
    RawField("hops", f"struct jhop[{MAX_HOPS}]", "", "the sightings, in order"),
)


def _struct_dtype(fields: tuple[RawField, ...], nested: dict[str, tuple[np.dtype, int]], align: int) -> np.dtype:
    names, formats, offsets, at = [], [], [], 0
    for f in fields:
        if f.ctype.startswith("struct "):
            kind = f.ctype.split()[1].split("[")[0]
            sub, count = nested[kind]
            fmt, size = (sub, count), sub.itemsize * count
        else:
            fmt, size = f.dtype, _C_SIZES[f.ctype]
        names.append(f.name)
        formats.append(fmt)
        offsets.append(at)
        at += size
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": -(-at // align) * align})


TUPLE_DTYPE = _struct_dtype(TUPLE_FIELDS, {}, 8)  # 8: struct trc_addr is two u64
HOP_DTYPE = _struct_dtype(HOP_FIELDS, {}, 4)
JOURNEY_DTYPE = _struct_dtype(JOURNEY_FIELDS, {"jtuple": (TUPLE_DTYPE, MAX_TUPLES), "jhop": (HOP_DTYPE, MAX_HOPS)}, 8)
JOURNEY_SIZE = JOURNEY_DTYPE.itemsize
# A record's bytes before its hops: the kernel emits these and its n_hops
# hops only (bpf/journey.h journey_emit), so records run from this to
# JOURNEY_SIZE bytes in the ring buffer.
JOURNEY_HEADER = JOURNEY_DTYPE.fields["hops"][1]
assert JOURNEY_HEADER + MAX_HOPS * HOP_DTYPE.itemsize == JOURNEY_SIZE, "the hops must be last in struct journey"


def smallest_sample(sample: np.dtype) -> int:
    """The fewest bytes a ring-buffer sample of this dtype has: a journey
    record without hops, else the whole struct."""
    return JOURNEY_HEADER if sample == JOURNEY_DTYPE else sample.itemsize
assert TUPLE_DTYPE.itemsize == 40 and HOP_DTYPE.itemsize == 12


def _c_struct(name: str, fields: tuple[RawField, ...], size: int) -> list[str]:
    lines = [f"struct {name} {{"]
    used = 0
    for f in fields:
        if f.ctype.startswith("struct "):
            kind, count = f.ctype.split()[1].split("[")
            lines.append(f"    struct {kind} {f.name}[{count};")
            used += (TUPLE_DTYPE if kind == "jtuple" else HOP_DTYPE).itemsize * int(count.rstrip("]"))
        else:
            lines.append(f"    {_C_TYPES.get(f.ctype, f.ctype)} {f.name};")
            used += _C_SIZES[f.ctype]
    if size > used:
        lines.append(f"    u8 _tail[{size - used}];")
    lines.append("};")
    lines.append(f'_Static_assert(sizeof(struct {name}) == {size}, "struct {name}: tracer/events.py");')
    return lines


def journey_c_definitions() -> str:
    """C text for bpf/journey.h: the slot/record structs and their codes."""
    lines = ["/* generated by tracer/events.py: do not edit */"]
    lines += _c_struct("jtuple", TUPLE_FIELDS, TUPLE_DTYPE.itemsize)
    lines += _c_struct("jhop", HOP_FIELDS, HOP_DTYPE.itemsize)
    lines += _c_struct("journey", JOURNEY_FIELDS, JOURNEY_SIZE)
    lines += [f"#define MAX_HOPS {MAX_HOPS}", f"#define MAX_TUPLES {MAX_TUPLES}",
              f"#define HOP_STAGE_SHIFT {HOP_STAGE_SHIFT}", f"#define HOP_IN_CT_BIT {HOP_IN_CT_BIT:#x}",
              f"#define JOURNEY_OPEN_BIT {JOURNEY_OPEN_BIT:#x}ULL", f"#define PCACHE_BUSY_BIT {PCACHE_BUSY_BIT:#x}ULL"]
    lines += [f"#define END_{e.upper()} {i}" for i, e in enumerate(JOURNEY_ENDS) if e]
    lines.append(f"#define N_ENDS {len(JOURNEY_ENDS)}")
    lines += [f"#define FAULT_{f.upper()} {len(JOURNEY_ENDS) + i}" for i, f in enumerate(JOURNEY_FAULTS)]
    lines.append(f"#define N_JOURNEY_COUNTS {N_JOURNEY_COUNTS}")
    return "\n".join(lines) + "\n"


def empty_journeys(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=JOURNEY_DTYPE)


def tcp_flags_text(flags: int) -> str:
    """'SA' for SYN+ACK etc.; order matches tcpdump's habit (S, F, R, P, A, U)."""
    order = (("S", 0x02), ("F", 0x01), ("R", 0x04), ("P", 0x08), ("A", 0x10), ("U", 0x20), ("E", 0x40), ("C", 0x80))
    return "".join(ch for ch, bit in order if flags & bit)


# Decoded event table: the columns of an Arrow capture (docs/capture-format.md),
# generated from RAW_FIELDS (a raw field's column: its integer, or its value
# decoded to text) and the columns the decoder resolves in user space.
RESOLVED_COLUMNS: dict[str, pa.DataType] = {
    "time": pa.timestamp("ns", tz="UTC"),  # ktime_ns on the wall clock
    "ifname": _DICT_STR,
    "if_role": _DICT_STR,  # role of the interface in the path: external, bridge, veth, container, other
    "container_id": _DICT_STR,
    "container_name": _DICT_STR,
}
# The columns' order: fixed on disk. tcp_doff is null in captures written
# before it was recorded.
EVENT_COLUMNS = (
    "time", "ktime_ns", "hook", "nat_stage", "ifindex", "ifname", "if_role", "out_ifindex", "netns",
    "container_id", "container_name", "skb", "packet_id", "flow_id", "direction", "protocol", "src_ip",
    "src_port", "dst_ip", "dst_port", "ip_id", "ttl", "length", "tcp_flags", "tcp_seq", "tcp_ack",
    "drop_reason", "cpu", "flags", "tcp_doff",
)


def _event_schema() -> pa.Schema:
    raw = {f.name: f for f in RAW_FIELDS}
    if sorted(EVENT_COLUMNS) != sorted([*raw, *RESOLVED_COLUMNS]):
        raise AssertionError("EVENT_COLUMNS must name every raw field and resolved column once")
    return pa.schema([pa.field(n, RESOLVED_COLUMNS[n] if n in RESOLVED_COLUMNS else raw[n].arrow_type)
                      for n in EVENT_COLUMNS])


EVENT_SCHEMA = _event_schema()
SCHEMA_VERSION = "1"  # sighting rows (CAPTURE_SCHEMA): what readers present, and older captures

# A capture file (Arrow IPC stream, .arrows) holds the event columns plus two
# more, so that things other than packet sightings live in the same stream as
# rows, in time order: `kind` says what a row is, `info` carries its payload
# as JSON. Packet columns are null on non-event rows (except time/ktime_ns).
ROW_KINDS = (
    "event",      # one packet sighting (info null)
    "container",  # a container started or stopped: info {"action", "id", "name", "ips", ...}
    "stats",      # end of capture statistics: info {"events", "lost", "packets", "flows", ...}
    "histogram",  # latency mode interval histogram (see tracer latency): info {...}
    "journey",    # on disk since version 2: one kernel journey record (readers present its sighting rows)
    "place",      # on disk since version 2: info {"id", "ifname", "role", "netns", "container_id", "container_name"}
    "rule",       # a netfilter rule a traced packet met (--rules): packet_id, hook; info {"table", "chain", ...}
    "proxy",      # since 2.1: docker-proxy relays two connections: info {"link", "pid", "container", "client", "backend"}
)
CAPTURE_SCHEMA = EVENT_SCHEMA.append(pa.field("kind", _DICT_STR)).append(pa.field("info", pa.string()))

# --- the capture on disk: one row per journey record -------------------------------
#
# Since schema version 2 a capture stores what the kernel emitted, one row per
# journey record, with its hops and address tuples as list columns (about 40
# compressed bytes per packet instead of ~300 as sighting rows, and a fifth of
# the writer's CPU). The interface, role and container of a hop are resolved
# while recording (only the live host knows them) into a small table of
# places: `place` rows, each written before the first row that points at it
# (and again at the head of each rotated file). tracer/journey_capture.py
# writes these rows and lays them out as the sighting rows above for readers.
# 5: a hop's path (all but its time) and a row's tuples stored once a batch
# (dictionaries), and `last_gap_ns` in place of `last_ktime_ns`, read back
# as version 4;
# 4: no `time` column (every row's is ktime_ns + the metadata's
# ktime_offset_ns, computed on read) and no hop `ifindex` (a place id stands
# for one ifindex too: its `place` row says which), read back as version 3;
# 3: a hop's dt_ns stored as its four bytes (DT_PLANES), read back as dt_ns;
# 2.1: `proxy` rows.
JOURNEY_SCHEMA_VERSION = "5"
HOP_FLAG_IN_CONTAINER_NS = 1  # the hop's tc program is attached in a container's netns
HOP_FLAG_NEW_PACKET = 2  # this hop gave the packet its id
# Addresses on disk are the 16 recorded bytes (IPv4-mapped for IPv4);
# captures written before IPv6 hold IPv4 addresses as uint32 and still read.
_ON_DISK = {"u64": pa.uint64(), "u32": pa.uint32(), "u16": pa.uint16(), "u8": pa.uint8(), "addr": pa.binary(16)}
HOP_ROW_TYPE = pa.struct(
    [
        pa.field("dt_ns", pa.uint32()),    # ns since the row's ktime_ns (saturates at 4.29 s)
        pa.field("hook", pa.uint8()),      # index into HOOKS
        pa.field("nat_stage", pa.uint8()), # index into NAT_STAGES
        pa.field("flags", pa.uint8()),     # HOP_FLAG_* bits
        pa.field("ifindex", pa.uint32()),
        pa.field("ttl", pa.uint8()),
        pa.field("tuple", pa.uint8()),     # index into the row's tuples
        pa.field("place", pa.uint32()),    # id of a `place` row: interface, role, container
    ]
)
TUPLE_ROW_TYPE = pa.struct([pa.field(f.name, _ON_DISK[f.ctype]) for f in TUPLE_FIELDS])  # ports as numbers
# Since version 3 a file stores a hop's dt_ns as four uint8 fields, its bytes
# least significant first (dt_ns = b0 | b1 << 8 | b2 << 16 | b3 << 24):
# Parquet's BYTE_STREAM_SPLIT, which Arrow IPC lacks, by hand. The bytes of
# one position vary alike, so zstd packs them ~3x faster than the interleaved
# uint32 and smaller (about 45 bytes a packet on disk against 49). Readers
# join them into dt_ns (journey_capture.conform): JOURNEY_CAPTURE_SCHEMA
# below is what every reader sees, JOURNEY_FILE_SCHEMA what is written.
DT_PLANES = tuple(f"dt_ns_b{i}" for i in range(4))
HOP_FILE_TYPE_V3 = pa.struct([pa.field(name, pa.uint8()) for name in DT_PLANES]
                          + [f for f in HOP_ROW_TYPE if f.name != "dt_ns"])
JOURNEY_CAPTURE_SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("ns", tz="UTC")),  # of the first hop
        pa.field("ktime_ns", pa.uint64()),                # of the first hop
        pa.field("kind", _DICT_STR),                      # ROW_KINDS: journey, place, container, stats, histogram
        pa.field("info", pa.string()),
        pa.field("last_ktime_ns", pa.uint64()),
        pa.field("packet_id", pa.uint64()),
        pa.field("flow_id", pa.uint64()),
        pa.field("skb", pa.uint64()),
        pa.field("end", _DICT_STR),                       # JOURNEY_ENDS
        pa.field("direction", _DICT_STR),
        pa.field("protocol", _DICT_STR),
        pa.field("drop_reason", _DICT_STR),
        pa.field("drop_netns", pa.uint32()),
        pa.field("fwd_out_ifindex", pa.uint32()),
        pa.field("ip_id", pa.uint16()),
        pa.field("length", pa.uint16()),
        pa.field("cpu", pa.uint16()),
        pa.field("tcp_flags", pa.uint8()),
        pa.field("tcp_doff", pa.uint8()),
        pa.field("tcp_seq", pa.uint32()),
        pa.field("tcp_ack", pa.uint32()),
        pa.field("tuples", pa.list_(TUPLE_ROW_TYPE)),
        pa.field("hops", pa.list_(HOP_ROW_TYPE)),
        # container rows, as in CAPTURE_SCHEMA
        pa.field("netns", pa.uint32()),
        pa.field("container_id", _DICT_STR),
        pa.field("container_name", _DICT_STR),
    ]
)

# Version 3's file schema (what tests write as an older capture).
JOURNEY_FILE_SCHEMA_V3 = JOURNEY_CAPTURE_SCHEMA.set(
    JOURNEY_CAPTURE_SCHEMA.get_field_index("hops"), pa.field("hops", pa.list_(HOP_FILE_TYPE_V3)))
# Since version 4 a file leaves out what another column already says, fewer
# raw bytes for zstd to pack (its CPU is per raw byte, docs/benchmarks.md):
# `time` (ktime_ns + ktime_offset_ns on every row) and a hop's `ifindex`
# (each place id is of one ifindex: its `place` row's `ifindex`). Readers
# put both back (journey_capture.conform).
COMPUTED_ON_READ = ("time",)
HOP_FILE_TYPE_V4 = pa.struct([f for f in HOP_FILE_TYPE_V3 if f.name != "ifindex"])
JOURNEY_FILE_SCHEMA_V4 = pa.schema(
    [pa.field("hops", pa.list_(HOP_FILE_TYPE_V4)) if f.name == "hops" else f
     for f in JOURNEY_CAPTURE_SCHEMA if f.name not in COMPUTED_ON_READ])
# Since version 5 a row's hops hold only their times (the dt_ns bytes); the
# rest of each hop (hook, NAT stage, flags, TTL, tuple, place: its "path")
# is the same for many packets, and a batch stores each distinct path once,
# as a dictionary of hop lists (`path`, its values this batch's paths: a
# dictionary replaced batch by batch), the row its index; zstd packed those
# five bytes and a place id hop by hop for ~70 ns a packet. `last_ktime_ns`
# is stored as `last_gap_ns`, its difference from the last hop's time
# (ktime_ns + that hop's dt_ns, wrapping as uint64): 0 on nearly every row
# where the time itself cost zstd ~27 ns. Readers put both back.
DT_HOP_TYPE = pa.struct([pa.field(name, pa.uint8()) for name in DT_PLANES])
PATH_HOP_TYPE = pa.struct([f for f in HOP_FILE_TYPE_V4 if f.name not in DT_PLANES])
PATH_TYPE = pa.dictionary(pa.int32(), pa.list_(PATH_HOP_TYPE))
# A row's tuples likewise: every packet of a connection's direction has the
# same list, so `tuples` is a dictionary of a batch's distinct lists too
# (zstd packed the addresses and ports row by row for ~95 ns a packet).
TUPLES_TYPE = pa.dictionary(pa.int32(), pa.list_(TUPLE_ROW_TYPE))
JOURNEY_FILE_SCHEMA = pa.schema(
    [pa.field("last_gap_ns", pa.uint64()) if f.name == "last_ktime_ns" else
     pa.field("hops", pa.list_(DT_HOP_TYPE)) if f.name == "hops" else
     pa.field("tuples", TUPLES_TYPE) if f.name == "tuples" else f for f in JOURNEY_FILE_SCHEMA_V4]
    + [pa.field("path", PATH_TYPE)])
# the columns whose dictionary is each batch's own (not grown over the stream)
BATCH_DICTIONARIES = ("tuples", "path")


class ColumnError(ValueError):
    """A stored batch's column is missing where required, or of a type that does not cast."""


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema, required: tuple[str, ...] = ()) -> pa.RecordBatch:
    """A stored batch in ``schema``: columns a newer minor version added are
    dropped, ones an older writer lacked are null (ColumnError if one of
    ``required``), others cast to the type the schema says."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch if isinstance(batch, pa.RecordBatch) else pa.RecordBatch.from_arrays(
            [batch.column(i).combine_chunks() for i in range(batch.num_columns)], schema=schema)
    names = batch.schema.names
    arrays = []
    for f in schema:
        if f.name not in names:
            if f.name in required:
                raise ColumnError(f"no {f.name!r} column")
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        col = batch.column(f.name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowException, ValueError, TypeError):
                raise ColumnError(f"column {f.name!r} is {col.type}, not {f.type}") from None
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# Schema metadata keys of a capture (values are UTF-8 strings; JSON where noted).
META_PREFIX = "tracer."
META_KEYS = (
    "schema_version",  # SCHEMA_VERSION; readers refuse other major versions
    "host",
    "kernel",          # uname -r
    "version",         # tracer version
    "command",         # the command line
    "filter",          # Targets.describe()
    "start_time",      # ISO 8601 UTC
    "ktime_offset_ns", # wall clock minus bpf_ktime_get_ns at start
    "containers",      # JSON list of containers at start
    "sample",          # 1-in-N flow sampling (1 = all)
    "rules",           # "1" when recorded with --rules (rule rows follow the packets), else "0"
    "hooks",           # the hook profile (--hooks): "all", or "lean" (fewer hops a packet); absent in older captures: "all"
    "hooks_kept",      # hops the profile leaves out that were attached anyway, comma-separated ("nf_prerouting/before":
                       # lean with --iface), else ""; absent in older captures: none
    "part",            # the file's part of its recording: 0, 1, ... with rotation (cap.0001.arrows is 1), else 0; absent in older captures
)
