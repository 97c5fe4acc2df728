"""Journeys of docker-proxy legs, told in the output: a journey on either leg
of a relayed connection gets a `proxy` object in its JSON and, in the human
text, a line for the proxy hop, after the journey when the packet goes into
the proxy and before its hops when it comes out of it.

A packet that carries payload also gets the bytes it carries, as offsets in
its direction's stream on its leg (StreamStarts): docker-proxy copies the
bytes in order, so byte k of a leg's request (or reply) is byte k of the
other leg's, and a packet on one leg carries the same bytes as the packets
of the other leg whose ranges overlap its own, however the proxy
re-segments them."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np

from tracer.journey_rows import JourneyRows, _factorize, _lut
from tracer.proxies import ProxyLink, ProxyLinks

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = re.compile(r"(\S+ )?#")  # '#id ...', or after the wall-clock time ('03:38:15.856443 #id ...')
Note = tuple[int, ProxyLink, str, bool]  # journey index, link, leg, proxy hop after the hops


def journey_notes(jr: JourneyRows, links: ProxyLinks) -> list[Note]:
    """The journeys of `jr` that are on a known proxy leg. Only journeys
    whose first hop's two ports are both some leg's are candidates; those
    are looked up once per distinct (src, dst), not per journey: a
    connection's packets share them."""
    if not len(links) or not len(jr):
        return []
    first = np.asarray(jr.starts[:-1])
    s_codes, s_ports, _ = jr.src
    d_codes, d_ports, _ = jr.dst
    # Most journeys are on no leg: only those whose two ports are both a
    # leg's are looked up.
    ports = links.leg_ports()
    journeys = np.flatnonzero(np.isin(np.asarray(s_ports)[first], ports) & np.isin(np.asarray(d_ports)[first], ports))
    if not len(journeys):
        return []
    first = first[journeys]
    distinct, inverse = _distinct_pairs([np.asarray(c)[first].astype(np.int64) for c in (s_codes, s_ports, d_codes, d_ports)],
                                        len(jr.dst_ip))
    found: list[tuple[ProxyLink, str, bool] | None] = []
    for sc, sp, dc, dp in distinct:
        src, dst = (jr.src_ip[sc], sp), (jr.dst_ip[dc], dp)
        hit = links.find(src, dst) if src[0] is not None and dst[0] is not None else None
        if hit is None:
            found.append(None)
            continue
        link, leg = hit
        # Into the proxy: a request on the client leg, a reply on the backend leg.
        found.append((link, leg, src == link.client[0] if leg == "client" else dst == link.backend[0]))
    on_leg = np.array([f is not None for f in found])[inverse]
    return [(k, *found[i]) for k, i in zip(journeys[on_leg].tolist(), np.asarray(inverse)[on_leg].tolist())]


def _distinct_pairs(columns: list[np.ndarray], n_dst: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """The distinct (src code, src port, dst code, dst port) of the first
    hops and each journey's index into them. Packed into one int64 key and
    hashed (journey_rows._factorize): np.unique(axis=0) sorts the rows as
    structured values, compared field by field, which cost ~25 % of
    `trace --json`'s main thread. Codes or ports out of the packing's
    range (never from the kernel's records) take that slower path."""
    sc, sp, dc, dp = columns
    if len(sc) and min(int(c.min()) for c in columns) >= 0 and max(int(sp.max()), int(dp.max())) < 1 << 16 \
            and (int(sc.max()) + 1) * max(n_dst, int(dc.max()) + 1) < 1 << 31:
        n_dst = max(n_dst, int(dc.max()) + 1)
        keys, inverse = _factorize(((sc << 16 | sp) * n_dst + dc) << 16 | dp)
        out = []
        for k in keys.tolist():
            hi, d_port = divmod(k, 1 << 16)
            hi, d_code = divmod(hi, n_dst)
            out.append((hi >> 16, hi & 0xFFFF, d_code, d_port))
        return out, inverse
    distinct, inverse = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    return [tuple(row) for row in distinct.tolist()], np.ravel(inverse)


_TCP_SYN = 0x02
_SEQ = 1 << 32


class StreamStarts:
    """The initial sequence number of every TCP direction seen opening (its
    SYN or SYN-ACK), by the first hop's (src, dst) of its packets: a later
    packet of that direction carries bytes [seq - isn - 1, that + payload)
    of it. A connection opened before the tracer started has no start, and
    its packets no range. About the newest ``keep`` directions are kept.

    Every traced connection's opening is noted (its link comes later), so
    this is column-wise: a direction is one integer key (ids of its two
    addresses and its two ports), and a batch's openings go into the dict
    in one update."""

    def __init__(self, keep: int = 1 << 16) -> None:
        self._isn: dict[int, int] = {}
        self._keep = keep
        self._ip_ids: dict[str | None, int] = {}

    def __len__(self) -> int:
        return len(self._isn)

    def observe(self, jr: JourneyRows) -> None:
        """Remember the starts of the directions opened in ``jr``."""
        if jr.tcp_seq is None or not len(jr):
            return
        tcp = _lut(jr.protocol.values, lambda v: v == "tcp")[jr.protocol.codes]
        syn = np.flatnonzero(tcp & ((np.asarray(jr.tcp_flags) & _TCP_SYN) != 0))
        if not len(syn):
            return
        keys = self._keys(jr, syn).tolist()
        for key in keys:  # a re-opened direction (its ports reused) is the newest again, not evicted first
            self._isn.pop(key, None)
        self._isn.update(zip(keys, np.asarray(jr.tcp_seq)[syn].tolist()))
        if len(self._isn) > self._keep:  # the oldest first (insertion order)
            for key in list(itertools.islice(self._isn, len(self._isn) - self._keep)):
                del self._isn[key]

    def payload_range(self, jr: JourneyRows, k: int) -> tuple[int, int] | None:
        """payload_ranges of the one journey ``k``."""
        return self.payload_ranges(jr, [k])[0]

    def payload_ranges(self, jr: JourneyRows, ks: list[int]) -> list[tuple[int, int] | None]:
        """[start, end) of the bytes each journey of ``ks`` carries in its
        direction's stream; None without payload, a seen start or the TCP
        header length (captures written before it was recorded). IPv4
        headers are taken to have no options (Linux's TCP sends none). The
        journeys' keys are made in one pass (address names looked up once)."""
        if jr.tcp_seq is None or jr.tcp_doff is None or not len(ks):
            return [None] * len(ks)
        keys = self._keys(jr, np.asarray(ks)).tolist()
        out: list[tuple[int, int] | None] = []
        for k, key in zip(ks, keys):
            isn = self._isn.get(key)
            src_ip = jr.src_ip[int(jr.src[0][int(jr.starts[k])])]
            payload = 0
            if jr.tcp_doff[k] and isn is not None and src_ip is not None:
                payload = int(jr.length[k]) - (40 if ":" in src_ip else 20) - 4 * int(jr.tcp_doff[k])
            if payload <= 0:
                out.append(None)
                continue
            start = (int(jr.tcp_seq[k]) - isn - 1) % _SEQ
            out.append((start, start + payload))
        return out

    def _keys(self, jr: JourneyRows, ks: np.ndarray) -> np.ndarray:
        """(src address id, src port, dst address id, dst port) of the first
        hops of journeys ``ks``, packed into one integer each."""
        h = np.asarray(jr.starts)[ks]
        s_codes, d_codes = np.asarray(jr.src[0])[h], np.asarray(jr.dst[0])[h]
        for _ in range(2):
            ids = self._ip_ids
            s_lut = np.array([ids.setdefault(jr.src_ip[c], len(ids)) for c in range(max(s_codes.max(), 0) + 1)],
                             np.uint64)
            d_lut = np.array([ids.setdefault(jr.dst_ip[c], len(ids)) for c in range(max(d_codes.max(), 0) + 1)],
                             np.uint64)
            if len(ids) <= 0x10000:
                break
            # ids must fit in 16 bits (checked after naming this batch's
            # addresses, which may pass the bound): start over with them
            self._ip_ids.clear()
            self._isn.clear()
        sport = np.asarray(jr.src[1])[h].astype(np.uint64)
        dport = np.asarray(jr.dst[1])[h].astype(np.uint64)
        return (s_lut[s_codes] << np.uint64(48)) | (sport << np.uint64(32)) | (d_lut[d_codes] << np.uint64(16)) | dport


def annotate(block: bytes | memoryview, jr: JourneyRows, links: ProxyLinks, as_json: bool,
             ends: np.ndarray | None = None) -> bytes | memoryview:
    """The output block (JSON lines or text) with the proxy hop of every
    journey on a known proxy leg, and the bytes it carries. Every block
    goes through here, linked or not: a connection's opening comes before
    its link (made by the first bytes the proxy relays). ``ends``: JSON
    only, each line's newline offset in the block where the writer knows
    them (else they are found)."""
    if links.streams is None:
        links.streams = StreamStarts()
    links.streams.observe(jr)
    notes = journey_notes(jr, links)
    if not notes:
        return block
    ranges = links.streams.payload_ranges(jr, [k for k, *_ in notes])
    return annotate_json(block, notes, ranges, ends) if as_json else annotate_text(block, jr, notes, ranges)


def recorded_links(links: ProxyLinks, infos: list[dict]) -> None:
    """Links read back from a capture's `proxy` rows into ``links`` (a row
    that is not a link, in a damaged file, is left out)."""
    for info in infos:
        try:
            links.add_recorded(ProxyLink.from_record(info))
        except (KeyError, ValueError, TypeError):
            continue


def annotate_json(block: bytes | memoryview, notes: list[Note], ranges: list | None = None,
                  ends: np.ndarray | None = None) -> bytes:
    """JSON lines with `"proxy": {...}` added to the noted journeys' objects
    (with `"bytes": [start, end]` where ``ranges`` has the note's). The
    lines end at ``ends`` (each one's newline offset, as the JSON writer
    returns them), else the block's line ends are found once, in one pass
    (a 14 MB show: 2.3 ms of CPU, 0.36 µs a packet); only the noted lines are
    cut out and rebuilt, the text between them is copied as it is. Each
    journey has one line, so a line is noted at most once. The block is
    read in place (a show of `trace --json` is ~14 MB: a copy of it cost
    more than the lines rebuilt); the result is its one copy."""
    if not notes:
        return bytes(block)
    data = memoryview(block).cast("B")
    assert len({note[0] for note in notes}) == len(notes), "a journey's line noted twice"
    if ends is None:
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 0x0A)
    out, copied = [], 0
    for i, (k, link, leg, _) in sorted(enumerate(notes), key=lambda note: note[1][0]):
        start = int(ends[k - 1]) + 1 if k else 0
        end = int(ends[k]) if k < len(ends) else len(data)  # line k: up to its newline (the last may have none)
        obj = link.to_json(leg)
        if ranges is not None:
            obj["bytes"] = list(ranges[i]) if ranges[i] else None
        out += [data[copied:start], data[start:end][:-1], b', "proxy": ', json.dumps(obj, ensure_ascii=False).encode(),
                b"}"]
        copied = end
    out.append(data[copied:])
    return b"".join(out)


def annotate_text(block: bytes | memoryview, jr: JourneyRows, notes: list[Note], ranges: list | None = None) -> bytes:
    """Human text with the proxy hop's line in the noted journeys. A
    journey's text is its header line ('#' and the packet id, after any
    colour codes and the time) and then its hop lines, whatever their number."""
    data = bytes(block)
    if not notes:
        return data
    lines = data.decode().split("\n")
    header = [i for i, line in enumerate(lines) if _HEADER.match(_COLOUR.sub("", line))]
    if len(header) != len(jr):  # not the layout this expects: leave it be
        return data
    ends = header[1:] + [len(lines) - 1 if lines[-1] == "" else len(lines)]
    inserts = []
    for i, (k, link, _leg, after) in enumerate(notes):
        span = ranges[i] if ranges is not None else None
        carried = f"  bytes {span[0]}-{span[1]}" if span else ""
        inserts.append((ends[k] if after else header[k] + 1, f"{'':>12s}  proxy  {link.text()}{carried}"))
    for at, text in sorted(inserts, key=lambda x: x[0], reverse=True):
        lines.insert(at, text)
    return "\n".join(lines).encode()
