"""The kernel's journey records (events.JOURNEY_DTYPE) -> the flat numpy
columns of a capture's journey rows (tracer/journey_columns.py builds the
Arrow arrays from them). Since capture schema 5 a hop is laid out as its
time (and place index) only: the rest of it is its record's hop path, and
the addresses its record's tuple list, each distinct one laid out once
(``path_words``, the tuple columns) and numbered record by record.

Two twins fill the same arrays: ``layout_numpy``, the reference, and the
compiled ``journey_layout`` of tracer._native (native/journey_layout.c),
one pass over each record instead of a strided pass over the whole flush
per field (about a tenth of the CPU: docs/benchmarks.md). The compiled one
is used where it was built and the records are the kernel's own dtype,
contiguous (what the drain hands out); the tests compare both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer import events, record_words
from tracer.decode import place_keys
from tracer.native import native
from tracer.ragged import positions, ranges

_HOOK_DROP = events.HOOKS.index("drop")

# (name, dtype) of each output, in the order native/journey_layout.c takes them
RECORD_COLUMNS = (
    ("packet_id", np.uint64), ("flow_id", np.uint64), ("skb", np.uint64), ("ktime", np.uint64),
    ("last_gap", np.uint64),  # last_ktime - (ktime + the last hop's dt_ns), wrapping (mostly 0)
    ("drop_netns", np.uint32), ("fwd_out_ifindex", np.uint32),
    ("ip_id", np.uint16), ("length", np.uint16), ("cpu", np.uint16), ("tcp_flags", np.uint8), ("tcp_doff", np.uint8),
    ("tcp_seq", np.uint32), ("tcp_ack", np.uint32), ("end", np.uint8), ("direction", np.uint8),
    ("protocol", np.uint8), ("drop_reason", np.int64),  # -1: no drop hop
    ("path", np.int32),  # the record's hop path: into Columns.path_starts
    ("tuple_list", np.int32),  # the record's tuples: a list of the tuple columns (tuple_offsets delimits them)
    # one more than the records; tuple_offsets: one more than the tuple lists (Columns.n_lists), the rest unused
    ("hop_offsets", np.int32), ("tuple_offsets", np.int32),
)
# a hop's other fields are its path's (Columns.path_words, path_fields)
HOP_COLUMNS = (
    *((name, np.uint8) for name in events.DT_PLANES),  # dt_ns's bytes, least significant first
    ("place_index", np.int64),  # into Columns.place_keys
)
TUPLE_COLUMNS = (("saddr", np.uint8), ("daddr", np.uint8), ("sport", np.uint16), ("dport", np.uint16))  # addresses: 16 bytes a tuple


def _layout() -> tuple[int, ...]:
    """The record layout as native/journey_layout.c takes it (its L_* order)."""
    d = events.JOURNEY_DTYPE
    at = {name: d.fields[name][1] for name in d.names}
    return (d.itemsize, at["packet_id"], at["flow_id"], at["first_ktime"], at["last_ktime"], at["skb"], at["tuples"],
            at["tcp_seq"], at["tcp_ack"], at["drop_reason"], at["drop_netns"], at["fwd_out_ifindex"], at["ip_id"],
            at["length"], at["cpu"], at["protocol"], at["tcp_flags"], at["direction"], at["n_hops"], at["n_tuples"],
            at["end"], at["hops"], at["tcp_doff"], events.MAX_HOPS, events.MAX_TUPLES, _HOOK_DROP,
            events.HOP_STAGE_SHIFT, events.HOP_IN_CT_BIT)


LAYOUT = _layout()
# what the C reads as little-endian or network order must be so in the dtype
assert all(events.JOURNEY_DTYPE[f].byteorder in "<=|" for f in
           ("packet_id", "flow_id", "first_ktime", "last_ktime", "skb", "drop_reason", "drop_netns", "fwd_out_ifindex", "cpu"))
assert all(events.JOURNEY_DTYPE[f].byteorder == ">" for f in ("ip_id", "length", "tcp_seq", "tcp_ack"))
assert events.TUPLE_DTYPE["sport"].byteorder == ">" and events.HOP_DTYPE.itemsize == 12


@dataclass
class Columns:
    """A flush's journey records as flat columns: per kept record (those
    with hops; ``hop_offsets`` delimit each one's), per used hop, per tuple
    of each distinct tuple list (``saddr``/``daddr``: 16 bytes each; the
    columns are sized for every record's, the lists use the first
    ``tuple_offsets[n_lists]``)."""

    records: dict[str, np.ndarray]
    hops: dict[str, np.ndarray]
    tuples: dict[str, np.ndarray]
    kept: np.ndarray  # the kept records' positions in the input
    # distinct (netns, in-container, ifindex) keys of the hops (decode.place_keys'
    # form), in order of first appearance: what hops["place_index"] indexes
    place_keys: list[int] | None = None
    # distinct hop paths (a record's hops but for their times), in order of
    # first appearance: one word a hop (path_fields reads them), path p's
    # from path_starts[p] to path_starts[p + 1]; what records["path"] indexes
    path_words: np.ndarray | None = None
    path_starts: np.ndarray | None = None
    # distinct tuple lists (a record's tuples), in order of first appearance:
    # the tuple columns hold each once, records["tuple_offsets"][:n_lists + 1]
    # delimits them, records["tuple_list"] says each record's
    n_lists: int | None = None

    def __len__(self) -> int:
        return len(self.kept)

    def hop_record(self) -> np.ndarray:
        """Each hop's record, as a position in the input."""
        return np.repeat(self.kept, np.diff(self.records["hop_offsets"]))

    def hop_words(self, rows: np.ndarray) -> np.ndarray:
        """The path words of the hops of the kept records ``rows``, in order."""
        paths = self.records["path"][rows]
        return self.path_words[ranges(self.path_starts[paths], np.diff(self.path_starts)[paths])]


def path_fields(words: np.ndarray) -> dict[str, np.ndarray]:
    """Path words -> each hop's hook, nat_stage, flags and ttl and tuple
    (uint8, as a capture stores them) and place_index (into place_keys)."""
    code = (words & np.uint64(0xFF)).astype(np.uint8)
    return {"hook": code & np.uint8(0x0F), "nat_stage": (code >> np.uint8(events.HOP_STAGE_SHIFT)) & np.uint8(0x03),
            # HOP_FLAG_IN_CONTAINER_NS from HOP_IN_CT_BIT (0x40), HOP_FLAG_NEW_PACKET from 0x80
            "flags": code >> np.uint8(6), "ttl": ((words >> np.uint64(8)) & np.uint64(0xFF)).astype(np.uint8),
            "tuple": ((words >> np.uint64(16)) & np.uint64(0xFF)).astype(np.uint8),
            "place_index": (words >> np.uint64(24)).astype(np.int64)}


def counts(records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept records' positions (those with hops), their hop and tuple counts as laid out."""
    n_hops = records["n_hops"]
    kept = np.flatnonzero(n_hops)
    nh = np.minimum(n_hops[kept].astype(np.int64), events.MAX_HOPS)
    nt = np.clip(records["n_tuples"][kept].astype(np.int64), 1, events.MAX_TUPLES)
    return kept, nh, nt


def _empty(kept: np.ndarray, nh: np.ndarray, nt: np.ndarray) -> Columns:
    k, h, t = len(kept), int(nh.sum()), int(nt.sum())
    return Columns(
        {name: np.empty(k + 1 if name.endswith("_offsets") else k, dt) for name, dt in RECORD_COLUMNS},
        {name: np.empty(h, dt) for name, dt in HOP_COLUMNS},
        {name: np.empty(16 * t if name.endswith("addr") else t, dt) for name, dt in TUPLE_COLUMNS},
        kept)


def compiled_usable(records: np.ndarray) -> bool:
    """Whether the compiled twin can read ``records`` as they are."""
    return native() is not None and records.dtype == events.JOURNEY_DTYPE and records.flags.c_contiguous


def layout(records: np.ndarray) -> Columns:
    """The journey records' columns, compiled where it can be."""
    kept, nh, nt = counts(records)
    out = _empty(kept, nh, nt)
    layout_into(records, out, nh, nt)
    return out


def layout_into(records: np.ndarray, out: Columns, nh: np.ndarray, nt: np.ndarray) -> None:
    """``layout`` into ``out``: its columns sized for the records'
    ``counts`` (``out.kept``, ``nh``, ``nt``), e.g. views into longer ones
    that gather several calls' rows (tracer/journey_columns.py)."""
    if not compiled_usable(records):
        _fill_numpy(records, out, nh, nt)
        return
    kept = out.kept
    out.place_keys, words, starts, out.n_lists = native().journey_layout(
        records.view(np.uint8).reshape(-1), LAYOUT, len(kept), len(out.hops["place_index"]),
        len(out.tuples["sport"]), tuple(out.records[name] for name, _ in RECORD_COLUMNS),
        tuple(out.hops[name] for name, _ in HOP_COLUMNS), tuple(out.tuples[name] for name, _ in TUPLE_COLUMNS))
    out.path_words, out.path_starts = np.frombuffer(words, np.uint64), np.array(starts, np.int64)


def layout_numpy(records: np.ndarray) -> Columns:
    """The reference: the same columns with numpy, any record dtype
    conversion numpy made (e.g. native byte order after np.concatenate)."""
    kept, nh, nt = counts(records)
    out = _empty(kept, nh, nt)
    _fill_numpy(records, out, nh, nt)
    return out


def _fill_numpy(records: np.ndarray, out: Columns, nh: np.ndarray, nt: np.ndarray) -> None:
    kept = out.kept
    recs = record_words.take(records, kept) if len(kept) != len(records) else records
    r = out.records
    for name, column in (("packet_id", "packet_id"), ("flow_id", "flow_id"), ("skb", "skb"), ("ktime", "first_ktime"),
                         ("drop_netns", "drop_netns"),
                         ("fwd_out_ifindex", "fwd_out_ifindex"), ("ip_id", "ip_id"), ("length", "length"),
                         ("cpu", "cpu"), ("tcp_flags", "tcp_flags"), ("tcp_doff", "tcp_doff"), ("tcp_seq", "tcp_seq"),
                         ("tcp_ack", "tcp_ack"), ("end", "end"), ("direction", "direction"), ("protocol", "protocol")):
        r[name][:] = recs[column]  # numpy converts the byte order
    np.cumsum(nh, out=r["hop_offsets"][1:])
    r["hop_offsets"][0] = 0

    h = record_words.hops(recs, nh)
    code = h.code
    hook = code & 0x0F
    rec = np.repeat(np.arange(len(recs)), nh)
    is_drop = hook == _HOOK_DROP
    o = out.hops
    for i, name in enumerate(events.DT_PLANES):
        o[name][:] = (h.dt_ns >> (8 * i)) & 0xFF
    netns = np.zeros(len(code), np.uint32)
    drops = np.flatnonzero(is_drop)
    netns[drops] = r["drop_netns"][rec[drops]]
    keys, inverse = place_keys(netns, (code & events.HOP_IN_CT_BIT) != 0, h.ifindex)
    o["place_index"][:], first = _by_appearance(inverse, len(keys))
    out.place_keys = keys[inverse[first]].tolist()
    has_drop = np.zeros(len(recs), bool)
    has_drop[rec[drops]] = True
    r["drop_reason"][:] = np.where(has_drop, recs["drop_reason"].astype(np.int64), -1)
    last_dt = h.dt_ns[r["hop_offsets"][1:] - 1].astype(np.uint64)
    with np.errstate(over="ignore"):
        r["last_gap"][:] = recs["last_ktime"].astype(np.uint64) - (r["ktime"] + last_dt)
    _number_paths(out, code.astype(np.uint64) | h.ttl.astype(np.uint64) << np.uint64(8)
                  | np.minimum(h.tuple, events.MAX_TUPLES - 1).astype(np.uint64) << np.uint64(16)
                  | o["place_index"].astype(np.uint64) << np.uint64(24))

    _list_tuples(out, *record_words.used_tuples(recs, nt), nt)


def _by_appearance(numbers: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers 0 .. count - 1 in any order, renumbered in order of first
    appearance (the compiled twin's order): each row's new number, and each
    new number's first row."""
    first = np.full(count, len(numbers), np.int64)
    np.minimum.at(first, numbers, np.arange(len(numbers)))
    order = np.argsort(first, kind="stable")
    rank = np.empty(count, np.int64)
    rank[order] = np.arange(count)
    return rank[numbers], first[order]


def _distinct_lists(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lists as the rows of a 2-D array (each row its length, then its
    elements padded), numbered as distinct in order of first appearance:
    each list's number, and each number's first list."""
    if not len(rows):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # the rows' bytes as 64-bit words, sorted (np.unique on rows compares them
    # field by field, or as void bytes: 4x and 2x slower), equal neighbours one list
    width = rows.shape[1] * rows.itemsize
    words = np.zeros((len(rows), -(-width // 8) * 8), np.uint8)
    words[:, :width] = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), -1)
    words = words.view(np.uint64)
    order = np.lexsort(words.T[::-1])
    ranked = words[order]
    new = np.ones(len(rows), bool)
    new[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    numbers = np.empty(len(rows), np.int64)
    numbers[order] = np.cumsum(new) - 1
    return _by_appearance(numbers, int(new.sum()))


def _number_paths(out: Columns, words: np.ndarray) -> None:
    """records["path"], path_words and path_starts from each hop's path
    word, as the compiled twin numbers them: distinct hop paths in order of
    first appearance."""
    offsets = out.records["hop_offsets"]
    nh = np.diff(offsets)
    rows = np.zeros((len(nh), 1 + int(nh.max(initial=0))), np.uint64)
    rows[:, 0] = nh
    owner, at = positions(nh)
    rows[owner, 1 + at] = words
    out.records["path"][:], firsts = _distinct_lists(rows)
    out.path_words = words[ranges(offsets[firsts], nh[firsts])]
    out.path_starts = np.concatenate(([0], np.cumsum(nh[firsts]))).astype(np.int64)


def _list_tuples(out: Columns, saddr, daddr, sport, dport, nt: np.ndarray) -> None:
    """records["tuple_list"], the distinct lists' tuples and their offsets,
    as the compiled twin lays them out: each distinct list of a record's
    tuples once, in order of first appearance."""
    r, t = out.records, out.tuples
    nt = nt.astype(np.int64)
    ports = [np.ascontiguousarray(p, np.uint16).view(np.uint8).reshape(-1, 2) for p in (sport, dport)]
    tuples = np.concatenate([saddr.reshape(-1, 16), daddr.reshape(-1, 16), *ports], axis=1)  # 36 bytes a tuple
    rows = np.zeros((len(nt), int(nt.max(initial=0)), tuples.shape[1]), np.uint8)
    owner, at = positions(nt)
    rows[owner, at] = tuples
    r["tuple_list"][:], firsts = _distinct_lists(np.concatenate((nt[:, None].astype(np.uint8),
                                                                 rows.reshape(len(nt), -1)), axis=1))
    used = ranges((np.cumsum(nt) - nt)[firsts], nt[firsts])
    n = len(used)
    t["saddr"][:16 * n] = saddr.reshape(-1, 16)[used].reshape(-1)
    t["daddr"][:16 * n] = daddr.reshape(-1, 16)[used].reshape(-1)
    t["sport"][:n] = sport[used]
    t["dport"][:n] = dport[used]
    r["tuple_offsets"][0] = 0
    np.cumsum(nt[firsts], out=r["tuple_offsets"][1:len(firsts) + 1])
    out.n_lists = len(firsts)
