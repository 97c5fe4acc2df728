"""Export a capture as pcapng, for Wireshark/tshark.

tracer records header fields, not packet bytes, so each sighting becomes a
synthesised IPv4 or IPv6 + TCP/UDP/ICMP header built from its row (addresses and ports
as seen at that hop, ids, TTL, TCP seq/ack/flags and data offset). The
captured length is the headers only; the original length is the packet's IPv4
total length, so Wireshark shows the real size and payload length (a SYN with
options has Len=0) and marks the payload as not captured. TCP options are not
recorded: their bytes are zeros (End of Option List, then padding), so the
header has its real length. (NOPs would read as "a router may have removed
some options", a warning.)

Each distinct place (interface, netns, hook and NAT stage) gets its own
Interface Description Block, named ``IFNAME:HOOK[/STAGE]`` (``docker0:
nf_postrouting/after``, ``eth0:tc_ingress``), raw IP link type (IPv4 or IPv6 by each packet's version), nanosecond
timestamps. Every packet block carries the direction in ``epb_flags``
(inbound at tc ingress, PREROUTING and INPUT; outbound at tc egress, OUTPUT
and POSTROUTING), tracer's packet id in ``epb_packetid`` (the same for every
sighting of one packet: Wireshark's ``frame.packet_id``), and a comment with
hook, interface, container, packet and flow.

A packet is seen at up to a dozen places, so an export of every sighting
holds each TCP segment many times and Wireshark's sequence analysis calls the
copies retransmissions: open it with ``-o tcp.analyze_sequence_numbers:FALSE``,
or export the packets of one place (``places``: what tcpdump on that
interface would have shown), which analyse cleanly.

Headers are built for all rows at once with numpy; the per-row Python work is
only joining bytes. Format: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import __version__
from tracer.addresses import packed
from tracer.analysis_rows import event_rows, wall_ns
from tracer.errors import TracerError
from tracer.events import PROTOCOL_NUMBERS
from tracer.ids import format_ids
from tracer.journeys import fill_flows, hop_label
from tracer.outfiles import open_output
from tracer.packet_window import NEW_RECORDING, PacketWindow
from tracer.recorded_hooks import RecordedHooks
from tracer.sensors.hook_profile import left_out_place

LINKTYPE_IPV4 = 228  # raw IPv4, no link-layer header
LINKTYPE_RAW = 101  # raw IP: IPv4 or IPv6 by the version nibble

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT = 0, 1
_SHB_HARDWARE, _SHB_OS, _SHB_USERAPPL = 2, 3, 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_EPB_FLAGS, _EPB_PACKETID = 2, 5
FLAGS_INBOUND, FLAGS_OUTBOUND = 1, 2  # epb_flags bits 0-1

# Direction of a sighting at its hook (epb_flags); FORWARD and drops have none.
_INBOUND_HOOKS = frozenset({"tc_ingress", "nf_prerouting", "nf_input"})
_OUTBOUND_HOOKS = frozenset({"tc_egress", "nf_output", "nf_postrouting"})

_IP_LEN = 20
_MAX_HDR = _IP_LEN + 60  # IPv4 without options + the longest TCP header
_IP6_LEN = 40
_ROW = _IP6_LEN + 60  # header bytes per row: room for IPv6 + the longest TCP header
_L4_LEN = {17: 8, 1: 8, 58: 8}  # UDP, ICMP/ICMPv6 echo; TCP: its data offset
_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0
_ICMP6_ECHO_REQUEST, _ICMP6_ECHO_REPLY = 128, 129

ANALYSIS_NOTE = ("one packet per sighting: each packet appears at every hook that saw it; "
                 "open with -o tcp.analyze_sequence_numbers:FALSE, or export one place (--at) for TCP analysis")


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad4(len(value))


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header(app: str, os_name: str = "", hardware: str = "", comment: str = "") -> bytes:
    opts = b""
    if comment:
        opts += _option(_OPT_COMMENT, comment.encode())
    if hardware:
        opts += _option(_SHB_HARDWARE, hardware.encode())
    if os_name:
        opts += _option(_SHB_OS, os_name.encode())
    opts += _option(_SHB_USERAPPL, app.encode()) + _option(_OPT_END, b"")
    # section length -1: not known in advance (we stream)
    return _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + opts)


def interface_description(name: str, description: str, linktype: int = LINKTYPE_RAW) -> bytes:
    opts = _option(_IF_NAME, name.encode())
    if description:
        opts += _option(_IF_DESCRIPTION, description.encode())
    opts += _option(_IF_TSRESOL, bytes([9])) + _option(_OPT_END, b"")  # 10^-9 s: ns timestamps
    return _block(_IDB, struct.pack("<HHI", linktype, 0, 0) + opts)


# --- headers from rows, vectorised --------------------------------------------

_HDR = np.dtype(
    [
        ("ver_ihl", "u1"), ("tos", "u1"), ("tot_len", ">u2"), ("id", ">u2"), ("frag", ">u2"),
        ("ttl", "u1"), ("proto", "u1"), ("csum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
        # L4, laid out as TCP; UDP and ICMP reuse the first 8 bytes
        ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"),
        ("off", "u1"), ("flags", "u1"), ("win", ">u2"), ("l4csum", ">u2"), ("urg", ">u2"),
        ("options", "u1", (_MAX_HDR - 40,)),
    ]
)
assert _HDR.itemsize == _MAX_HDR


def _address_bytes(col: pa.ChunkedArray) -> np.ndarray:
    """Address strings as (n, 16) bytes, IPv4 as IPv4-mapped (zeros for null
    or unreadable), formatted once per distinct value."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr.cast(pa.string()))
    values = arr.dictionary.to_pylist()
    lut = np.frombuffer(b"".join(_packed(v) for v in values) + bytes(16), np.uint8).reshape(-1, 16)
    return lut[pc.fill_null(arr.indices, len(values)).to_numpy()]


def _packed(text: str | None) -> bytes:
    try:
        return packed(text or "")
    except TracerError:
        return bytes(16)


def _col(table: pa.Table, name: str, dtype) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=dtype)
    return pc.fill_null(table[name], 0).to_numpy().astype(dtype)


def _strings(table: pa.Table, name: str) -> tuple[np.ndarray, list]:
    """(code per row, distinct values) of a string column; null is a value."""
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64), [None]
    encoded = pc.dictionary_encode(table[name].cast(pa.string())).combine_chunks()
    values = encoded.dictionary.to_pylist()
    return pc.fill_null(encoded.indices, len(values)).to_numpy().astype(np.int64), values + [None]


def tcp_header_len(table: pa.Table) -> np.ndarray:
    """Bytes of each row's TCP header: its data offset, 20 where a capture
    did not record it (written before tcp_doff existed) or it is bogus."""
    doff = _col(table, "tcp_doff", np.int64)
    return np.where((doff >= 5) & (doff <= 15), doff, 5) * 4


def build_headers(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n x 100 header bytes, captured length per row, original length per
    row): IPv4 rows use the first 80 at most, IPv6 rows (either address
    IPv6) all."""
    n = table.num_rows
    codes, values = _strings(table, "protocol")
    proto = np.array([PROTOCOL_NUMBERS.get(p, 0) for p in values], dtype=np.uint8)[codes]
    tcp, udp, icmp = proto == 6, proto == 17, (proto == 1) | (proto == 58)
    src16, dst16 = _address_bytes(table["src_ip"]), _address_bytes(table["dst_ip"])
    v4_prefix = np.frombuffer(b"\0" * 10 + b"\xff\xff", np.uint8)
    v6 = ~((src16[:, :12] == v4_prefix).all(axis=1) & (dst16[:, :12] == v4_prefix).all(axis=1))
    v6 &= src16.any(axis=1) | dst16.any(axis=1)  # no addresses at all: shown as IPv4 0.0.0.0
    l4 = np.zeros(n, dtype=np.int64)
    for num, size in _L4_LEN.items():
        l4[proto == num] = size
    tcp_len = tcp_header_len(table)
    l4[tcp] = tcp_len[tcp]
    caplen = np.where(v6, _IP6_LEN, _IP_LEN) + l4
    length = _col(table, "length", np.int64)
    tot_len = np.where(length >= caplen, length, caplen)  # 0 = unknown: claim the headers

    h = np.zeros(n, dtype=_HDR)
    h["ver_ihl"] = 0x45
    h["tot_len"] = tot_len
    h["id"] = _col(table, "ip_id", np.uint16)
    h["ttl"] = _col(table, "ttl", np.uint8)
    h["proto"] = proto
    h["src"] = src16[:, 12:16].copy().view(">u4").ravel()
    h["dst"] = dst16[:, 12:16].copy().view(">u4").ravel()
    sport, dport = _col(table, "src_port", np.uint16), _col(table, "dst_port", np.uint16)
    h["sport"] = np.where(icmp, 0, sport)
    h["dport"] = np.where(icmp, 0, dport)
    h["seq"] = np.where(tcp, _col(table, "tcp_seq", np.uint32), 0)
    h["ack"] = np.where(tcp, _col(table, "tcp_ack", np.uint32), 0)
    h["off"] = np.where(tcp, (tcp_len // 4) << 4, 0)
    h["flags"] = np.where(tcp, _col(table, "tcp_flags", np.uint8), 0)
    h["win"] = np.where(tcp, 65535, 0)  # not recorded; 0 would read as a zero-window alert
    # h["options"] stays zeros: End of Option List + padding (the options are not recorded)

    raw = np.zeros((n, _ROW), np.uint8)
    raw[:, :_MAX_HDR] = h.view(np.uint8).reshape(n, _MAX_HDR)
    # UDP: length, checksum 0 (= none). ICMP echo: type, code, csum, id, seq.
    udp_len = (tot_len - _IP_LEN).astype(">u2")
    raw[udp, 24:26] = udp_len[udp].view(np.uint8).reshape(-1, 2)
    if icmp.any():
        reply = pc.fill_null(pc.equal(table["direction"].cast(pa.string()), "reply"), False).to_numpy(zero_copy_only=False)
        raw[icmp, 20] = np.where(reply[icmp], _ICMP_ECHO_REPLY, _ICMP_ECHO_REQUEST)
        raw[icmp, 21] = 0
        raw[icmp, 24:26] = sport[icmp].astype(">u2").view(np.uint8).reshape(-1, 2)  # echo id
        raw[icmp, 26:28] = dport[icmp].astype(">u2").view(np.uint8).reshape(-1, 2)  # echo sequence

    # IPv4 header checksum: ones' complement of the ones' complement sum of its words.
    words = raw[:, :_IP_LEN].copy().view(">u2").astype(np.uint32).sum(axis=1)
    words = (words & 0xFFFF) + (words >> 16)
    words = (words & 0xFFFF) + (words >> 16)
    csum = (~words & 0xFFFF).astype(">u2")
    raw[:, 10:12] = csum.view(np.uint8).reshape(n, 2)
    if v6.any():
        raw[v6] = _ipv6_rows(raw[v6], src16[v6], dst16[v6], tot_len[v6], icmp[v6])
    return raw, caplen, tot_len


def _ipv6_rows(v4: np.ndarray, src16: np.ndarray, dst16: np.ndarray, tot_len: np.ndarray, icmp: np.ndarray) -> np.ndarray:
    """IPv6 headers for rows first laid out as IPv4: the L4 part moves behind
    a 40-byte IPv6 header (the flow label's low 16 bits from ip_id, hop limit
    from the TTL, payload length = total length - 40; ICMP echo types as
    ICMPv6)."""
    m = len(v4)
    out = np.zeros((m, _ROW), np.uint8)
    out[:, 0] = 0x60
    out[:, 2:4] = v4[:, 4:6]  # ip_id -> the flow label's low 16 bits
    out[:, 4:6] = np.maximum(tot_len - _IP6_LEN, 0).astype(">u2").view(np.uint8).reshape(m, 2)
    proto = v4[:, 9]
    out[:, 6] = np.where(proto == 1, 58, proto)
    out[:, 7] = v4[:, 8]  # hop limit
    out[:, 8:24], out[:, 24:40] = src16, dst16
    out[:, _IP6_LEN:] = v4[:, _IP_LEN:_MAX_HDR]
    udp = proto == 17
    out[udp, 44:46] = np.maximum(tot_len[udp] - _IP6_LEN, 0).astype(">u2").view(np.uint8).reshape(-1, 2)
    out[icmp, 40] = np.where(out[icmp, 40] == _ICMP_ECHO_REPLY, _ICMP6_ECHO_REPLY, _ICMP6_ECHO_REQUEST)
    return out


def _id_texts(col: pa.ChunkedArray) -> pa.Array:
    """Ids as everywhere else (tracer/ids.py: hex, '-' when unknown)."""
    return pa.array(format_ids(pc.fill_null(col, 0).to_numpy()), pa.string())


def comments(table: pa.Table) -> pa.Array:
    """'hook=nf_prerouting/after if=veth-lab-h container=web packet=2000000000c flow=22' (ids as tracer/ids.py prints them)
    per row (plus ' reason=...' on drop rows), built with Arrow string kernels."""

    def text(name: str) -> pa.ChunkedArray:
        if name not in table.column_names:
            return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        return table[name].cast(pa.string())

    stage = text("nat_stage")
    hook = pc.if_else(pc.is_null(stage), text("hook"), pc.binary_join_element_wise(text("hook"), stage, "/"))
    container = pc.coalesce(text("container_name"), pc.utf8_slice_codeunits(text("container_id"), 0, 12))
    parts = [
        "hook=", pc.fill_null(hook, "?"),
        " if=", pc.fill_null(text("ifname"), "-"),
        " container=", pc.fill_null(container, "-"),
        " packet=", _id_texts(table["packet_id"]),
        " flow=", _id_texts(table["flow_id"]),
    ]
    line = pc.binary_join_element_wise(*parts, "")
    reason = text("drop_reason")
    line = pc.if_else(pc.is_null(reason), line, pc.binary_join_element_wise(line, " reason=", reason, ""))
    return line.cast(pa.large_string()).combine_chunks()


class Places:
    """Each row's place: (interface, netns, hook, NAT stage). ``names`` and
    ``descriptions`` are one per distinct place, ``index`` is each row's."""

    def __init__(self, table: pa.Table) -> None:
        parts = [_strings(table, c) for c in ("ifname", "hook", "nat_stage", "if_role", "container_name")]
        netns = _col(table, "netns", np.int64)
        _, key = np.unique(netns, return_inverse=True)  # small codes keep the key below 2^63
        key = np.asarray(key, dtype=np.int64).ravel()
        for codes, values in parts:
            key = key * len(values) + codes  # a mixed-radix key: distinct per combination
        _, first, index = np.unique(key, return_index=True, return_inverse=True)
        self.index = np.asarray(index).ravel()
        self.names: list[str] = []
        self.descriptions: list[str] = []
        self.labels: list[str] = []  # tracer's label of the place: 'tc_egress@veth', 'nf_prerouting/after'
        self.ifnames: list[str | None] = []
        self.roles: list[str | None] = []
        self.hooks: list[str] = []
        for row in first.tolist():
            ifname, hook, stage, role, container = (values[codes[row]] for codes, values in parts)
            hook = hook or "?"
            place = f"{hook}/{stage}" if stage else hook
            self.names.append(f"{ifname}:{place}" if ifname else place)  # drop rows: the tracepoint has no device
            where = f"on {ifname}" + (f" ({role})" if role else "") if ifname else "no device"
            self.descriptions.append(f"{place} {where}, netns {int(netns[row])}" + (f", container {container}" if container else ""))
            self.labels.append(hop_label(hook, stage, role))
            self.ifnames.append(ifname)
            self.roles.append(role)
            self.hooks.append(hook)

    def direction_flags(self) -> np.ndarray:
        """epb_flags of each row: inbound/outbound by its hook (0: FORWARD, drops)."""
        per_place = [FLAGS_INBOUND if h in _INBOUND_HOOKS else FLAGS_OUTBOUND if h in _OUTBOUND_HOOKS else 0
                     for h in self.hooks]
        return np.array(per_place, dtype=np.uint32)[self.index]

    def matching(self, at: str) -> np.ndarray:
        """Place numbers ``at`` names: a hop label as `tracer stats` prints it
        (``nf_prerouting/after``, ``tc_egress@veth``), or an interface name or
        role (``trc-host``, ``external``, ``container``): its tc hooks, both
        directions, i.e. what a packet capture on that interface shows."""
        return np.array([i for i in range(len(self.names))
                         if at in (self.labels[i], self.names[i]) or at in self.interface_words(i)], dtype=np.int64)

    def interface_words(self, i: int) -> tuple[str | None, ...]:
        """The interface name and role that name place ``i`` too (matching):
        those of a tc hook, what a packet capture on that interface shows;
        none of a netfilter or drop place (docker0 under --hooks lean: only
        netfilter rows name it, so it is no place to name)."""
        return (self.ifnames[i], self.roles[i]) if self.labels[i].startswith("tc_") else ()


class PlaceFilter:
    """``--at``: keeps the rows of a chunk at the places the names give (see
    Places.matching) and remembers every place seen, so that a name that
    matched nothing in the whole capture is an error listing the places."""

    def __init__(self, names: Iterable[str], hooks: str = "all", kept: Iterable[str] = ()) -> None:
        self.names = list(names)
        self.hooks = hooks  # the capture's base hook profile: said when a name it leaves out matched nothing
        self.kept = set(kept)  # hops the profile leaves out that were attached all the same (hooks_kept)
        self.matched: set[str] = set()
        self.known: set[str] = set()
        self.roles: dict[str, str | None] = {}  # every interface name seen -> its role (docker0: bridge)

    def __call__(self, table: pa.Table) -> pa.Table:
        if not self.names or not table.num_rows:
            return table
        places = Places(table)
        self.known |= set(places.labels) | {w for i in range(len(places.labels)) for w in places.interface_words(i) if w}
        self.roles.update((n, r) for n, r in zip(places.ifnames, places.roles) if n)
        chosen = []
        for name in self.names:
            found = places.matching(name)
            if len(found):
                self.matched.add(name)
                chosen.append(found)
        keep = np.isin(places.index, np.concatenate(chosen)) if chosen else np.zeros(table.num_rows, bool)
        return table.filter(pa.array(keep))

    def check(self) -> None:
        for name in self.names:
            if name not in self.matched:
                # said only of a place the profile leaves out: a typo is a typo
                profile = (f" (recorded with --hooks {self.hooks}, which leaves it out)"
                           if name not in self.kept and left_out_place(self.hooks, name, self.roles) else "")
                raise TracerError(f"--at {name}: no sighting there{profile}; places in this capture: "
                                  f"{', '.join(sorted(self.known)) or 'none'}")


def select_places(table: pa.Table, at: Iterable[str]) -> pa.Table:
    """Rows of ``table`` (event rows) at any of the places ``at`` names;
    a name that matches no place is an error that lists the places there are."""
    keep = PlaceFilter(at)
    out = keep(table)
    keep.check()
    return out


def export_pcapng(source: pa.Table | Iterable[pa.RecordBatch | pa.Table], out: BinaryIO | str | Path,
                  metadata: Mapping[str, str] | None = None, at: Iterable[str] = (),
                  hooks: RecordedHooks | None = None) -> int:
    """Write every sighting of ``source`` to ``out`` as pcapng, in time order;
    with ``at``, only the sightings at those places (see Places.matching).
    ``source`` is a table (a capture or EVENT_SCHEMA) or sighting batches
    (``CaptureStream.sightings(boundaries=True)``: NEW_RECORDING marks
    between recordings), streamed in bounded memory: whole
    packets a window at a time (their flow filled in from their netfilter
    rows), rows put in time order over twice that window. Returns the
    number of packets written; a place in ``at`` that the capture never
    saw is a TracerError (after the file is written: the caller removes it),
    whose note of the hook profile comes from ``hooks`` (the reader's
    ``recorded_hooks``; default: ``metadata``'s, of one capture)."""
    chunks = [source] if isinstance(source, pa.Table) else source
    meta = metadata or {}
    hooks = RecordedHooks.of(meta) if hooks is None else hooks
    keep = PlaceFilter(at, hooks.placing, hooks.kept)
    note = f"sightings at {', '.join(keep.names)} only" if keep.names else ANALYSIS_NOTE
    if isinstance(out, (str, Path)):
        with open_output(out) as f:  # 0600 like captures
            n = _write(f, chunks, meta, keep, note)
    else:
        n = _write(out, chunks, meta, keep, note)
    keep.check()
    return n


def _time_ordered(chunks: Iterable[pa.RecordBatch | pa.Table], meta: Mapping[str, str],
                  keep: PlaceFilter) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(rows at the kept places, wall clock ns) in (time, ktime) order, a piece at a time."""
    window = PacketWindow()
    held: list[pa.Table] = []
    newest = None
    for packets in window.packets(c if c is NEW_RECORDING else event_rows(_table(c)) for c in chunks):
        packets = fill_flows(packets.unify_dictionaries().combine_chunks())  # tc rows learn their packet's conntrack entry
        packets = keep(packets)
        if not packets.num_rows:
            continue
        held.append(packets)
        wall = wall_ns(packets, meta)
        newest = int(wall.max()) if newest is None else max(newest, int(wall.max()))
        rows = pa.concat_tables(held).unify_dictionaries().combine_chunks() if len(held) > 1 else held[0]
        ready, rest = _split_before(rows, meta, newest - 2 * window.window_ns)
        held = [rest] if rest.num_rows else []
        if ready is not None:
            yield ready
    if held:
        ready, _ = _split_before(held[0], meta, None)
        if ready is not None:
            yield ready


def _table(chunk: pa.RecordBatch | pa.Table) -> pa.Table:
    return chunk if isinstance(chunk, pa.Table) else pa.Table.from_batches([chunk])


def _split_before(rows: pa.Table, meta: Mapping[str, str], horizon: int | None) -> tuple[tuple[pa.Table, np.ndarray] | None, pa.Table]:
    """Rows up to ``horizon`` (wall ns; None: all) sorted by time, and the rest."""
    wall = wall_ns(rows, meta)
    kt = _col(rows, "ktime_ns", np.uint64)
    ready = np.ones(len(wall), bool) if horizon is None else wall <= horizon
    if not ready.any():
        return None, rows
    idx = np.flatnonzero(ready)
    order = idx[np.lexsort((kt[idx], wall[idx]))]
    rest = rows.filter(pa.array(~ready)) if not ready.all() else rows.slice(0, 0)
    return (rows.take(pa.array(order)), wall[order]), rest


def _write(f: BinaryIO, chunks: Iterable[pa.RecordBatch | pa.Table], meta: Mapping[str, str], keep: PlaceFilter,
           note: str) -> int:
    app = f"tracer {__version__}" + (f" ({meta['command']})" if meta.get("command") else "")
    os_name = f"Linux {meta['kernel']}" if meta.get("kernel") else ""
    f.write(section_header(app, os_name, meta.get("host", ""), note))
    known: dict[tuple[str, str], int] = {}  # place (name, description) -> its IDB's index, in order of first use
    written = 0
    for events, wall in _time_ordered(chunks, meta, keep):
        places = Places(events)
        index = np.empty(len(places.names), np.int64)
        for i, desc in enumerate(zip(places.names, places.descriptions)):
            if desc not in known:
                known[desc] = len(known)
                f.write(interface_description(*desc))
            index[i] = known[desc]
        ifidx = index[places.index]
        direction = places.direction_flags()
        packet_ids = _col(events, "packet_id", np.uint64)
        raw, caplen, tot_len = build_headers(events)
        notes = comments(events)
        offsets = np.frombuffer(notes.buffers()[1], dtype=np.int64)[notes.offset: notes.offset + len(notes) + 1]
        text = np.frombuffer(notes.buffers()[2], dtype=np.uint8) if len(notes) else np.zeros(0, np.uint8)
        for a in range(0, events.num_rows, _CHUNK):
            b = min(a + _CHUNK, events.num_rows)
            f.write(_packet_blocks(ifidx[a:b], wall[a:b], raw[a:b], caplen[a:b], tot_len[a:b],
                                   direction[a:b], packet_ids[a:b], offsets[a: b + 1], text))
        written += events.num_rows
    return written


_CHUNK = 1 << 16  # rows per write: bounds the index arrays below to tens of MB
_FIXED_OPTS = 8 + 12  # epb_flags (4-byte head + 4), epb_packetid (4-byte head + 8)


def _packet_blocks(ifidx, ts, raw, caplen, tot_len, direction, packet_ids, offsets, text) -> bytes:
    """Enhanced Packet Blocks of a chunk of rows, laid out with numpy:
    28-byte head, headers (20 to 80 bytes, all 4-aligned), epb_flags,
    epb_packetid, comment option (4-byte head + text padded to 4),
    end-of-options, trailing total length."""
    n = len(ifidx)
    clen = np.diff(offsets)
    cpad = (clen + 3) // 4 * 4
    total = 28 + caplen + _FIXED_OPTS + 4 + cpad + 4 + 4
    start = np.concatenate(([0], np.cumsum(total)[:-1]))
    out = np.zeros(int(total.sum()), dtype=np.uint8)

    head = np.zeros((n, 7), dtype="<u4")
    head[:, 0] = _EPB
    head[:, 1] = total
    head[:, 2] = ifidx
    ts = ts.astype(np.uint64)
    head[:, 3] = ts >> np.uint64(32)
    head[:, 4] = ts & np.uint64(0xFFFFFFFF)
    head[:, 5] = caplen
    head[:, 6] = tot_len
    out[start[:, None] + np.arange(28)] = head.view(np.uint8).reshape(n, 28)
    for cap in np.unique(caplen).tolist():
        rows = caplen == cap
        out[start[rows, None] + 28 + np.arange(cap)] = raw[rows, :cap]
    opt = start + 28 + caplen
    fixed = np.zeros(n, dtype=[("fcode", "<u2"), ("flen", "<u2"), ("flags", "<u4"),
                               ("pcode", "<u2"), ("plen", "<u2"), ("pid", "<u8"),
                               ("ccode", "<u2"), ("clen", "<u2")])
    fixed["fcode"], fixed["flen"], fixed["flags"] = _EPB_FLAGS, 4, direction
    fixed["pcode"], fixed["plen"], fixed["pid"] = _EPB_PACKETID, 8, packet_ids
    fixed["ccode"], fixed["clen"] = _OPT_COMMENT, clen
    width = fixed.dtype.itemsize
    out[opt[:, None] + np.arange(width)] = fixed.view(np.uint8).reshape(n, width)
    # Comment bytes, in row order, fill exactly the comment slots in block
    # order: mark the slots (+1 at each start, -1 at each end, running sum)
    # and assign the text through the mask in one pass.
    text_at = opt + width
    edges = np.zeros(len(out) + 1, dtype=np.int8)
    np.add.at(edges, text_at, 1)
    np.add.at(edges, text_at + clen, -1)
    slots = np.cumsum(edges[:-1], dtype=np.int8).view(bool)
    out[slots] = text[offsets[0]: offsets[-1]]
    # end-of-options is already zeros; the trailing total length:
    out[(start + total - 4)[:, None] + np.arange(4)] = total.astype("<u4").view(np.uint8).reshape(n, 4)
    return out.tobytes()
