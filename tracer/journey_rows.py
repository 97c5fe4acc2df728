"""Journeys on whole columns: ``journey_rows`` computes a batch's journeys
(``JourneyRows``) column-wise for the live --json path and the summary, and
``journeys_of_table`` builds Journey objects from them. The journey rules
(verdict, NAT) are in tracer/journeys.py, the JSON text in
tracer/journey_json.py, holding a live stream's packets until they are whole
in tracer/journey_assembler.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.addresses import endpoint
from tracer.untimed import timed, times_or_none, untimed_last
from tracer.events import CONTAINER, FLAG_IN_CONTAINER_NS
from tracer.journeys import (_DIRECTION_NAMES, Hop, Journey, TERMINAL_SIGHTINGS, VERDICTS, _flags_text, _no_gc,
                             _normalise, _numpy, _sort)


# --- vectorised journeys (the live --json path) -------------------------------
#
# Building one Journey/Hop object per sighting and json.dumps-ing it costs
# ~10 µs per event: too slow for 100k events/s. The functions below compute
# the same journeys on whole columns: per-packet facts with reduceat over
# packet groups, and the JSON text by formatting each *distinct* value once
# (a handful of hooks, interfaces, endpoints) and gluing per-row fragments
# with Arrow string kernels. One packet's JSON line is then a contiguous
# slice of the glued buffer.


def pair_index(src: tuple, dst: tuple) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Per item of two endpoint columns its (src, dst) pair's index, and
    the (src keys, dst keys) of the distinct pairs (keys as _endpoint_key)."""
    su, sidx = _factorize(_endpoint_key(src))
    du, didx = _factorize(_endpoint_key(dst))
    pu, pair = _factorize(sidx * len(du) + didx)
    return pair, (su[pu // len(du)], du[pu % len(du)])


@dataclass(slots=True)
class _Codes:
    """A dictionary column as integer codes: ``codes`` index ``values``; the
    last slot of ``values`` is None (null rows point there)."""

    codes: np.ndarray
    values: list


def _codes(col: pa.ChunkedArray | pa.Array) -> _Codes:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = arr.dictionary.to_pylist()
    return _Codes(_numpy(arr.indices, len(values)).astype(np.int64), values + [None])


def _lut(values: list, fn: Callable[[object], object], dtype=bool) -> np.ndarray:
    return np.array([fn(v) for v in values], dtype=dtype)


def _factorize(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, index of each row's key), for non-negative int64 keys.
    Small key ranges go through a lookup table, others through Arrow's hash
    kernel: both avoid np.unique's sort."""
    if len(key) and 0 <= key.min() and key.max() < 4 * len(key) + 4096:
        present = np.bincount(key)
        uniq = np.flatnonzero(present)
        lut = np.zeros(len(present), np.int64)
        lut[uniq] = np.arange(len(uniq))
        return uniq, lut[key]
    enc = pa.array(key).dictionary_encode()
    return enc.dictionary.to_numpy(), enc.indices.to_numpy().astype(np.int64)


def _dumps(v) -> str:
    return json.dumps(v)


@dataclass(slots=True)
class JourneyRows:
    """Journeys of a table as columns, hops in journey order (packets by first
    sighting, hops by time, one drop row last). Row arrays index ``work``
    through ``rows``; packet arrays have one entry per journey."""

    work: pa.Table | None  # None when built from the kernel's journey records
    rows: np.ndarray  # row of work for each hop, journey order
    starts: np.ndarray  # first hop of each packet (into rows), plus a final end
    packet_id: np.ndarray
    flow_id: np.ndarray  # 0 = unknown
    direction: np.ndarray  # index into _DIRECTION_NAMES
    verdict: np.ndarray  # index into VERDICTS
    reason: np.ndarray  # drop_reason code of the journey (null slot when not dropped)
    last_seen: np.ndarray  # hop index (into rows) of the last hop before the drop, -1 if none
    ktime: np.ndarray  # per hop
    dt: np.ndarray  # per hop
    hook: _Codes
    stage: _Codes
    role: _Codes  # with the in-container-netns fill; per hop
    drop_reason: _Codes
    src: tuple[np.ndarray, np.ndarray, np.ndarray]  # (ip code, port, icmp) per hop, drop rows filled
    dst: tuple[np.ndarray, np.ndarray, np.ndarray]
    src_ip: list
    dst_ip: list
    container: _Codes  # per hop: name, else id[:12]
    container_of: np.ndarray  # per packet: container code of the first named hop
    container_to: np.ndarray  # per packet: the last named hop's, where that is another container (null slot else)
    protocol: _Codes  # per packet
    tcp_flags: np.ndarray  # per packet
    length: np.ndarray  # per packet
    netns: np.ndarray  # per hop
    ifname: _Codes  # per hop
    container_id: _Codes  # per hop
    wall_ns: np.ndarray  # per packet: wall clock (UTC ns) of the first hop; 0 unknown
    # Per hop: its (src, dst) as an index into the distinct pairs, whose
    # endpoint keys (_endpoint_key) are ``pair_keys``: the outputs format
    # each distinct pair once. None until ``pairs()`` computes them (the
    # kernel's records give them per address tuple, far fewer than hops).
    pair: np.ndarray | None = None
    pair_keys: tuple[np.ndarray, np.ndarray] | None = None
    # Per packet, TCP sequence number and data offset (words; 0 unknown):
    # where a packet's payload sits in its stream (proxy_output's byte ranges).
    tcp_seq: np.ndarray | None = None
    tcp_doff: np.ndarray | None = None
    # Per hop, whether it has a ktime_ns (None: every hop has; a damaged
    # capture's row may not). One without has no time: its ``ktime`` and
    # ``dt`` read 0 and are written as null ('-' in text).
    timed: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.packet_id)

    def next_hops(self) -> np.ndarray:
        """Per hop but the last, whether the next hop is its journey's and
        both have a ktime_ns (a latency between them)."""
        inner = np.ones(max(len(self.rows) - 1, 0), bool)
        inner[self.starts[1:-1] - 1] = False  # last hop of a journey -> first of the next
        if self.timed is not None:
            inner &= self.timed[:-1] & self.timed[1:]
        return inner

    def pairs(self) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """(per hop: index of its (src, dst) pair, (src keys, dst keys) of
        the distinct pairs): keys as _endpoint_key, the outputs' texts."""
        if self.pair is None:
            self.pair, self.pair_keys = pair_index(self.src, self.dst)
        return self.pair, self.pair_keys

    def tcp_flags_key(self) -> np.ndarray:
        """Per journey its TCP flags, or 256 when not TCP (the headers' key)."""
        tcp = _lut(self.protocol.values, lambda v: v == "tcp")[self.protocol.codes]
        return np.where(tcp, self.tcp_flags.astype(np.int64), 256)

    def head(self, n: int) -> "JourneyRows":
        """The first ``n`` journeys (for --count)."""
        if n >= len(self):
            return self
        h = int(self.starts[n])
        per_hop = {f: getattr(self, f)[:h] for f in ("rows", "ktime", "dt", "netns")}
        codes = {f: _Codes(getattr(self, f).codes[:h], getattr(self, f).values)
                 for f in ("hook", "stage", "role", "drop_reason", "container", "ifname", "container_id")}
        per_journey = {f: getattr(self, f)[:n] for f in ("packet_id", "flow_id", "direction", "verdict", "reason",
                                                         "last_seen", "container_of", "container_to",
                                                         "tcp_flags", "length",
                                                         "wall_ns")}
        return JourneyRows(
            work=self.work, starts=self.starts[: n + 1],
            src=tuple(a[:h] for a in self.src), dst=tuple(a[:h] for a in self.dst),
            src_ip=self.src_ip, dst_ip=self.dst_ip,
            protocol=_Codes(self.protocol.codes[:n], self.protocol.values),
            pair=self.pair[:h] if self.pair is not None else None, pair_keys=self.pair_keys,
            tcp_seq=self.tcp_seq[:n] if self.tcp_seq is not None else None,
            tcp_doff=self.tcp_doff[:n] if self.tcp_doff is not None else None,
            **per_hop, **codes, **per_journey,
        )


def journey_containers(codes: np.ndarray, values: list, starts: np.ndarray,
                       ids: "_Codes | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Per journey (hops ``starts[g]:starts[g+1]``), the code of its
    container: its first hop's that names one; and the container it ends
    in where that is another one (a packet from one container to another,
    through a published port say), else the null slot (the last value).
    Two hops are in different containers when their container ids differ
    (``ids``, per hop), or without ids, their names."""
    null = len(values) - 1
    n = len(codes)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    truthy = _lut(values, bool)[codes]
    first = starts[:-1]
    at = np.arange(n)
    firstnamed = np.minimum.reduceat(np.where(truthy, at, n), first)
    lastnamed = np.maximum.reduceat(np.where(truthy, at, -1), first)
    named = firstnamed < starts[1:]
    container_of = np.where(named, codes[np.minimum(firstnamed, n - 1)], null)
    fi, li = np.minimum(firstnamed, n - 1), np.maximum(lastnamed, 0)
    last = np.where(lastnamed >= first, codes[li], null)
    # Compared by value: a dictionary built from several chunks repeats values.
    same = _canonical(values)
    other = same[last] != same[container_of]
    if ids is not None:
        id_same = _canonical(ids.values)
        a, b = id_same[ids.codes[fi]], id_same[ids.codes[li]]
        known = _lut(ids.values, bool)
        both = known[ids.codes[fi]] & known[ids.codes[li]]
        other = np.where(both, a != b, other)
    container_to = np.where(named & other, last, null)
    return container_of, container_to


def _canonical(values: list) -> np.ndarray:
    """Per code, the first code of an equal value."""
    first: dict = {}
    return np.array([first.setdefault(v, i) for i, v in enumerate(values)], np.int64)


def _journey_rows(work: pa.Table) -> JourneyRows:
    """JourneyRows of a normalised table sorted by (packet_id, ktime_ns)."""
    n = work.num_rows
    pid = _numpy(work["packet_id"])
    ktime = _numpy(work["ktime_ns"]).astype(np.int64)
    has_kt = timed(work)  # None: every row has a ktime_ns; a packet has one on its first row if on any (_sort)
    starts0 = np.flatnonzero(np.diff(pid)) + 1 if n else np.zeros(0, np.int64)
    starts0 = np.concatenate(([0], starts0)).astype(np.int64) if n else starts0
    sizes0 = np.diff(np.append(starts0, n))
    group = np.repeat(np.arange(len(starts0)), sizes0)

    # Facts some rows know, over all of a packet's rows (as _build_sorted).
    flow = np.maximum.reduceat(_numpy(work["flow_id"]), starts0) if n else np.zeros(0, np.uint64)
    dcodes = _codes(work["direction"])
    dir_row = _lut(dcodes.values, lambda v: _DIRECTION_CODES.get(v, 0), np.int8)[dcodes.codes]
    direction = np.maximum.reduceat(dir_row, starts0) if n else np.zeros(0, np.int8)
    dt_all = ktime - ktime[starts0][group] if n else ktime
    proto_all = _codes(work["protocol"])
    tflags_all = _numpy(work["tcp_flags"])

    # The drop row ends the journey; later drop rows of the same packet go.
    hook = _codes(work["hook"])
    is_drop_all = _lut(hook.values, lambda v: v == "drop")[hook.codes]
    rows = np.arange(n)
    if is_drop_all.any():
        drops = np.flatnonzero(is_drop_all)
        dup = np.zeros(n, bool)
        dup[drops[1:][group[drops[1:]] == group[drops[:-1]]]] = True
        rows = np.flatnonzero(~dup)
        key = group[rows] * 2 + is_drop_all[rows]
        rows = rows[np.argsort(key, kind="stable")]
    sizes = np.bincount(group[rows], minlength=len(starts0))
    first = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)[: len(sizes)]

    # Journeys in order of first sighting (ties by packet id), as build_journeys.
    # (A packet without any ktime_ns after those with one, as build_journeys.)
    order = np.lexsort((pid[starts0], untimed_last(ktime, has_kt)[rows[first]])) if n else first
    if not np.array_equal(order, np.arange(len(order))):
        sizes_o = sizes[order]
        new_first = np.concatenate(([0], np.cumsum(sizes_o)[:-1])).astype(np.int64)
        rows = rows[np.repeat(first[order] - new_first, sizes_o) + np.arange(len(rows))]
        sizes, first = sizes_o, new_first
    starts = np.append(first, len(rows)).astype(np.int64)
    last = starts[1:] - 1

    # Per-hop columns in journey order.
    hook = _Codes(hook.codes[rows], hook.values)
    is_drop = is_drop_all[rows]
    stage = _codes(work["nat_stage"])
    stage = _Codes(stage.codes[rows], stage.values)
    role = _codes(work["if_role"])
    in_ns = ((_numpy(work["flags"]) & FLAG_IN_CONTAINER_NS) != 0)[rows]
    role_values = role.values + [CONTAINER]  # extra slot: a tc program inside a container netns
    role_codes = role.codes[rows]
    role_codes[in_ns & (role_codes == len(role.values) - 1)] = len(role_values) - 1
    role = _Codes(role_codes, role_values)

    verdict, dropped, last_seen = verdicts(hook, stage, role, is_drop, starts)
    reasons = _codes(work["drop_reason"])
    reason_hop = reasons.codes[rows]
    null_reason = len(reasons.values) - 1
    reason = np.where(dropped, reason_hop[last], null_reason)

    # Endpoints as codes; a drop row without addresses shows its last sighting's.
    protocol_row = proto_all.codes[rows]
    icmp_row = _lut(proto_all.values, lambda v: v in events.ICMP_NAMES)[protocol_row]
    s_ip, d_ip = _codes(work["src_ip"]), _codes(work["dst_ip"])
    src = [s_ip.codes[rows], _numpy(work["src_port"])[rows].astype(np.int64), icmp_row.copy()]
    dst = [d_ip.codes[rows], _numpy(work["dst_port"])[rows].astype(np.int64), icmp_row.copy()]
    s_null, d_null = len(s_ip.values) - 1, len(d_ip.values) - 1
    fill = last[(last_seen >= 0) & (src[0][last] == s_null) & (dst[0][last] == d_null)]
    for arr in (*src, *dst):
        arr[fill] = arr[fill - 1]

    # Container: the name, else the short id; a journey's is its first named hop's.
    names, ids = _codes(work["container_name"]), _codes(work["container_id"])
    c_values = names.values[:-1] + [v[:12] if v else None for v in ids.values]
    c_codes = np.where(names.codes == len(names.values) - 1, len(names.values) - 1 + ids.codes, names.codes)[rows]
    container_of, container_to = journey_containers(c_codes, c_values, starts, _Codes(ids.codes[rows], ids.values))

    ifn = _codes(work["ifname"])
    p_first = starts0[order]  # the packet's earliest row (before drop reordering), as _build_sorted
    # Wall clock of the first hop: its ktime plus the packet's first row's offset (as _build_sorted).
    time = pc.cast(work["time"], pa.int64())
    # In 64 bits, wrapping as the writers' time = ktime + offset did (a damaged
    # ktime_ns past 2^63 reads back as it was written, not as a failed cast).
    ktime_signed = pc.cast(work["ktime_ns"], pa.int64(), safe=False)
    offset = pc.fill_null(pc.subtract(time, ktime_signed), 0).to_numpy(zero_copy_only=False)
    known = pc.is_valid(time).to_numpy(zero_copy_only=False)
    wall = np.where(known[p_first], ktime[rows[first]] + offset[p_first], 0) if n else np.zeros(0, np.int64)
    return JourneyRows(
        work=work,
        rows=rows,
        starts=starts,
        packet_id=pid[p_first],
        flow_id=flow[order],
        direction=direction[order],
        verdict=verdict,
        reason=reason,
        last_seen=last_seen,
        ktime=ktime[rows],
        dt=dt_all[rows],
        hook=hook,
        stage=stage,
        role=role,
        drop_reason=_Codes(reason_hop, reasons.values),
        src=tuple(src),
        dst=tuple(dst),
        src_ip=s_ip.values,
        dst_ip=d_ip.values,
        container=_Codes(c_codes, c_values),
        container_of=container_of,
        container_to=container_to,
        protocol=_Codes(proto_all.codes[p_first], proto_all.values),
        tcp_flags=tflags_all[p_first],
        length=_numpy(work["length"])[p_first],
        netns=_numpy(work["netns"])[rows].astype(np.int64),
        ifname=_Codes(ifn.codes[rows], ifn.values),
        container_id=_Codes(ids.codes[rows], ids.values),
        wall_ns=wall.astype(np.int64),
        tcp_seq=_numpy(work["tcp_seq"])[p_first].astype(np.int64),
        tcp_doff=_numpy(work["tcp_doff"])[p_first].astype(np.int64),
        timed=None if has_kt is None else has_kt[rows],
    )


_DIRECTION_CODES = {"original": 1, "reply": 2}


def verdicts(hook: _Codes, stage: _Codes, role: _Codes, is_drop: np.ndarray,
             starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """verdict_of on columns, for hops in journey order (a drop hop last)
    with journeys starting at ``starts`` (plus a final end): per journey the
    index into VERDICTS, whether it was dropped, and the hop last seen
    before the drop (-1 if none)."""
    last = starts[1:] - 1
    verdict, dropped = verdict_codes(_terminal(hook, stage, role), is_drop, starts[:-1], last)
    return verdict, dropped, np.where(is_drop[last] & (last > starts[:-1]), last - 1, -1)


def next_in_packet(n: int, starts: np.ndarray) -> np.ndarray:
    """Of n rows grouped by packet (each packet's first row at ``starts``),
    whether row i and row i + 1 are one packet's: a mask of n - 1."""
    pair = np.ones(max(n - 1, 0), dtype=bool)
    pair[starts[1:] - 1] = False
    return pair


def verdict_codes(terminal: np.ndarray, is_drop: np.ndarray, first: np.ndarray,
                  last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """verdict_of over rows: journey i is rows first[i]..last[i] in journey
    order (a drop row last), ``terminal`` per row. Per journey the index into
    VERDICTS and whether it was dropped. A drop right after a terminal
    sighting (QUEUE_PURGE at the receiving socket) is a delivered packet."""
    two = last > first
    last_drop = is_drop[last]
    delivered = np.where(last_drop, two & terminal[np.where(two, last - 1, last)], terminal[last])
    dropped = last_drop & ~delivered
    return np.where(delivered, 0, np.where(dropped, 1, 2)).astype(np.int8), dropped


def _terminal(hook: _Codes, stage: _Codes, role: _Codes) -> np.ndarray:
    """is_terminal for every hop, rule by rule over the small dictionaries."""
    out = np.zeros(len(hook.codes), bool)
    for name, stages, roles, _ in TERMINAL_SIGHTINGS:
        m = _lut(hook.values, lambda v: v == name)[hook.codes]
        if stages is not None:
            m &= _lut(stage.values, lambda v: v in stages)[stage.codes]
        if roles is not None:
            m &= _lut(role.values, lambda v: v in roles)[role.codes]
        out |= m
    return out


def journey_rows(table: "pa.Table | JourneyRows") -> JourneyRows:
    """JourneyRows of an event table (EVENT_SCHEMA, or a table from
    ``pop_complete_table``). Given JourneyRows, returns them: a caller that
    needs several views of one batch (JSON, summary) computes them once."""
    if isinstance(table, JourneyRows):
        return table
    work = _normalise(table)
    if not _is_sorted(work):
        work = _sort(work)
    return _journey_rows(work.combine_chunks())


def _is_sorted(work: pa.Table) -> bool:
    """Already in (packet_id, ktime_ns) order (pop_complete_table's output)?"""
    if work.num_rows < 2:
        return True
    pid = _numpy(work["packet_id"])
    if work["ktime_ns"].null_count:  # _sort places a row without one (tracer/untimed.py)
        return False
    kt = _numpy(work["ktime_ns"])
    same = pid[1:] == pid[:-1]
    return bool(np.all(pid[1:] >= pid[:-1]) and np.all(~same | (kt[1:] >= kt[:-1])))


def _mixed_radix(parts: list[tuple[np.ndarray, int | None]]) -> np.ndarray:
    """One int64 key from several small codes (the radix of the first is unused)."""
    key = parts[0][0].astype(np.int64)
    for codes, radix in parts[1:]:
        key = key * radix + codes
    return key


def _endpoint_key(ep: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    ip, port, icmp = ep
    return (ip << 17) | (port << 1) | icmp


def journeys_of_table(table: pa.Table) -> list[Journey]:
    """build_journeys(table), built from JourneyRows: the per-packet work is
    done on columns, Python only creates the objects (the human path)."""
    jr = journey_rows(table)
    if not len(jr):
        return []
    with _no_gc():
        return _journeys_of_rows(jr)


def _journeys_of_rows(jr: JourneyRows) -> list[Journey]:
    def objects(c: _Codes) -> list:
        lut = np.empty(len(c.values), dtype=object)
        lut[:] = c.values
        return lut[c.codes].tolist()

    sizes = np.diff(jr.starts)
    src, dst = _endpoint_strings(jr.src, jr.src_ip), _endpoint_strings(jr.dst, jr.dst_ip)
    hops = list(
        map(
            Hop,
            objects(jr.hook),
            objects(jr.stage),
            objects(jr.ifname),
            objects(jr.role),
            jr.netns.tolist(),
            objects(jr.container),
            src,
            dst,
            *times_or_none(jr.ktime, jr.dt, jr.timed),
            objects(jr.drop_reason),
            _DIRECTION_NAMES[np.repeat(jr.direction, sizes)].tolist(),
            objects(jr.container_id),
        )
    )
    tcp = _lut(jr.protocol.values, lambda v: v == "tcp")[jr.protocol.codes].tolist()
    protocol = objects(jr.protocol)
    container = objects(_Codes(jr.container_of, jr.container.values))
    reason = objects(_Codes(jr.reason, jr.drop_reason.values))
    direction = _DIRECTION_NAMES[jr.direction].tolist()
    starts = jr.starts.tolist()
    out = []
    for g, (pid, flow, flags, length, verdict, seen, wall) in enumerate(
        zip(jr.packet_id.tolist(), jr.flow_id.tolist(), jr.tcp_flags.tolist(), jr.length.tolist(),
            jr.verdict.tolist(), jr.last_seen.tolist(), jr.wall_ns.tolist())
    ):
        out.append(
            Journey(
                packet_id=pid,
                flow_id=flow or None,
                direction=direction[g],
                protocol=protocol[g],
                tcp_flags=_flags_text(flags) if tcp[g] else None,
                length=length,
                container=container[g],
                verdict=VERDICTS[verdict],
                drop_reason=reason[g],
                hops=hops[starts[g] : starts[g + 1]],
                last_seen=hops[seen] if seen >= 0 else None,
                time_ns=wall or None,
            )
        )
    return out


def _endpoint_strings(ep: tuple[np.ndarray, np.ndarray, np.ndarray], ips: list) -> list:
    """Hop.src/dst text per hop, formatted once per distinct endpoint."""
    keys, idx = _factorize(_endpoint_key(ep))
    lut = np.empty(len(keys), dtype=object)
    lut[:] = [_endpoint_plain(ips[k >> 17], (k >> 1) & 0xFFFF, k & 1) for k in keys.tolist()]
    return lut[idx].tolist()


@lru_cache(maxsize=1 << 16)
def _endpoint_plain(ip: str | None, port: int, icmp: int) -> str | None:
    if ip is None:
        return None
    return ip if icmp else endpoint(ip, port)
