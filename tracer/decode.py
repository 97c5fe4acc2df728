"""Raw ring-buffer records -> the Arrow event table (events.EVENT_SCHEMA).

Vectorised over the batch: codes become dictionary columns, addresses are
formatted once per distinct value, interfaces and containers are resolved once
per distinct (netns, ifindex) pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from tracer import addresses, events
from tracer.arrow_columns import numeric_array
from tracer.places import Place, PlaceBook


@dataclass
class DecodeContext:
    host_netns: int
    drop_reasons: dict[int, str] = field(default_factory=dict)
    boot_offset_ns: int = field(default_factory=lambda: wall_minus_ktime_ns())
    # Where sightings happened (tracer/places.py): looked up here, built by
    # whoever knows the host.
    book: PlaceBook | None = None

    def __post_init__(self) -> None:
        if self.book is None:
            self.book = PlaceBook(self.host_netns)

    def place(self, netns: int, ifindex: int, in_container_ns: bool, src: str | None, dst: str | None) -> Place:
        return self.book.place(netns, ifindex, in_container_ns, src, dst)


def wall_minus_ktime_ns() -> int:
    """Offset from bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall-clock time."""
    samples = []
    for _ in range(5):
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        w = time.time_ns()
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        samples.append((b - a, w - (a + b) // 2))
    return min(samples)[1]


def _dict_column(indices: np.ndarray, dictionary: list[str | None]) -> pa.DictionaryArray:
    """Dictionary array where a None entry in the dictionary means null."""
    values = [d if d is not None else "" for d in dictionary]
    null_at = [i for i, d in enumerate(dictionary) if d is None]
    indices = indices.astype(np.int32, copy=False)
    # the null rows by one compare where one entry is None (the codes' 0, no drop's -1), not a gather
    if not null_at:
        mask = None
    elif len(null_at) == 1:
        mask = indices == null_at[0]
    else:
        mask = np.isin(np.arange(len(dictionary)), null_at).take(indices)
    # safe=False: every caller's indices are positions in the dictionary by
    # construction; Arrow's bounds check was a pass over every row.
    return pa.DictionaryArray.from_arrays(numeric_array(indices, mask=mask), pa.array(values, pa.string()), safe=False)


def code_column(values: np.ndarray, names: tuple | list) -> pa.DictionaryArray:
    """u8 codes -> dictionary column (codes past the table map to entry 0)."""
    if not len(values) or int(values.max()) < len(names):  # every code named: the codes are the indices
        return _dict_column(values.astype(np.int32), list(names))
    lut = np.zeros(256, dtype=np.int32)
    lut[: len(names)] = np.arange(len(names), dtype=np.int32)
    return _dict_column(lut.take(values), list(names))


# Integer values spanning fewer than this are factorized by their range (a
# flag per value in it), not hashed.
_SMALL_RANGE = 4096


def _distinct_in_range(values: np.ndarray, size: int, index_dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of non-negative integers below ``size``, ascending,
    and each row's index into them (``index_dtype``): a flag per value in
    the range, no hash and no sort."""
    seen = np.zeros(size, bool)
    seen[values] = True
    distinct = np.flatnonzero(seen)
    position = np.zeros(size, index_dtype)
    position[distinct] = np.arange(len(distinct), dtype=index_dtype)
    return distinct, position.take(values)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and each row's index into them (int32). Integers in a
    small range (protocol numbers, drop reasons: a batch holds one or two)
    by their range (_distinct_in_range), in the values' order: 1-2 ns a row
    against Arrow's hash (dictionary_encode, in order of first appearance)
    at 5-10, which takes the rest; np.unique would sort."""
    if len(values) and values.dtype.kind in "iu":
        lo, hi = int(values.min()), int(values.max())
        if lo == hi:
            return values[:1].copy(), np.zeros(len(values), np.int32)
        if hi - lo < _SMALL_RANGE:
            base = values.dtype.type(lo)  # in the values' type: uint64 keys pass 2^63
            distinct, index = _distinct_in_range((values - base).astype(np.intp, copy=False), hi - lo + 1)
            return distinct.astype(values.dtype) + base, index
    encoded = numeric_array(values).dictionary_encode()
    return encoded.dictionary.to_numpy(zero_copy_only=False), encoded.indices.to_numpy(zero_copy_only=False)


def _addresses(values: np.ndarray) -> pa.DictionaryArray:
    """(n, 16) recorded addresses -> dictionary column of their text."""
    uniq, inverse = addresses.factorize(values)
    return _dict_column(inverse, uniq)


def _by_lookup(keys: np.ndarray, lookup) -> pa.DictionaryArray:
    """Dictionary column; ``lookup(distinct_keys)`` gives the dict of names."""
    uniq, inverse = _factorize(keys)
    names = lookup(uniq) if callable(lookup) else lookup
    return _dict_column(inverse, [names.get(k) for k in uniq.tolist()])


def place_keys(netns, in_ct, ifindex) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (netns << 32 | in-container << 31 | ifindex) in any
    order, and each row's index into them (int64, writable). A table lookup
    where the keys are small, as every batch is in practice (ifindex < 2^16;
    netns set only on drop hops, a few distinct): 3-4x cheaper than hashing
    a journey's ~9 hops."""
    nonzero = np.flatnonzero(netns)
    if len(ifindex) and int(ifindex.max()) < 1 << 16 and len(nonzero) < 4096:
        ns_values, ns_codes = np.unique(netns[nonzero], return_inverse=True)
        if len(ns_values) < 64:
            small = in_ct.astype(np.int64) << 16 | ifindex.astype(np.int64)
            if len(nonzero):
                small[nonzero] |= (ns_codes.astype(np.int64) + 1) << 17
            distinct, inverse = _distinct_in_range(small, (len(ns_values) + 1) << 17, np.int64)
            ns_of = np.concatenate((np.zeros(1, np.uint64), ns_values.astype(np.uint64)))[distinct >> 17]
            keys = ns_of << np.uint64(32) | ((distinct >> 16) & 1).astype(np.uint64) << np.uint64(31) \
                | (distinct & 0xFFFF).astype(np.uint64)
            return keys, inverse
    u64 = np.uint64
    key = (netns.astype(u64) << u64(32)) | (in_ct.astype(u64) << u64(31)) | ifindex.astype(u64)
    keys, inverse = _factorize(key)
    return keys, inverse.astype(np.int64)


def resolve_places(ctx: DecodeContext, in_ct, netns, ifindex,
                   addresses_of: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[list[Place], np.ndarray]:
    """Distinct places and each row's index into them, resolved once per
    distinct (in-container flag, netns, ifindex). ``addresses_of()`` gives
    every row's (src, dst): asked only where two containers' eth0 share an
    ifindex, so callers need not gather addresses for nothing."""
    keys, inverse = place_keys(netns, in_ct, ifindex)
    return resolve_place_keys(ctx, keys.tolist(), inverse, addresses_of)


def resolve_place_keys(ctx: DecodeContext, keys: list[int], inverse: np.ndarray,
                       addresses_of: Callable[[], tuple[np.ndarray, np.ndarray]],
                       origins: list[int] | None = None) -> tuple[list[Place], np.ndarray]:
    """``resolve_places`` from the distinct keys (``place_keys``' form) and
    each row's index into them (int64, changed in place where addresses
    tell two containers apart: each place past the keys' is appended to
    ``origins`` as the index of the key it was told apart from)."""
    places = []
    for k in keys:
        ct, ns, idx = bool((k >> 31) & 1), k >> 32, k & 0x7FFFFFFF
        places.append(ctx.place(ns, idx, ct, None, None))
    # Rare: two containers whose eth0 share an ifindex; their addresses tell.
    for i, k in enumerate(keys):
        if (k >> 31) & 1 and ctx.book.shared(k & 0x7FFFFFFF):
            src, dst = addresses_of()
            for row in np.flatnonzero(inverse == i).tolist():
                places.append(ctx.place(0, k & 0x7FFFFFFF, True, addresses.text_of(bytes(src[row])),
                                        addresses.text_of(bytes(dst[row]))))
                inverse[row] = len(places) - 1
                if origins is not None:
                    origins.append(i)
    return places, inverse


def decode(raw: np.ndarray, ctx: DecodeContext, places: tuple[list[Place], np.ndarray] | None = None) -> pa.Table:
    """Sighting rows -> the event table. ``places`` (distinct places and each
    row's index into them) replaces resolving them in ``ctx``: a capture read
    back knows them already."""
    n = len(raw)
    if n == 0:
        return events.EVENT_SCHEMA.empty_table()
    flags = raw["flags"]
    in_ct = (flags & events.FLAG_IN_CONTAINER_NS) != 0
    netns = raw["netns"].astype(np.uint32)
    ifindex = raw["ifindex"].astype(np.uint32)
    src = addresses.as_rows(raw["src_ip"])
    dst = addresses.as_rows(raw["dst_ip"])

    places, inverse = places if places is not None else resolve_places(ctx, in_ct, netns, ifindex, lambda: (src, dst))

    ktime = raw["ktime_ns"].astype(np.int64)
    hooks = raw["hook"]
    reasons = np.where(hooks == events.HOOKS.index("drop"), raw["drop_reason"].astype(np.int64), -1)
    columns = {
        "time": pa.array(ktime + ctx.boot_offset_ns, pa.timestamp("ns", tz="UTC")),
        "ktime_ns": pa.array(ktime.view(np.uint64)),
        "hook": code_column(hooks, events.HOOKS),
        "nat_stage": code_column(raw["nat_stage"], events.NAT_STAGES),
        "ifindex": pa.array(ifindex),
        "ifname": _dict_column(inverse, [p.ifname for p in places]),
        "if_role": _dict_column(inverse, [p.role for p in places]),
        "out_ifindex": pa.array(raw["out_ifindex"].astype(np.uint32)),
        "netns": pa.array(np.array([p.netns for p in places], dtype=np.uint32)[inverse]),
        "container_id": _dict_column(inverse, [p.container_id for p in places]),
        "container_name": _dict_column(inverse, [p.container_name for p in places]),
        "skb": pa.array(raw["skb"].astype(np.uint64)),
        "packet_id": pa.array(raw["packet_id"].astype(np.uint64)),
        "flow_id": pa.array(raw["flow_id"].astype(np.uint64)),
        "direction": code_column(raw["direction"], events.DIRECTIONS),
        "protocol": protocol_column(raw["protocol"]),
        "src_ip": _addresses(src),
        "src_port": pa.array(raw["src_port"].astype(np.uint16)),
        "dst_ip": _addresses(dst),
        "dst_port": pa.array(raw["dst_port"].astype(np.uint16)),
        "ip_id": pa.array(raw["ip_id"].astype(np.uint16)),
        "ttl": pa.array(raw["ttl"].astype(np.uint8)),
        "length": pa.array(raw["length"].astype(np.uint16)),
        "tcp_flags": pa.array(raw["tcp_flags"].astype(np.uint8)),
        "tcp_seq": pa.array(raw["tcp_seq"].astype(np.uint32)),
        "tcp_ack": pa.array(raw["tcp_ack"].astype(np.uint32)),
        "drop_reason": drop_reason_column(reasons, ctx),
        "cpu": pa.array(raw["cpu"].astype(np.uint16)),
        "flags": pa.array(flags.astype(np.uint8)),
        "tcp_doff": pa.array(raw["tcp_doff"].astype(np.uint8)),
    }
    return pa.Table.from_pydict(columns, schema=events.EVENT_SCHEMA)


def protocol_column(numbers: np.ndarray) -> pa.DictionaryArray:
    """IP protocol numbers -> names (`tcp`; an unnamed one as its number)."""
    return _by_lookup(numbers.astype(np.int64), lambda u: events.PROTOCOLS | _other_protocols(u))


def drop_reason_column(reasons: np.ndarray, ctx: DecodeContext) -> pa.DictionaryArray:
    """skb_drop_reason codes (-1: no drop) -> the kernel's names (null for -1)."""
    return _by_lookup(reasons, lambda u: ctx.drop_reasons | _unknown_reasons(u, ctx.drop_reasons))


def _other_protocols(distinct: np.ndarray) -> dict[int, str]:
    return {p: str(p) for p in distinct.tolist() if p not in events.PROTOCOLS}


def _unknown_reasons(distinct: np.ndarray, known: dict[int, str]) -> dict[int, str | None]:
    out: dict[int, str | None] = {-1: None}
    for r in distinct.tolist():
        if r >= 0 and r not in known:
            out[r] = f"REASON_{r}"
    return out
