"""Whole-array reads of the kernel's journey records (events.JOURNEY_DTYPE).

Hops (12 bytes) and address tuples (40: two 16-byte addresses and two
ports) are structs inside 440-byte records. numpy gathers a structured
field's elements one by one through its generic field transfer (~30 ns a hop,
the largest cost left in `trace`'s user space); the same bytes read as plain
32-bit words move in bulk (~4 ns).
The words' layout is the structs' (asserted below; little-endian host).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer import events

assert np.little_endian
assert [events.HOP_DTYPE.fields[f][1] for f in ("dt_ns", "ifindex", "code", "ttl", "tuple")] == [0, 4, 8, 9, 10]
assert all(events.HOP_DTYPE[f].byteorder in "<|=" for f in events.HOP_DTYPE.names)
assert [events.TUPLE_DTYPE.fields[f][1] for f in ("saddr", "daddr", "sport", "dport")] == [0, 16, 32, 34]
assert events.HOP_DTYPE.itemsize == 12 and events.TUPLE_DTYPE.itemsize == 40


def words(records: np.ndarray, name: str, order: np.ndarray | None = None) -> np.ndarray:
    """Field ``name`` (hops or tuples) of every record as (n, count, size/4)
    contiguous u32 words, records in ``order`` if given."""
    count = records.dtype[name].shape[0]
    per = records.dtype[name].base.itemsize // 4
    offset = records.dtype.fields[name][1]
    if not records.flags.c_contiguous:  # e.g. a drained batch's view into its buffer
        records = np.ascontiguousarray(records)
    raw = records.view(np.uint8).reshape(len(records), records.dtype.itemsize)[:, offset:offset + 4 * per * count]
    raw = raw[order] if order is not None else np.ascontiguousarray(raw)
    return raw.view(np.uint32).reshape(len(raw), count, per)


def used(w: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(sum(sizes), words per struct): the first ``sizes[i]`` structs of record i, record by record."""
    count, per = w.shape[1], w.shape[2]
    return np.take(w.reshape(-1, per), np.flatnonzero(np.arange(count) < sizes[:, None]), axis=0)


@dataclass
class Hops:
    """Per-hop columns of the used hops, record by record."""

    dt_ns: np.ndarray  # uint32
    ifindex: np.ndarray  # uint32
    code: np.ndarray  # uint8
    ttl: np.ndarray  # uint8
    tuple: np.ndarray  # uint8


def _starts(records: np.ndarray, name: str, sizes: np.ndarray, order: np.ndarray | None, stride: int) -> np.ndarray:
    """Where the first ``sizes[i]`` structs of field ``name`` of record i
    (of ``records[order]``) start, as indices into the records' u32 words
    (``stride`` words a record: _flat_words), record by record. One flat gather per struct word from these is ~7x
    cheaper than copying the field's words out and picking the used
    structs (a 2-D gather at ~16 ns a struct)."""
    per = records.dtype[name].base.itemsize // 4
    offset = records.dtype.fields[name][1] // 4
    record = order.astype(np.int64) if order is not None else np.arange(len(records), dtype=np.int64)
    sizes = sizes.astype(np.int64)
    first = np.cumsum(sizes) - sizes  # each record's first struct among all
    base = record * stride + offset - per * first
    return np.repeat(base, sizes) + per * np.arange(int(sizes.sum()), dtype=np.int64)


def _flat_words(records: np.ndarray) -> tuple[np.ndarray, int]:
    """The records as one run of u32 words, and how many words a record
    takes. As they are where they can be (the drain's contiguous records);
    else copied as whole records, never field by field (an array numpy
    made by promotion may be packed to a size that is no multiple of 4)."""
    size = records.dtype.itemsize
    if records.flags.c_contiguous and size % 4 == 0:
        return records.view(np.uint32).reshape(-1), size // 4
    stride = -(-size // 4)
    out = np.zeros((len(records), 4 * stride), np.uint8)
    out[:, :size] = take(records, np.arange(len(records))).view(np.uint8).reshape(len(records), size)
    return out.view(np.uint32).reshape(-1), stride


def hops(records: np.ndarray, n_hops: np.ndarray, order: np.ndarray | None = None) -> Hops:
    """The first ``n_hops[i]`` hops of record i (of ``records[order]``)."""
    u, stride = _flat_words(records)
    at = _starts(records, "hops", n_hops, order, stride)
    last = u.take(at + 2)
    return Hops(u.take(at), u.take(at + 1), (last & 0xFF).astype(np.uint8),
                ((last >> 8) & 0xFF).astype(np.uint8), ((last >> 16) & 0xFF).astype(np.uint8))


def _fields(w: np.ndarray, network_order: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """saddr, daddr ((n, 16) bytes, as recorded: tracer/addresses.py), sport,
    dport (numbers) of tuples read as words."""
    saddr = np.ascontiguousarray(w[:, 0:4]).view(np.uint8).reshape(-1, 16)
    daddr = np.ascontiguousarray(w[:, 4:8]).view(np.uint8).reshape(-1, 16)
    ports = np.ascontiguousarray(w[:, 8]).view(np.uint16).reshape(-1, 2)
    sport, dport = ports[:, 0], ports[:, 1]
    if network_order:  # as the kernel wrote them; records that went through np.concatenate come back native
        return saddr, daddr, sport.byteswap(), dport.byteswap()
    return saddr, daddr, sport.copy(), dport.copy()


def _network_order(records: np.ndarray) -> bool:
    return records.dtype["tuples"].base["sport"].byteorder == ">"


def used_tuples(records: np.ndarray, n_tuples: np.ndarray):
    """saddr, daddr (bytes), sport, dport of the first ``n_tuples[i]`` tuples of record i."""
    return _fields(used(words(records, "tuples"), n_tuples), _network_order(records))


def tuples_at(records: np.ndarray, rec: np.ndarray, index: np.ndarray, order: np.ndarray | None = None):
    """saddr, daddr (bytes), sport, dport of tuple ``index[k]`` of record
    ``rec[k]`` (of ``records[order]``): a hop's addresses."""
    return _fields(words(records, "tuples", order)[rec, index], _network_order(records))


def tuple_slots(records: np.ndarray, slots: np.ndarray, order: np.ndarray | None = None):
    """saddr, daddr (bytes), sport, dport of tuple ``slots[k] % MAX_TUPLES``
    of record ``slots[k] // MAX_TUPLES`` (of ``records[order]``)."""
    w = words(records, "tuples", order)
    return _fields(w.reshape(-1, w.shape[2])[slots], _network_order(records))


def concat(parts: list[np.ndarray]) -> np.ndarray:
    """Record arrays back to back, as bytes. np.concatenate promotes a
    structured dtype to native byte order first, converting the kernel's
    big-endian fields one by one (~0.2 µs a record); records of one dtype
    need no conversion."""
    if len(parts) == 1:
        return parts[0]
    dtype = parts[0].dtype
    if any(p.dtype != dtype for p in parts):
        return np.concatenate(parts)
    return np.concatenate([_raw(p) for p in parts]).view(dtype)


def gather(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """``concat([b if rows is None else take(b, rows) for b, rows in
    parts])`` with each record copied once, straight to its place (a
    lone whole batch not at all): the records a pass lets go."""
    if not parts:
        raise ValueError("gather: no parts")  # a dtype is needed even for none
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0]
    dtype = parts[0][0].dtype
    if any(b.dtype != dtype for b, _ in parts):
        return concat([b if rows is None else take(b, rows) for b, rows in parts])
    out = np.empty(sum(len(b) if rows is None else len(rows) for b, rows in parts), dtype)
    raw, at = _raw(out), 0
    for b, rows in parts:
        n = len(b) if rows is None else len(rows)
        if rows is None:
            raw[at:at + n] = _raw(b)
        else:
            np.take(_raw(b), rows, out=raw[at:at + n], mode="clip")  # "raise" would copy through a buffer
        at += n
    return out


def take(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``records[index]`` (positions or a mask) copied as whole records:
    numpy gathers a structured dtype field by field (~440 ns a 320-byte
    record), the same bytes as one opaque item each in ~11 ns."""
    return _raw(records)[index].view(records.dtype)


def _raw(records: np.ndarray) -> np.ndarray:
    return records.view(np.dtype((np.void, records.dtype.itemsize)))
