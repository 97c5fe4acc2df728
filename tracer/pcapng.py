"""Export a capture as pcapng: one packet per sighting, for Wireshark/tshark.

tracer records header fields, not packet bytes, so each sighting becomes a
synthesised IPv4 + TCP/UDP/ICMP header built from its row (addresses and ports
as seen at that hop, ids, TTL, TCP seq/ack/flags). The captured length is the
headers only; the original length is the packet's IPv4 total length, so
Wireshark shows the real size and marks the payload as not captured.

Each distinct (ifname, netns) gets an Interface Description Block (raw IPv4
link type, nanosecond timestamps); each sighting's hook, interface, container,
packet and flow ids go in the packet's comment, so a Wireshark filter such as
``frame.comment contains "hook=tc_egress"`` selects one place in the path.

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
from tracer.analysis import event_rows, wall_ns
from tracer.events import PROTOCOL_NUMBERS
from tracer.journeys import fill_flows
from tracer.packet_window import PacketWindow

LINKTYPE_IPV4 = 228  # raw IPv4, no link-layer header

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT = 0, 1
_SHB_HARDWARE, _SHB_OS, _SHB_USERAPPL = 2, 3, 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9

_IP_LEN = 20
_L4_LEN = {6: 20, 17: 8, 1: 8}  # TCP without options, UDP, ICMP echo
_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad4(len(value))


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header(app: str, os_name: str = "", hardware: str = "") -> bytes:
    opts = b""
    if hardware:
        opts += _option(_SHB_HARDWARE, hardware.encode())
    if os_name:
        opts += _option(_SHB_OS, os_name.encode())
    opts += _option(_SHB_USERAPPL, app.encode()) + _option(_OPT_END, b"")
    # section length -1: not known in advance (we stream)
    return _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + opts)


def interface_description(name: str, description: str, linktype: int = LINKTYPE_IPV4) -> bytes:
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
    ]
)
assert _HDR.itemsize == 40


def _ipv4_numbers(col: pa.ChunkedArray) -> np.ndarray:
    """Dotted-quad strings as uint32 (0 for null or non-IPv4)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        values = arr.dictionary.to_pylist()
        lut = np.array([_ip(v) for v in values] + [0], dtype=np.uint32)
        return lut[pc.fill_null(arr.indices, len(values)).to_numpy()]
    return np.array([_ip(v) for v in arr.to_pylist()], dtype=np.uint32)


def _ip(text: str | None) -> int:
    try:
        a, b, c, d = (int(x) for x in (text or "").split("."))
        return (a << 24) | (b << 16) | (c << 8) | d
    except ValueError:
        return 0


def _col(table: pa.Table, name: str, dtype) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=dtype)
    return pc.fill_null(table[name], 0).to_numpy().astype(dtype)


def build_headers(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n x 40 header bytes, captured length per row, original length per row)."""
    n = table.num_rows
    encoded = pc.dictionary_encode(table["protocol"].cast(pa.string())).combine_chunks()
    numbers = [PROTOCOL_NUMBERS.get(p, 0) for p in encoded.dictionary.to_pylist()]
    proto = np.array(numbers + [0], dtype=np.uint8)[pc.fill_null(encoded.indices, len(numbers)).to_numpy()]
    l4 = np.zeros(n, dtype=np.int64)
    for num, size in _L4_LEN.items():
        l4[proto == num] = size
    caplen = _IP_LEN + l4
    length = _col(table, "length", np.int64)
    tot_len = np.where(length >= caplen, length, caplen)  # 0 = unknown: claim the headers

    h = np.zeros(n, dtype=_HDR)
    h["ver_ihl"] = 0x45
    h["tot_len"] = tot_len
    h["id"] = _col(table, "ip_id", np.uint16)
    h["ttl"] = _col(table, "ttl", np.uint8)
    h["proto"] = proto
    h["src"] = _ipv4_numbers(table["src_ip"])
    h["dst"] = _ipv4_numbers(table["dst_ip"])
    sport, dport = _col(table, "src_port", np.uint16), _col(table, "dst_port", np.uint16)
    tcp, udp, icmp = proto == 6, proto == 17, proto == 1
    h["sport"] = np.where(icmp, 0, sport)
    h["dport"] = np.where(icmp, 0, dport)
    h["seq"] = np.where(tcp, _col(table, "tcp_seq", np.uint32), 0)
    h["ack"] = np.where(tcp, _col(table, "tcp_ack", np.uint32), 0)
    h["off"] = np.where(tcp, 5 << 4, 0)
    h["flags"] = np.where(tcp, _col(table, "tcp_flags", np.uint8), 0)
    h["win"] = np.where(tcp, 65535, 0)  # not recorded; 0 would read as a zero-window alert

    raw = h.view(np.uint8).reshape(n, 40)
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
    return raw, caplen, tot_len


def comments(table: pa.Table) -> pa.Array:
    """'hook=nf_prerouting/after if=veth-lab-h container=web packet=12 flow=34'
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
        " packet=", pc.fill_null(table["packet_id"].cast(pa.string()), "0"),
        " flow=", pc.fill_null(table["flow_id"].cast(pa.string()), "0"),
    ]
    line = pc.binary_join_element_wise(*parts, "")
    reason = text("drop_reason")
    line = pc.if_else(pc.is_null(reason), line, pc.binary_join_element_wise(line, " reason=", reason, ""))
    return line.cast(pa.large_string()).combine_chunks()


def interfaces(table: pa.Table) -> tuple[list[tuple[str, str]], np.ndarray]:
    """One (if_name, if_description) per distinct (ifname, netns), and each
    row's interface index. Two containers' 'eth0' differ by netns."""
    encoded = pc.dictionary_encode(pc.fill_null(table["ifname"].cast(pa.string()), "")).combine_chunks()
    names = np.array(encoded.dictionary.to_pylist(), dtype=object)[encoded.indices.to_numpy()] if len(encoded) else []
    name_code = encoded.indices.to_numpy().astype(np.int64)
    netns = _col(table, "netns", np.int64)
    _, first, index = np.unique((name_code << 32) | netns, return_index=True, return_inverse=True)
    has_ct = "container_name" in table.column_names
    containers = table["container_name"].take(pa.array(first)).cast(pa.string()).to_pylist() if has_ct else []
    out = []
    for i, row in enumerate(first.tolist()):
        ifname = str(names[row])
        container = containers[i] if has_ct else None
        description = f"netns {int(netns[row])}" + (f" container {container}" if container else "")
        out.append((ifname or "(no device)", description))  # drop rows: the drop tracepoint has no device
    return out, np.asarray(index).ravel()


def export_pcapng(source: pa.Table | Iterable[pa.RecordBatch | pa.Table], out: BinaryIO | str | Path,
                  metadata: Mapping[str, str] | None = None) -> int:
    """Write every sighting of ``source`` to ``out`` as pcapng, in time order.
    ``source`` is a table (a capture or EVENT_SCHEMA) or sighting batches
    (``CaptureStream.sightings()``), streamed in bounded memory: whole
    packets a window at a time (their flow filled in from their netfilter
    rows), rows put in time order over twice that window. Returns the
    number of packets written."""
    chunks = [source] if isinstance(source, pa.Table) else source
    meta = metadata or {}
    if isinstance(out, (str, Path)):
        with open(out, "wb") as f:
            return _write(f, chunks, meta)
    return _write(out, chunks, meta)


def _time_ordered(chunks: Iterable[pa.RecordBatch | pa.Table], meta: Mapping[str, str]) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(rows, wall clock ns) in (time, ktime) order, a piece at a time."""
    window = PacketWindow()
    held: list[pa.Table] = []
    newest = None
    for packets in window.packets(event_rows(_table(c)) for c in chunks):
        packets = fill_flows(packets.unify_dictionaries().combine_chunks())  # tc rows learn their packet's conntrack entry
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


def _write(f: BinaryIO, chunks: Iterable[pa.RecordBatch | pa.Table], meta: Mapping[str, str]) -> int:
    app = f"tracer {__version__}" + (f" ({meta['command']})" if meta.get("command") else "")
    os_name = f"Linux {meta['kernel']}" if meta.get("kernel") else ""
    f.write(section_header(app, os_name, meta.get("host", "")))
    known: dict[tuple[str, str], int] = {}  # interface -> its IDB's index, in order of first use
    written = 0
    for events, wall in _time_ordered(chunks, meta):
        descs, local = interfaces(events)
        index = np.empty(len(descs), np.int64)
        for i, desc in enumerate(descs):
            if desc not in known:
                known[desc] = len(known)
                f.write(interface_description(*desc))
            index[i] = known[desc]
        ifidx = index[local]
        raw, caplen, tot_len = build_headers(events)
        notes = comments(events)
        offsets = np.frombuffer(notes.buffers()[1], dtype=np.int64)[notes.offset: notes.offset + len(notes) + 1]
        text = np.frombuffer(notes.buffers()[2], dtype=np.uint8) if len(notes) else np.zeros(0, np.uint8)
        for a in range(0, events.num_rows, _CHUNK):
            b = min(a + _CHUNK, events.num_rows)
            f.write(_packet_blocks(ifidx[a:b], wall[a:b], raw[a:b], caplen[a:b], tot_len[a:b], offsets[a: b + 1], text))
        written += events.num_rows
    return written


_CHUNK = 1 << 16  # rows per write: bounds the index arrays below to tens of MB


def _packet_blocks(ifidx, ts, raw, caplen, tot_len, offsets, text) -> bytes:
    """Enhanced Packet Blocks of a chunk of rows, laid out with numpy:
    28-byte head, headers (20/28/40 bytes, already 4-aligned), comment option
    (4-byte head + text padded to 4), end-of-options, trailing total length."""
    n = len(ifidx)
    clen = np.diff(offsets)
    cpad = (clen + 3) // 4 * 4
    total = 28 + caplen + 4 + cpad + 4 + 4
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
    opt_head = np.zeros((n, 2), dtype="<u2")
    opt_head[:, 0] = _OPT_COMMENT
    opt_head[:, 1] = clen
    out[opt[:, None] + np.arange(4)] = opt_head.view(np.uint8).reshape(n, 4)
    # Comment bytes, in row order, fill exactly the comment slots in block
    # order: mark the slots (+1 at each start, -1 at each end, running sum)
    # and assign the text through the mask in one pass.
    edges = np.zeros(len(out) + 1, dtype=np.int8)
    np.add.at(edges, opt + 4, 1)
    np.add.at(edges, opt + 4 + clen, -1)
    slots = np.cumsum(edges[:-1], dtype=np.int8).view(bool)
    out[slots] = text[offsets[0]: offsets[-1]]
    # end-of-options is already zeros; the trailing total length:
    out[(start + total - 4)[:, None] + np.arange(4)] = total.astype("<u4").view(np.uint8).reshape(n, 4)
    return out.tobytes()
