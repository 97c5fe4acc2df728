"""The kernel's journey records -> JourneyRows, without sighting rows.

`trace` prints journeys the kernel already assembled (bpf/journey.h): a
record holds the packet's facts once and its hops in order. Laying them out
as sighting rows, decoding those into an Arrow table and grouping it again by
packet id (what a capture replay does) would redo in Python what the kernel
did. Here the hops are gathered once into per-hop arrays and everything that
needs names (interfaces, containers, addresses, protocols, drop reasons) is
resolved once per distinct value. The result is the JourneyRows the JSON,
human and summary outputs read; the journey rules themselves (terminal
sightings, verdicts) are tracer.journeys'.

Records come in any order, a packet's parts (continuations, see
tracer/hold.py) all among them: ordered by index here (packets by first
sighting, a packet's parts by theirs), its hops are in journey order with a
drop hop last, as the kernel appended them.
"""

from __future__ import annotations

import numpy as np

from tracer import addresses, events, native_rows, record_words
from tracer.decode import DecodeContext, _factorize, resolve_places
from tracer.last_hop import last_hop_ktime
from tracer.journey_rows import _Codes, JourneyRows, journey_containers, pair_index, verdicts
from tracer.native import native

_HOOK_VALUES, _STAGE_VALUES, _HOOK_DROP = native_rows.HOOK_VALUES, native_rows.STAGE_VALUES, native_rows.HOOK_DROP


def journey_rows_of_records(records: np.ndarray, ctx: DecodeContext, compiled: bool = True) -> JourneyRows:
    """JourneyRows of journey records: by the compiled passes where they
    were built (tracer/native.py; ``compiled``: unless False) and can read
    the records as they are, else by numpy below (the reference: the same
    rows)."""
    module = native() if compiled else None
    if module is not None and native_rows.usable(records) and records["n_hops"].any():
        return native_rows.native_journey_rows(records, ctx, module)
    return journey_rows_numpy(records, ctx)


def journey_rows_numpy(records: np.ndarray, ctx: DecodeContext) -> JourneyRows:
    """journey_rows_of_records on whole columns with numpy."""
    has_hops = records["n_hops"] > 0
    records = records if has_hops.all() else record_words.take(records, has_hops)
    # Order without moving the 320-byte records: by the packet's first
    # sighting (ties by id), its parts adjacent and in time order.
    pid_all = records["packet_id"]
    fk_all = records["first_ktime"].astype(np.int64)
    o = _journey_order(pid_all, fk_all)
    pid_r, fk_r = pid_all[o], fk_all[o]
    n_hops = np.minimum(records["n_hops"][o].astype(np.int64), events.MAX_HOPS)
    rstart = np.concatenate(([0], np.flatnonzero(pid_r[1:] != pid_r[:-1]) + 1)) if len(o) else np.zeros(0, np.int64)
    rsizes = np.diff(np.append(rstart, len(o)))

    def field(name: str) -> np.ndarray:
        return records[name][o]

    # Hops, record by record.
    total = int(n_hops.sum())
    rec = np.repeat(np.arange(len(o)), n_hops)
    rec_first = np.concatenate(([0], np.cumsum(n_hops)[:-1]))
    hops = record_words.hops(records, n_hops, o)  # plain words, not struct fields: ~8x cheaper
    code = hops.code
    ifindex = hops.ifindex
    ktime = fk_r[rec] + hops.dt_ns.astype(np.int64)
    ends = rec_first + n_hops - 1  # last_ktime only where dt_ns saturated (tracer/last_hop.py)
    ktime[ends] = last_hop_ktime(fk_r, hops.dt_ns[ends], field("last_ktime"))
    # Addresses per tuple a hop points at (a record holds 1-4, its ~9 hops
    # share them), not per hop: gathered, named and paired once each.
    slot = rec * events.MAX_TUPLES + np.minimum(hops.tuple, events.MAX_TUPLES - 1)
    pointed = np.zeros(len(o) * events.MAX_TUPLES, bool)
    pointed[slot] = True
    tuple_of_hop = (np.cumsum(pointed) - 1)[slot]
    used = np.flatnonzero(pointed)
    t_src, t_dst, t_sport, t_dport = record_words.tuple_slots(records, used, o)

    # Journeys over hops.
    packet_of_rec = np.repeat(np.arange(len(rstart)), rsizes)
    hop_sizes = np.bincount(packet_of_rec, weights=n_hops, minlength=len(rstart)).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(hop_sizes))).astype(np.int64)
    first_hop = starts[:-1]
    group = np.repeat(np.arange(len(rstart)), hop_sizes)
    dt = ktime - ktime[first_hop][group]

    hook_idx = (code & 0x0F).astype(np.int64)
    is_drop = hook_idx == _HOOK_DROP
    hook = _Codes(hook_idx, _HOOK_VALUES)
    stage = _Codes(((code >> events.HOP_STAGE_SHIFT) & 0x03).astype(np.int64), _STAGE_VALUES)
    in_ct = (code & events.HOP_IN_CT_BIT) != 0
    netns_raw = np.where(is_drop, field("drop_netns")[rec], 0).astype(np.uint32)

    # Places: resolved once per distinct (in container netns, netns, ifindex).
    places, where = resolve_places(ctx, in_ct, netns_raw, ifindex.astype(np.uint32),
                                   lambda: (t_src[tuple_of_hop], t_dst[tuple_of_hop]))
    where = np.asarray(where, np.int64)
    role = _place_codes(where, [p.role for p in places])
    ifname = _place_codes(where, [p.ifname for p in places])
    container_id = _place_codes(where, [p.container_id for p in places])
    container = _place_codes(where, [p.container_name or (p.container_id[:12] if p.container_id else None) for p in places])
    netns = np.array([p.netns for p in places], np.int64)[where] if places else np.zeros(0, np.int64)

    # Per-packet facts: from the packet's first record; flow and direction
    # the largest any part knew (as the sighting path fills them).
    p_first = o[rstart]  # a packet's first record, as stored
    protocol_num = records["protocol"][p_first].astype(np.int64)
    proto_values, proto_codes = _names(protocol_num, lambda v: events.PROTOCOLS.get(v, str(v)))
    flow = np.maximum.reduceat(field("flow_id"), rstart) if len(rstart) else np.zeros(0, np.uint64)
    direction = np.maximum.reduceat(field("direction"), rstart).astype(np.int8) if len(rstart) else np.zeros(0, np.int8)

    verdict, dropped, last_seen = verdicts(hook, stage, role, is_drop, starts)

    # Drop reasons named on the drop hops only (a few in a batch); the others point at the null slot.
    drops = np.flatnonzero(is_drop)
    reason_values, drop_codes = _names(field("drop_reason")[rec[drops]].astype(np.int64),
                                       lambda v: ctx.drop_reasons.get(v, f"REASON_{v}"))
    null_reason = len(reason_values) - 1
    reason_hop = np.full(total, null_reason, np.int64)
    reason_hop[drops] = drop_codes
    last = starts[1:] - 1
    reason = np.where(dropped, reason_hop[last], null_reason)

    t_icmp = np.isin(field("protocol")[used // events.MAX_TUPLES], list(events.ICMP_NUMBERS))
    src_values, t_src_codes = _address_names(t_src)
    dst_values, t_dst_codes = _address_names(t_dst)
    t_src_ep = (t_src_codes, t_sport.astype(np.int64), t_icmp)
    t_dst_ep = (t_dst_codes, t_dport.astype(np.int64), t_icmp)
    t_pair, pair_keys = pair_index(t_src_ep, t_dst_ep)

    container_of, container_to = journey_containers(container.codes, container.values, starts, container_id)

    return JourneyRows(
        work=None,
        rows=np.arange(total),
        starts=starts,
        packet_id=pid_r[rstart],
        flow_id=flow,
        direction=direction,
        verdict=verdict,
        reason=reason,
        last_seen=last_seen,
        ktime=ktime,
        dt=dt,
        hook=hook,
        stage=stage,
        role=role,
        drop_reason=_Codes(reason_hop, reason_values),
        src=tuple(a[tuple_of_hop] for a in t_src_ep),
        dst=tuple(a[tuple_of_hop] for a in t_dst_ep),
        src_ip=src_values,
        dst_ip=dst_values,
        container=container,
        container_of=container_of,
        container_to=container_to,
        protocol=_Codes(proto_codes, proto_values),
        tcp_flags=records["tcp_flags"][p_first].astype(np.int64),
        length=records["length"][p_first].astype(np.int64),
        wall_ns=ktime[first_hop] + ctx.boot_offset_ns,  # the first hop's, on the wall clock
        netns=netns,
        ifname=ifname,
        container_id=container_id,
        tcp_seq=records["tcp_seq"][p_first].astype(np.int64),
        tcp_doff=records["tcp_doff"][p_first].astype(np.int64),
        pair=t_pair[tuple_of_hop],
        pair_keys=pair_keys,
    )


def _journey_order(pid: np.ndarray, fk: np.ndarray) -> np.ndarray:
    """Record order: packets by first sighting (ties by id), a packet's
    parts adjacent and by their own first sighting."""
    if len(pid) < 2:
        return np.arange(len(pid))
    uniq, inverse = np.unique(pid, return_inverse=True)
    if len(uniq) == len(pid):  # one part per packet (the common case)
        return np.lexsort((pid, fk))
    first = np.full(len(uniq), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, inverse, fk)
    return np.lexsort((fk, pid, first[inverse]))


def _place_codes(where: np.ndarray, per_place: list) -> _Codes:
    """A per-place value as codes over its distinct values (+ a None slot)."""
    lut, values = native_rows.per_place_codes(per_place)
    return _Codes(lut[where] if len(where) else np.zeros(0, np.int64), values)


def _address_names(values: np.ndarray) -> tuple[list, np.ndarray]:
    """As _names, for (n, 16) recorded addresses."""
    texts, inverse = addresses.factorize(values)
    return texts + [None], inverse


def _names(keys: np.ndarray, name) -> tuple[list, np.ndarray]:
    """Distinct keys named once each: (values + a None slot, code per element)."""
    if not len(keys):
        return [None], np.zeros(0, np.int64)
    uniq, inverse = _factorize(keys)
    values = [name(int(k)) for k in uniq.tolist()]
    return values + [None], inverse.astype(np.int64)
