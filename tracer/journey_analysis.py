"""`tracer stats` straight from journey rows (capture schema 2).

A journey row holds one packet's hops in order, with each hop's time since
the first (``dt_ns``) and its place: the hop segments, verdict, drop and the
per-packet facts the analysis needs are all on the row. So instead of laying
rows out as sightings (tracer/expand.py, decode: addresses as text, one
dictionary column per field) and sorting them back into journeys, this
reads the flattened ``hops`` list columns as numpy arrays and hands
CaptureAnalysis the same arrays ``_Sorted`` would have made of the sighting
rows (``CaptureAnalysis._add_packets``).

Only packets read exactly as their sighting rows would be are taken here:
one record per packet in the chunk (a packet in parts, a `full` record and
its continuation, goes the sighting way), hops already in journey order
(time, a drop last), and at most one container along the way (which one
the sighting path names otherwise depends on dictionary order). The rest,
rare in any capture, are returned to be laid out and analysed as sighting
rows, so every number is what the sighting path gives
(tests/unit/test_journey_analysis.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import addresses, events
from tracer.analysis_rows import _ANALYSIS_COLUMNS, PacketFacts, _codes, _ints, clocked
from tracer.interning import Interner
from tracer.journey_capture import _address_rows, journey_sightings
from tracer.journey_rows import _DIRECTION_CODES
from tracer.journeys import ends_journey, hop_label
from tracer.last_hop import last_hop_ktime

_DROP = events.HOOKS.index("drop")
_N_HOOKS = len(events.HOOKS)
_N_STAGES = len(events.NAT_STAGES)
_BIG = np.iinfo(np.int64).max
# Stored hook and stage codes -> what decode names: a code past the names reads as null.
_HOOK_CODE = np.array([h if h < _N_HOOKS else 0 for h in range(16)], np.int64)
_STAGE_CODE = np.array([st if st < _N_STAGES else 0 for st in range(4)], np.int64)


def journey_packets(rows: pa.Table, registry: Any, ca: Any) -> tuple[Any, PacketFacts | None, pa.Table | None]:
    """(hops, facts, rest) of a chunk of journey rows holding whole packets:
    ``hops`` the sightings of the packets taken here in journey order (the
    arrays of analysis_rows._Sorted), ``facts`` one value per such packet, ``rest``
    the journey rows of the other packets (None: none), for the sighting path.
    ``ca`` is the CaptureAnalysis (its Strings give codes)."""
    n = rows.num_rows
    pid = _ints(rows, "packet_id", np.uint64)
    lists = rows.column("hops")
    n_hops = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lists)
    # A copy: the reader's thread (read-ahead) registers the next files'
    # places meanwhile, and every key below is built and decoded over one
    # count of places (ids only grow: the chunk's are all in the copy).
    places = list(registry.places)
    np_ = len(places)
    # (hook, NAT stage, place) of each hop as one small key: its label,
    # drop and terminal flags and container come from a table over keys.
    # (Fields as stored, narrow, until a table lookup or a sum widens them.)
    hook = _HOOK_CODE[_field(flat, "hook", stored=True) & 0x0F]
    stage = _STAGE_CODE[_field(flat, "nat_stage", stored=True) & 0x03]
    # past the registry: unknown (never, as read)
    place = np.minimum(_field(flat, "place", stored=True), np_).astype(np.int64)
    hop_key = hook * _N_STAGES
    hop_key += stage
    hop_key *= np_ + 1
    hop_key += place
    dt = _field(flat, "dt_ns", stored=True)
    rec = np.repeat(np.arange(n), n_hops)
    first = np.zeros(n, np.int64)
    np.cumsum(n_hops[:-1], out=first[1:])
    last = first + n_hops - 1
    has = n_hops > 0

    # The clock of each hop, as laying out gives it (the last hop: last_ktime_ns only past dt's range).
    kt0 = _ints(rows, "ktime_ns")  # ktime stays below 2^63: int64 as the sighting path reads it
    kt = kt0[rec]
    kt += dt
    kt[last[has]] = last_hop_ktime(kt0[has], dt[last[has]], _ints(rows, "last_ktime_ns")[has])
    is_drop = hook == _DROP

    # Which packets this path takes (see the module's docstring).
    simple = (pid != 0) & has & (n_hops <= events.MAX_HOPS)
    ids = pid[simple]
    if len(ids) > 1:
        s_ids = np.sort(ids)
        twice = s_ids[1:][s_ids[1:] == s_ids[:-1]]
        if len(twice):
            simple &= ~np.isin(pid, twice)
    if len(rec) > 1:
        same = rec[1:] == rec[:-1]
        bad = same & (is_drop[:-1] | (~is_drop[1:] & (kt[1:] < kt[:-1])))
        if bad.any():
            simple[rec[1:][bad]] = False
    drop_rec = rec[is_drop]
    reason_codes, reason_values = _codes(rows, "drop_reason")
    if len(drop_rec):
        simple[drop_rec[reason_codes[drop_rec] < 0]] = False  # no reason named: the sighting path's guess

    cnames = ca._containers.codes([p.container_name for p in places] + [p.container_id[:12] if p.container_id else None
                                                                      for p in places])
    per_place = np.where(cnames[:np_] >= 0, cnames[:np_], cnames[np_: 2 * np_])
    per_place = np.append(per_place, -1).astype(np.int64)  # the unknown place: no container
    cval = per_place[place]
    container = np.full(n, -1, np.int64)
    if len(rec):
        starts = first[has]
        container[has] = np.maximum.reduceat(cval, starts)
        low = np.full(n, _BIG, np.int64)
        low[has] = np.minimum.reduceat(np.where(cval >= 0, cval, _BIG), starts)
        simple &= ~((container >= 0) & (low != container))

    rest_mask = ~simple & (pid != 0) & has
    rest = rows.filter(pa.array(rest_mask)) if rest_mask.any() else None
    take = np.flatnonzero(simple)
    if not len(take):
        return None, None, rest

    # Sightings of the packets taken, in journey order (record by record, hops in order).
    sel = None
    if len(take) == n:  # every row taken (the usual case): no selection to copy through
        h_rec, h_kt, h_key, h_is_drop, sizes, pstart = rec, kt, hop_key, is_drop, n_hops, first
    else:
        sel = simple[rec]
        h_rec, h_kt, h_key, h_is_drop = rec[sel], kt[sel], hop_key[sel], is_drop[sel]
        sizes = n_hops[take]
        pstart = np.zeros(len(take), np.int64)
        np.cumsum(sizes[:-1], out=pstart[1:])
    offset = _ints(rows, "time") - kt0  # wall clock minus ktime, per row
    row_clock = clocked(rows)  # None: every row has a moment (time or ktime_ns)
    label, labels, terminal_of, parts = _labels(h_key, places)
    wall = offset[h_rec]
    wall += h_kt
    hops = SimpleNamespace(
        pid=pid[h_rec], kt=h_kt, label=label, labels=labels, is_drop=h_is_drop, terminal=terminal_of[label],
        wall=wall, pstart=pstart, pend=pstart + sizes, psize=sizes, clocked=None if row_clock is None else row_clock[h_rec],
        # a journey row's hops are timed by their dt_ns even without its ktime_ns (laid out, they read so too)
        timed=None,
        # for the report's path pass (tracer/journey_paths.py): each label's
        # (hook, role) and whether a journey ends there, each hop's record
        # (a row of ``rows``) and place, the flattened hops and which of them
        # were taken (None: all)
        label_hooks=[h for h, _ in parts], label_roles=[r for _, r in parts], label_terminal=terminal_of, rec=h_rec,
        place=place if sel is None else place[sel], rows=rows, flat=flat, sel=sel, places=places,
        reason_codes=reason_codes)

    # Per packet: its record's facts, and the first hop's addresses.
    dcodes, dvalues = _codes(rows, "direction")
    dmap = np.array([_DIRECTION_CODES.get(v, 0) for v in dvalues] + [0], np.int64)
    dcodes = np.where(dcodes < 0, 0 if dvalues else -1, dcodes)  # null reads as the dictionary's first name
    pcodes, pvalues = _codes(rows, "protocol")
    pcodes = np.where(pcodes < 0, 0 if pvalues else -1, pcodes)
    proto_names = [_protocol_name(v) for v in pvalues] + ["0"]
    src_ip, src_port, dst_ip, dst_port = _first_endpoints(rows, flat, first[take], take, ca)

    def reasons(dropped: np.ndarray) -> list[str]:
        return [reason_values[c] for c in reason_codes[take[dropped]].tolist()]

    def rows_of(packet_ids: np.ndarray) -> pa.Table:
        picked = rows.filter(pc.is_in(rows["packet_id"], value_set=pa.array(packet_ids, pa.uint64())))
        return journey_sightings(picked, registry).select(list(_ANALYSIS_COLUMNS))

    facts = PacketFacts(
        direction=dmap[dcodes[take]], flow=_ints(rows, "flow_id", np.uint64)[take],
        length=_ints(rows, "length")[take].astype(np.int32),
        protocol=ca._protocols.codes(proto_names)[pcodes[take]],
        src_ip=src_ip, src_port=src_port, dst_ip=dst_ip, dst_port=dst_port,
        container=container[take].astype(np.int32), reasons=reasons, rows_of=rows_of)
    return hops, facts, rest


def _field(flat: pa.ChunkedArray | pa.Array, name: str, stored: bool = False) -> np.ndarray:
    """A field of the flattened hops as int64 (``stored``: its stored type, no copy)."""
    col = pc.struct_field(flat, name)
    if col.null_count:
        col = pc.fill_null(col, 0)
    out = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False)
    return out if stored else out.astype(np.int64)


def _labels(key: np.ndarray, places: list) -> tuple[np.ndarray, list[str], np.ndarray, list[tuple[str, str]]]:
    """Per hop the index of its label (Hop.label of its hook, NAT stage and
    its place's role; ``key`` as journey_packets makes it) in the returned
    labels, per label whether it ends a journey (is_terminal), and per label
    its (hook, role)."""
    roles = [p.role for p in places] + [events.OTHER]
    present = np.flatnonzero(np.bincount(key, minlength=1))
    labels: Interner[str] = Interner()
    terminal: list[bool] = []
    parts: list[tuple[str, str]] = []
    lut = np.zeros(len(present) and int(present[-1]) + 1, np.int64)
    for k in present.tolist():
        rest, place = divmod(k, len(roles))
        h, st = divmod(rest, _N_STAGES)
        name, stage, role = events.HOOKS[h] or "?", events.NAT_STAGES[st], roles[place]
        lut[k] = i = labels.id_of(hop_label(name, stage, role))
        if i == len(terminal):
            terminal.append(ends_journey(name, stage, role))
            parts.append((name, role))
    return lut[key], labels.values, np.array(terminal, bool), parts


def _protocol_name(name: str | None) -> str:
    """A stored protocol name as laying out and decoding give it back
    (a number it does not name: the number)."""
    number = events.PROTOCOL_NUMBERS.get(name) if name else None
    if number is None:
        try:
            number = int(name)
        except (TypeError, ValueError):
            number = 0
    return events.PROTOCOLS.get(number, str(number))


def tuple_layout(rows: pa.Table) -> tuple[Any, np.ndarray, np.ndarray]:
    """The records' tuples flattened, and per record how many it has and
    where its first one is in the flattened list."""
    lists = rows.column("tuples")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
    tstart = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=tstart[1:])
    return pc.list_flatten(lists), lengths, tstart


def _first_endpoints(rows: pa.Table, flat: Any, first_hop: np.ndarray, take: np.ndarray, ca: Any):
    """Address codes (ca._ips) and ports of each taken packet's first hop:
    the tuple it points at (past the record's tuples: zeros, as laid out)."""
    tuples, lengths, tstart = tuple_layout(rows)
    t_idx = pc.take(pc.struct_field(flat, "tuple"), pa.array(first_hop))
    t_idx = pc.fill_null(t_idx, 0).to_numpy().astype(np.int64)
    ok = t_idx < np.minimum(lengths, events.MAX_TUPLES)[take]
    at = pa.array(np.where(ok, tstart[take] + t_idx, 0))
    m = len(take)
    if not len(tuples):
        ok[:] = False
    out = []
    for name in ("saddr", "daddr"):
        if ok.all():  # the first hop's tuple, gathered as Arrow binaries and named once per distinct address
            enc = pc.take(pc.struct_field(tuples, name), at).combine_chunks().dictionary_encode()
            texts = [addresses.text_of(b) for b in enc.dictionary.to_pylist()]
            inverse = enc.indices.to_numpy(zero_copy_only=False)
        else:
            raw = np.zeros((m, 16), np.uint8)
            if ok.any():
                got = pc.take(pc.struct_field(tuples, name), pa.array(at.to_numpy()[ok])).combine_chunks()
                raw[ok] = _address_rows(got)
            texts, inverse = addresses.factorize(raw)
        out.append(ca._ips.codes(texts)[inverse])
    ports = []
    for name in ("sport", "dport"):
        p = np.zeros(m, np.int32)
        if ok.any():
            got = pc.take(pc.struct_field(tuples, name), at)
            p[ok] = pc.fill_null(got, 0).to_numpy()[ok]
        ports.append(p)
    return out[0], ports[0], out[1], ports[1]
