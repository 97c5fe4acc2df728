"""Journey rows from the kernel's journey records by the compiled passes
(native/journey_rows.c): the arguments they take and the JourneyRows they
make. The C orders the records, gathers the hops and numbers what needs a
name (places, addresses, protocols, drop reasons) in order of first
appearance; here each distinct value is named once, as the numpy path
(tracer/journey_records.py, the reference) names it, and the rules that
decide (journeys.TERMINAL_SIGHTINGS, journey_rows.journey_containers'
comparisons) go to the second pass as lookup tables. The tests compare
both paths' rows and texts."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tracer import addresses, events
from tracer.decode import DecodeContext, resolve_place_keys
from tracer.journey_rows import _canonical, _Codes, JourneyRows
from tracer.journeys import ends_journey

# hook and stage codes' values (+ a None slot), shared with journey_records' numpy twin
HOOK_VALUES = list(events.HOOKS) + [None]
STAGE_VALUES = list(events.NAT_STAGES) + [None]
HOOK_DROP = events.HOOKS.index("drop")
_ICMP = bytes(p in events.ICMP_NUMBERS for p in range(256))

# (name, dtype) of journey_hops' outputs, in native/journey_rows.c's order
PACKET_COLUMNS = ("packet_id", "flow_id", "direction", "protocol", "tcp_flags", "length", "tcp_seq", "tcp_doff",
                  "wall_ns", "starts")
HOP_COLUMNS = ("hook", "stage", "ktime", "dt", "place", "reason", "src", "sport", "dst", "dport", "icmp")
_P = {name: i for i, name in enumerate(PACKET_COLUMNS)}
_H = {name: i for i, name in enumerate(HOP_COLUMNS)}


def _layout() -> tuple[int, ...]:
    """The record layout as native/journey_rows.c takes it (its L_* order)."""
    d = events.JOURNEY_DTYPE
    at = {name: d.fields[name][1] for name in d.names}
    return (d.itemsize, at["packet_id"], at["flow_id"], at["first_ktime"], at["last_ktime"], at["tuples"],
            at["tcp_seq"], at["drop_reason"], at["drop_netns"], at["length"], at["protocol"], at["tcp_flags"],
            at["direction"], at["n_hops"], at["hops"], at["tcp_doff"], events.MAX_HOPS, events.MAX_TUPLES, HOOK_DROP,
            events.HOP_STAGE_SHIFT, events.HOP_IN_CT_BIT)


LAYOUT = _layout()
# what the C reads as little-endian or network order must be so in the dtype
assert all(events.JOURNEY_DTYPE[f].byteorder in "<=|" for f in
           ("packet_id", "flow_id", "first_ktime", "last_ktime", "drop_reason", "drop_netns"))
assert all(events.JOURNEY_DTYPE[f].byteorder == ">" for f in ("length", "tcp_seq"))
# a hop's and a tuple's fields where and as native/journey_rows.c reads
# them (it takes the record's own offsets from LAYOUT, these as constants)
C_HOP_FIELDS = {"dt_ns": (0, "<u4"), "ifindex": (4, "<u4"), "code": (8, "u1"), "tuple": (10, "u1")}
C_TUPLE_FIELDS = {"saddr": (0, ("u1", (16,))), "daddr": (16, ("u1", (16,))), "sport": (32, ">u2"),
                  "dport": (34, ">u2")}


def _c_reads_hops_and_tuples() -> bool:
    """Whether HOP_DTYPE and TUPLE_DTYPE lay out their fields as the C reads them."""
    return events.HOP_DTYPE.itemsize == 12 and events.TUPLE_DTYPE.itemsize == 40 and all(
        dtype.fields[name][1] == at and dtype.fields[name][0] == np.dtype(kind)
        for dtype, fields in ((events.HOP_DTYPE, C_HOP_FIELDS), (events.TUPLE_DTYPE, C_TUPLE_FIELDS))
        for name, (at, kind) in fields.items())


_C_READS_HOPS_AND_TUPLES = _c_reads_hops_and_tuples()
assert _C_READS_HOPS_AND_TUPLES, "events.HOP_DTYPE/TUPLE_DTYPE changed: update native/journey_rows.c"


def usable(records: np.ndarray) -> bool:
    """Whether the compiled passes can read ``records`` as they are (the
    drain's own dtype, contiguous; its hops and tuples as the C reads them)."""
    return _C_READS_HOPS_AND_TUPLES and records.dtype == events.JOURNEY_DTYPE and records.flags.c_contiguous


def native_journey_rows(records: np.ndarray, ctx: DecodeContext, module) -> JourneyRows:
    """journey_records.journey_rows_of_records(records, ctx), compiled;
    ``records`` as ``usable`` wants them, at least one with hops."""
    n_hops = records["n_hops"]
    kept = int(np.count_nonzero(n_hops))
    total = int(np.minimum(n_hops, events.MAX_HOPS).sum(dtype=np.int64))
    packet_cols = np.empty((len(PACKET_COLUMNS) - 1, kept), np.int64)
    starts = np.empty(kept + 1, np.int64)
    hop_cols = np.empty((len(HOP_COLUMNS), total), np.int64)
    ids = packet_cols[:2].view(np.uint64)  # packet_id, flow_id: written as uint64 (the C's rule), read as such below
    packets, place_keys, address_bytes, protocols, reasons = module.journey_hops(
        records.view(np.uint8).reshape(-1), LAYOUT, _ICMP, int(ctx.boot_offset_ns), (*ids, *packet_cols[2:], starts),
        tuple(hop_cols))
    per_packet = packet_cols[:, :packets]
    starts = starts[: packets + 1]
    hop = dict(zip(HOP_COLUMNS, hop_cols))

    # Each distinct value named once, as journey_records names it.
    address_values = [addresses.text_of(b) for b in address_bytes] + [None]

    def addresses_of() -> tuple[np.ndarray, np.ndarray]:  # rare: two containers' eth0 share an ifindex
        raw = np.frombuffer(b"".join(address_bytes), np.uint8).reshape(-1, 16)
        return raw[hop["src"]], raw[hop["dst"]]

    places, where = resolve_place_keys(ctx, place_keys, hop["place"], addresses_of)
    role_lut, role_values = per_place_codes([p.role for p in places])
    ifname_lut, ifname_values = per_place_codes([p.ifname for p in places])
    id_lut, id_values = per_place_codes([p.container_id for p in places])
    c_lut, c_values = per_place_codes([p.container_name or (p.container_id[:12] if p.container_id else None)
                                  for p in places])
    netns_of = np.array([p.netns for p in places], np.int64)
    reason_values = [ctx.drop_reasons.get(v, f"REASON_{v}") for v in reasons] + [None]
    protocol_values = [events.PROTOCOLS.get(v, str(v)) for v in protocols] + [None]

    hop_out = np.empty((5, total), np.int64)
    packet_out = np.empty((5, packets), np.int64)
    module.journey_facts(
        (hop["hook"], hop["stage"], where, hop["reason"]), starts, (role_lut, ifname_lut, c_lut, id_lut, netns_of),
        _terminal_table(tuple(role_values)),
        (len(HOOK_VALUES), len(STAGE_VALUES), len(role_values), HOOK_DROP, len(reason_values) - 1,
         len(c_values) - 1),
        (*_name_tables(c_values), *_name_tables(id_values)), tuple(hop_out), tuple(packet_out))
    role, ifname, container, container_id, netns = hop_out
    verdict, last_seen, reason, container_of, container_to = packet_out
    p = dict(zip(PACKET_COLUMNS, per_packet))
    icmp = hop["icmp"]
    return JourneyRows(
        work=None,
        rows=np.arange(total),
        starts=starts,
        packet_id=p["packet_id"].view(np.uint64),
        flow_id=p["flow_id"].view(np.uint64),
        direction=p["direction"].astype(np.int8),
        verdict=verdict.astype(np.int8),
        reason=reason,
        last_seen=last_seen,
        ktime=hop["ktime"],
        dt=hop["dt"],
        hook=_Codes(hop["hook"], HOOK_VALUES),
        stage=_Codes(hop["stage"], STAGE_VALUES),
        role=_Codes(role, role_values),
        drop_reason=_Codes(hop["reason"], reason_values),
        src=(hop["src"], hop["sport"], icmp),
        dst=(hop["dst"], hop["dport"], icmp),
        src_ip=address_values,
        dst_ip=address_values,
        container=_Codes(container, c_values),
        container_of=container_of,
        container_to=container_to,
        protocol=_Codes(p["protocol"], protocol_values),
        tcp_flags=p["tcp_flags"],
        length=p["length"],
        wall_ns=p["wall_ns"],
        netns=netns,
        ifname=_Codes(ifname, ifname_values),
        container_id=_Codes(container_id, id_values),
        tcp_seq=p["tcp_seq"],
        tcp_doff=p["tcp_doff"],
    )


def per_place_codes(per_place: list) -> tuple[np.ndarray, list]:
    """A per-place value as (each place's code, the distinct values + a None
    slot), None values pointing at that slot."""
    index: dict = {}
    lut = np.array([index.setdefault(v, len(index)) for v in per_place], np.int64)
    values = list(index) + [None]
    if None in index:
        lut[lut == index[None]] = len(values) - 1
    return lut, values


def _name_tables(values: list) -> tuple[np.ndarray, np.ndarray]:
    """Per code: whether it names something, and the first code of an equal value."""
    return np.array([bool(v) for v in values], np.int64), _canonical(values)


@lru_cache(maxsize=64)
def _terminal_table(roles: tuple) -> np.ndarray:
    """journeys.ends_journey per (hook, stage, role) code, hook-major."""
    return np.array([ends_journey(h, s, r) for h in HOOK_VALUES for s in STAGE_VALUES for r in roles], np.int64)
