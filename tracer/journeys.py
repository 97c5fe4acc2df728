"""Events -> packet journeys.

The kernel already gives every sighting of one packet the same ``packet_id``,
so building a journey is a group-by, not event-by-event matching: sort a batch
by (packet_id, ktime_ns), cut it where packet_id changes, and fill what only
some sightings know (the conntrack entry ``flow_id`` and ``direction`` are read
at netfilter hooks, not at tc) from the packet's other rows. All of that is
done on whole columns; Python only touches each hop once to build its ``Hop``.

``build_journeys`` works on a complete table (a capture replay);
``JourneyAssembler`` does the same on a live stream, holding back packets that
may still be moving until they have been quiet for a while.
"""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.addresses import endpoint
from tracer.events import FLAG_IN_CONTAINER_NS, tcp_flags_text
from tracer.hold import RecentIds
from tracer.ids import format_id, id_texts
from tracer.wallclock import rfc3339, rfc3339_array

VERDICTS = ("delivered", "dropped", "unknown")
_NF_HOOKS = frozenset({"nf_prerouting", "nf_input", "nf_forward", "nf_output", "nf_postrouting"})


@dataclass(slots=True)
class Hop:
    """One sighting of a packet, as seen at that hook (addresses after any NAT
    that already happened upstream)."""

    hook: str
    nat_stage: str | None
    ifname: str | None
    if_role: str | None
    netns: int
    container: str | None
    src: str | None  # "ip:port"; "ip" for ICMP
    dst: str | None
    ktime_ns: int
    dt_ns: int  # since the packet's first hop
    drop_reason: str | None
    # The packet's conntrack direction (filled from its other hops); it lets
    # nat_translation tell DNAT from reverse SNAT with just two hops.
    direction: str | None = None
    container_id: str | None = None

    @property
    def label(self) -> str:
        """'nf_prerouting/after', 'tc_egress@bridge', 'drop': the hop's place in the path."""
        return hop_label(self.hook, self.nat_stage, self.if_role)


def hop_label(hook: str, nat_stage: str | None, if_role: str | None) -> str:
    """Hop.label from its parts (also used on columns, once per distinct hop)."""
    if hook in _NF_HOOKS and nat_stage:
        return f"{hook}/{nat_stage}"
    if hook.startswith("tc_") and if_role:
        return f"{hook}@{if_role}"
    return hook


@dataclass(slots=True)
class Journey:
    packet_id: int
    flow_id: int | None  # nf_conn address; None when no hook saw the conntrack entry
    direction: str | None  # 'original' | 'reply' | None
    protocol: str | None
    tcp_flags: str | None  # 'S', 'SA', 'PA'...; None for non-TCP
    length: int  # IPv4 total length (NAT does not change it)
    container: str | None
    verdict: str  # one of VERDICTS
    drop_reason: str | None
    hops: list[Hop]
    # For dropped packets: the last hop before the drop row (where it was last seen alive).
    last_seen: Hop | None = None
    time_ns: int | None = None  # wall clock (UTC ns) of the first hop; None when unknown

    @property
    def first_ktime(self) -> int:
        return self.hops[0].ktime_ns

    @property
    def last_ktime(self) -> int:
        return max(h.ktime_ns for h in self.hops)

    @property
    def src(self) -> str | None:
        """Source as the packet entered (before any NAT)."""
        return self.hops[0].src

    @property
    def dst(self) -> str | None:
        return self.hops[0].dst

    def to_json_dict(self) -> dict:
        """The journey JSON contract (README, Contracts), key for key."""
        return {
            "packet_id": format_id(self.packet_id),
            "flow_id": format_id(self.flow_id) if self.flow_id else None,
            "time": rfc3339(self.time_ns),
            "ktime_ns": self.first_ktime,
            "direction": self.direction,
            "protocol": self.protocol,
            "tcp_flags": self.tcp_flags,
            "container": self.container,
            "verdict": self.verdict,
            "drop_reason": self.drop_reason,
            "hops": [
                {
                    "hook": h.hook,
                    "nat_stage": h.nat_stage,
                    "ifname": h.ifname,
                    "netns": h.netns,
                    "container": h.container,
                    "src": h.src,
                    "dst": h.dst,
                    "dt_ns": h.dt_ns,
                    "container_id": h.container_id,  # extra: tells a recreated container apart
                }
                for h in self.hops
            ],
        }


# --- verdict -------------------------------------------------------------------

# A packet is 'delivered' when its last sighting is one after which this host
# has nothing more to do with it. Each rule: (hook, accepted nat_stage values or
# None for any, accepted if_role values or None for any, meaning). Anything else
# as a last hop ('unknown') means the packet left our sensors' view on the way:
# a missing sensor, lost events, or a drop the drop sensor did not catch.
TERMINAL_SIGHTINGS: tuple[tuple[str, frozenset | None, frozenset | None, str], ...] = (
    ("tc_ingress", None, frozenset({"container"}), "arrived in the container's netns"),
    ("tc_egress", None, frozenset({"external"}), "left the host toward the outside"),
    # INPUT 'before' is not the end: replies of DNATed connections get their
    # source translated back at INPUT (nat priority 100), after which comes 'after'.
    ("nf_input", frozenset({"after", None}), None, "delivered to the host itself"),
)


def is_terminal(hop: Hop) -> bool:
    return any(
        hop.hook == hook
        and (stages is None or hop.nat_stage in stages)
        and (roles is None or hop.if_role in roles)
        for hook, stages, roles, _ in TERMINAL_SIGHTINGS
    )


def verdict_of(hops: list[Hop]) -> tuple[str, str | None]:
    """(verdict, drop_reason) for hops in journey order (a drop row, if any, last)."""
    if hops and hops[-1].hook == "drop":
        # Freed after it reached its destination (e.g. QUEUE_PURGE when the
        # receiving socket closes unread): the network delivered it; the drop
        # row stays in the hops to show what the endpoint did with it.
        if len(hops) > 1 and is_terminal(hops[-2]):
            return "delivered", None
        return "dropped", hops[-1].drop_reason
    if hops and is_terminal(hops[-1]):
        return "delivered", None
    return "unknown", None


# --- NAT -----------------------------------------------------------------------


def nat_translation(prev: Hop, hop: Hop) -> str | None:
    """Name the translation between two consecutive sightings of one packet.

    Original direction: a new destination is DNAT, a new source is SNAT
    (MASQUERADE). Reply direction undoes those: the reply's source going back to
    the published address is 'reverse DNAT', its destination going back to the
    container's address is 'reverse SNAT'. Drop rows and hops without addresses
    say nothing about NAT.
    """
    if prev.hook == "drop" or hop.hook == "drop":
        return None
    if None in (prev.src, prev.dst, hop.src, hop.dst):
        return None
    reply = (hop.direction or prev.direction) == "reply"
    labels = []
    if prev.dst != hop.dst:
        labels.append("reverse SNAT" if reply else "DNAT")
    if prev.src != hop.src:
        labels.append("reverse DNAT" if reply else "SNAT")
    return " + ".join(labels) or None


# --- grouping ------------------------------------------------------------------

# Columns journeys need. Strings stay dictionary-encoded as in EVENT_SCHEMA
# (a handful of distinct hook, interface and address values): decoding works
# on the small dictionaries, and rows share the same Python str objects. A
# capture written before a column existed gets nulls for it.
_DICT_STR = pa.dictionary(pa.int32(), pa.string())
_WORK_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("ns", tz="UTC")),
        ("ktime_ns", pa.uint64()),
        ("packet_id", pa.uint64()),
        ("flow_id", pa.uint64()),
        ("hook", _DICT_STR),
        ("nat_stage", _DICT_STR),
        ("ifname", _DICT_STR),
        ("if_role", _DICT_STR),
        ("netns", pa.uint32()),
        ("container_id", _DICT_STR),
        ("container_name", _DICT_STR),
        ("direction", _DICT_STR),
        ("protocol", _DICT_STR),
        ("src_ip", _DICT_STR),
        ("src_port", pa.uint16()),
        ("dst_ip", _DICT_STR),
        ("dst_port", pa.uint16()),
        ("length", pa.uint16()),
        ("tcp_flags", pa.uint8()),
        ("drop_reason", _DICT_STR),
        ("flags", pa.uint8()),
    ]
)
_DIRECTION_NAMES = np.array([None, "original", "reply"], dtype=object)


def _normalise(table: pa.Table) -> pa.Table:
    """Only the columns journeys need, in the types above; rows without a
    packet id (no sensor could tie them to a packet) left out."""
    if table.schema.equals(_WORK_SCHEMA):
        work = table  # already normalised (pop_complete_table's output)
    else:
        work = _conform(table)
    pid = work["packet_id"]
    known = _numpy(pid) != 0
    return work if known.all() else work.filter(pa.array(known))


_WORK_NAMES = tuple(_WORK_SCHEMA.names)


def _conform(table: pa.Table) -> pa.Table:
    names = set(table.column_names)
    if names.issuperset(_WORK_NAMES):
        picked = table.select(_WORK_NAMES)
        if picked.schema.equals(_WORK_SCHEMA):  # EVENT_SCHEMA input: no cast needed
            return picked
    cols = []
    for f in _WORK_SCHEMA:
        if f.name not in names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        cols.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=_WORK_SCHEMA)


def _numpy(col: pa.ChunkedArray | pa.Array, fill: int = 0) -> np.ndarray:
    if col.null_count == 0:  # the common case: skip fill_null's copy
        return col.to_numpy()
    return pc.fill_null(col, fill).to_numpy()


def _objects(col: pa.ChunkedArray, fn: Callable[[str], str | None] | None = None) -> np.ndarray:
    """A dictionary column as a numpy object array (None for null), with ``fn``
    applied to each distinct value rather than to each row."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = arr.dictionary.to_pylist()
    if fn is not None:
        values = [fn(v) for v in values]
    lut = np.empty(len(values) + 1, dtype=object)
    lut[:-1] = values  # the extra last slot stays None: where null indices point
    return lut[_numpy(arr.indices, len(values))]


def _endpoints(ip: np.ndarray, port: np.ndarray, icmp: np.ndarray) -> list:
    """'ip:port' per row ('[ip]:port' for IPv6), plain 'ip' for ICMP (its
    'ports' are echo id/seq)."""
    # Through Arrow's string kernels: vectorised, unlike an f-string per row.
    ips = pa.array(ip, pa.string())
    bracketed = pc.if_else(pc.match_substring(ips, ":"), pc.binary_join_element_wise("[", ips, "]", ""), ips)
    joined = pc.binary_join_element_wise(bracketed, pc.cast(pa.array(port), pa.string()), ":")
    return pc.if_else(pa.array(icmp), ips, joined).to_pylist()


def _build_sorted(work: pa.Table) -> list[Journey]:
    """Journeys from a normalised table sorted by (packet_id, ktime_ns)."""
    with _no_gc():
        return _build_sorted_inner(work)


def _build_sorted_inner(work: pa.Table) -> list[Journey]:
    n = work.num_rows
    if n == 0:
        return []
    pid = _numpy(work["packet_id"])
    ktime = _numpy(work["ktime_ns"]).astype(np.int64)
    starts = np.flatnonzero(np.diff(pid)) + 1
    starts = np.concatenate(([0], starts))
    ends = np.append(starts[1:], n)
    sizes = ends - starts

    # Per-packet facts known on some rows only: take them from whichever row has them.
    flow = np.maximum.reduceat(_numpy(work["flow_id"]), starts)
    row_dir = _objects(work["direction"])
    direction = np.maximum.reduceat((row_dir == "original") + 2 * (row_dir == "reply").astype(np.int8), starts)
    dt = ktime - np.repeat(ktime[starts], sizes)

    protocol = _objects(work["protocol"])
    icmp = np.isin(protocol, list(events.ICMP_NAMES))
    src = _endpoints(_objects(work["src_ip"]), _numpy(work["src_port"]), icmp)
    dst = _endpoints(_objects(work["dst_ip"]), _numpy(work["dst_port"]), icmp)
    container = _objects(work["container_name"])
    unnamed = container == None  # noqa: E711 (element-wise)
    if unnamed.any():
        short = _objects(work["container_id"], lambda v: v[:12] if v else None)
        container[unnamed] = short[unnamed]
    # A tc program inside a container's netns is a container sighting even if
    # enrichment could not name the interface's role.
    role = _objects(work["if_role"])
    in_ns = (_numpy(work["flags"]) & FLAG_IN_CONTAINER_NS) != 0
    role[in_ns & (role == None)] = "container"  # noqa: E711
    protocol = protocol.tolist()

    hops = list(
        map(
            Hop,
            _objects(work["hook"]).tolist(),
            _objects(work["nat_stage"]).tolist(),
            _objects(work["ifname"]).tolist(),
            role.tolist(),
            _numpy(work["netns"]).tolist(),
            container.tolist(),
            src,
            dst,
            ktime.tolist(),
            dt.tolist(),
            _objects(work["drop_reason"]).tolist(),
            _DIRECTION_NAMES[np.repeat(direction, sizes)].tolist(),
            _objects(work["container_id"]).tolist(),
        )
    )
    tcp_flags = _numpy(work["tcp_flags"]).tolist()
    length = _numpy(work["length"]).tolist()
    offset = wall_offsets(work)  # wall clock minus ktime per row; None where unknown

    journeys = []
    for g, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        j = _journey(
            packet_id=int(pid[s]),
            flow_id=int(flow[g]) or None,
            direction=_DIRECTION_NAMES[direction[g]],
            protocol=protocol[s],
            tcp_flags=tcp_flags[s],
            length=length[s],
            hops=hops[s:e],
        )
        if offset[s] is not None:
            j.time_ns = j.first_ktime + offset[s]
        journeys.append(j)
    journeys.sort(key=lambda j: (j.first_ktime, j.packet_id))
    return journeys


def wall_offsets(work: pa.Table) -> list:
    """Per row, its wall clock (the `time` column) minus its ktime_ns, None
    where the row has no time: a journey's time is its first hop's ktime
    plus its first row's offset (one clock for all rows of a run)."""
    time = pc.cast(work["time"], pa.int64())
    diff = pc.subtract(time, pc.cast(work["ktime_ns"], pa.int64()))
    return diff.to_pylist()


def _journey(*, packet_id, flow_id, direction, protocol, tcp_flags, length, hops: list[Hop]) -> Journey:
    last_seen = None
    drops = [h for h in hops if h.hook == "drop"]
    if drops:
        # The drop row ends the journey, whatever its timestamp says; a second
        # drop row of the same skb adds nothing.
        hops = [h for h in hops if h.hook != "drop"] + drops[:1]
        last_seen = hops[-2] if len(hops) > 1 else None
        drop = hops[-1]
        if last_seen is not None and drop.src is None and drop.dst is None:
            # Nothing rewrites a packet between its last sighting and its free:
            # show the addresses it had there rather than nulls.
            drop.src, drop.dst = last_seen.src, last_seen.dst
    verdict, reason = verdict_of(hops)
    return Journey(
        packet_id=packet_id,
        flow_id=flow_id,
        direction=direction,
        protocol=protocol,
        tcp_flags=_flags_text(tcp_flags) if protocol == "tcp" else None,
        length=length,
        container=next((h.container for h in hops if h.container), None),
        verdict=verdict,
        drop_reason=reason,
        hops=hops,
        last_seen=last_seen,
    )


_flags_text = lru_cache(maxsize=256)(tcp_flags_text)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Building a journey allocates a few objects per hop and none of them form
    cycles; letting the cyclic collector scan them repeatedly costs more than
    building them (about 4x at a million hops)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _sort_order(pid: np.ndarray, ktime: np.ndarray) -> np.ndarray:
    """Stable (packet_id, ktime_ns) order, as _sort."""
    return np.lexsort((ktime, pid))


def _sort(work: pa.Table) -> pa.Table:
    # Arrow's sort is stable: sightings with equal timestamps keep ring-buffer order.
    return work.take(pc.sort_indices(work, [("packet_id", "ascending"), ("ktime_ns", "ascending")]))


def build_journeys(table: pa.Table) -> list[Journey]:
    """All journeys in an event table (EVENT_SCHEMA), ordered by first sighting."""
    return _build_sorted(_sort(_normalise(table)))


def fill_flows(table: pa.Table) -> pa.Table:
    """The event table with flow_id/direction copied to every row of a packet
    from the rows that know them (tc rows do not), e.g. for capture analysis.
    Row order is kept."""
    if table.num_rows == 0:
        return table
    pid = _numpy(table["packet_id"])
    order = np.argsort(pid, kind="stable")
    spid = pid[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(spid)) + 1))
    counts = np.diff(np.append(starts, len(spid)))
    flow = _numpy(table["flow_id"])[order]
    dcol = table["direction"]
    code = _numpy(pc.equal(dcol, "original"), False).astype(np.int8) + 2 * _numpy(
        pc.equal(dcol, "reply"), False
    ).astype(np.int8)
    filled_flow = np.empty_like(flow)
    filled_flow[order] = np.repeat(np.maximum.reduceat(flow, starts), counts)
    filled_code = np.empty_like(code)
    filled_code[order] = np.repeat(np.maximum.reduceat(code[order], starts), counts)
    # packet_id 0 means 'not identified': never spread values across those rows.
    unknown = pid == 0
    filled_flow[unknown] = _numpy(table["flow_id"])[unknown]
    filled_code[unknown] = code[unknown]
    names = pa.array(_DIRECTION_NAMES[filled_code], pa.string())
    i_flow = table.schema.get_field_index("flow_id")
    i_dir = table.schema.get_field_index("direction")
    out = table.set_column(i_flow, table.schema.field(i_flow), pa.array(filled_flow, pa.uint64()))
    return out.set_column(i_dir, table.schema.field(i_dir), names.cast(table.schema.field(i_dir).type))


# --- live assembly -------------------------------------------------------------


class JourneyAssembler:
    """Builds journeys from a live stream of event batches.

    A packet is complete once nothing has been seen of it for ``idle_ns``: a
    forwarded packet crosses the host in tens of microseconds, so a quiet
    period of a few hundred milliseconds (several drain batches) is safe.
    Only rows of incomplete packets are held, so memory is bounded by the event
    rate times the idle time. Ids of recently emitted packets are remembered
    (a bounded window) so a straggling sighting of an emitted packet is counted
    in ``late_rows`` rather than shown as a bogus one-hop journey.
    """

    def __init__(self, recent_ids: int = 1 << 16) -> None:
        self.late_rows = 0
        # Held tables stay as they came (each with its own dictionaries);
        # their packet_id/ktime_ns columns are kept as numpy arrays, so a
        # poll decides what is complete without combining the held rows.
        self._pending: list[pa.Table] = []
        self._keys: list[tuple[np.ndarray, np.ndarray]] = []  # (packet_id, ktime_ns) per pending table
        # Per pending table, which rows are still held (None: all). Emitted
        # rows are marked here instead of copying the held ones out.
        self._held: list[np.ndarray | None] = []
        self._emitted = RecentIds(recent_ids)

    def add(self, table: pa.Table) -> None:
        work = _normalise(table).combine_chunks()
        if work.num_rows and len(self._emitted):
            late = self._emitted.seen(_numpy(work["packet_id"]))
            if late.any():
                self.late_rows += int(late.sum())
                work = work.filter(pa.array(~late))
        if work.num_rows:
            self._pending.append(work)
            self._keys.append((_numpy(work["packet_id"]), _numpy(work["ktime_ns"])))
            self._held.append(None)

    @property
    def pending_rows(self) -> int:
        return sum(t.num_rows if m is None else int(m.sum()) for t, m in zip(self._pending, self._held))

    def pop_complete(self, idle_ns: int, now_ktime: int) -> list[Journey]:
        """Journeys of packets not seen for at least ``idle_ns`` before
        ``now_ktime`` (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns)."""
        return journeys_of_table(self.pop_complete_table(idle_ns, now_ktime))

    def pop_complete_table(self, idle_ns: int, now_ktime: int) -> pa.Table:
        """The complete packets as rows rather than Journey objects: the complete
        packets' rows (normalised columns, sorted by packet_id, ktime_ns) for
        journey_json_lines / Summary.add_table."""
        cutoff = now_ktime - idle_ns
        if not self._pending or cutoff < 0:
            return _WORK_SCHEMA.empty_table()
        held = np.concatenate([np.ones(t.num_rows, bool) if m is None else m for t, m in zip(self._pending, self._held)])
        rows = np.flatnonzero(held)
        pid = np.concatenate([k[0] for k in self._keys])[rows]
        ktime = np.concatenate([k[1] for k in self._keys])[rows]
        # One sort permutation of the held rows: quiet packets are whole runs
        # of it, and only their rows are copied out.
        order = _sort_order(pid, ktime)
        spid, skt = pid[order], ktime[order]
        starts = np.concatenate(([0], np.flatnonzero(spid[1:] != spid[:-1]) + 1))
        ends = np.append(starts[1:], len(spid))
        quiet = skt[ends - 1] <= cutoff  # sorted by time within a packet: the last is the latest
        if not quiet.any():
            return _WORK_SCHEMA.empty_table()
        done = rows[order[np.repeat(quiet, ends - starts)]]
        out = self._take_rows(done)
        held[done] = False
        self._keep_held(held)
        self._emitted.add(spid[starts[quiet]])
        return out

    def _take_rows(self, done: np.ndarray) -> pa.Table:
        """Rows ``done`` (indices over the pending tables back to back), in
        that order. Each table gives up only its own rows before they are
        combined: combining every held row on each poll costs far more."""
        asc = np.sort(done)
        bounds = np.cumsum([0] + [t.num_rows for t in self._pending])
        cut = np.searchsorted(asc, bounds)
        pieces = []
        for t, lo, hi, base in zip(self._pending, cut[:-1], cut[1:], bounds[:-1]):
            if hi - lo == t.num_rows:
                pieces.append(t)  # every row of it: no copy
            elif hi > lo:
                pieces.append(t.take(pa.array(asc[lo:hi] - base)))
        picked = pa.concat_tables(pieces).combine_chunks() if len(pieces) > 1 else pieces[0]
        return picked.take(pa.array(np.searchsorted(asc, done)))

    def _keep_held(self, held: np.ndarray) -> None:
        """Store the held-row mask back per table; drop tables fully emitted."""
        pending, keys, masks, at = [], [], [], 0
        for t, k in zip(self._pending, self._keys):
            m = held[at : at + t.num_rows]
            at += t.num_rows
            if m.any():
                pending.append(t)
                keys.append(k)
                masks.append(None if m.all() else m)
        self._pending, self._keys, self._held = pending, keys, masks

    def flush_table(self) -> pa.Table:
        """Everything still held (at exit), complete or not, as pop_complete_table rows."""
        return self.pop_complete_table(0, np.iinfo(np.int64).max)

    def flush(self) -> list[Journey]:
        """Everything still held (at exit), complete or not."""
        return journeys_of_table(self.flush_table())


# --- vectorised journeys (the live --json path) -------------------------------
#
# Building one Journey/Hop object per sighting and json.dumps-ing it costs
# ~10 µs per event: too slow for 100k events/s. The functions below compute
# the same journeys on whole columns: per-packet facts with reduceat over
# packet groups, and the JSON text by formatting each *distinct* value once
# (a handful of hooks, interfaces, endpoints) and gluing per-row fragments
# with Arrow string kernels. One packet's JSON line is then a contiguous
# slice of the glued buffer.


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
    protocol: _Codes  # per packet
    tcp_flags: np.ndarray  # per packet
    length: np.ndarray  # per packet
    netns: np.ndarray  # per hop
    ifname: _Codes  # per hop
    container_id: _Codes  # per hop
    wall_ns: np.ndarray  # per packet: wall clock (UTC ns) of the first hop; 0 unknown

    def __len__(self) -> int:
        return len(self.packet_id)

    def head(self, n: int) -> "JourneyRows":
        """The first ``n`` journeys (for --count)."""
        if n >= len(self):
            return self
        h = int(self.starts[n])
        per_hop = {f: getattr(self, f)[:h] for f in ("rows", "ktime", "dt", "netns")}
        codes = {f: _Codes(getattr(self, f).codes[:h], getattr(self, f).values)
                 for f in ("hook", "stage", "role", "drop_reason", "container", "ifname", "container_id")}
        per_journey = {f: getattr(self, f)[:n] for f in ("packet_id", "flow_id", "direction", "verdict", "reason",
                                                         "last_seen", "container_of", "tcp_flags", "length",
                                                         "wall_ns")}
        return JourneyRows(
            work=self.work, starts=self.starts[: n + 1],
            src=tuple(a[:h] for a in self.src), dst=tuple(a[:h] for a in self.dst),
            src_ip=self.src_ip, dst_ip=self.dst_ip,
            protocol=_Codes(self.protocol.codes[:n], self.protocol.values),
            **per_hop, **codes, **per_journey,
        )


def _journey_rows(work: pa.Table) -> JourneyRows:
    """JourneyRows of a normalised table sorted by (packet_id, ktime_ns)."""
    n = work.num_rows
    pid = _numpy(work["packet_id"])
    ktime = _numpy(work["ktime_ns"]).astype(np.int64)
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
    order = np.lexsort((pid[starts0], ktime[rows[first]])) if n else first
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
    role_values = role.values + ["container"]  # extra slot: a tc program inside a container netns
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
    truthy = _lut(c_values, bool)[c_codes]
    pos = np.where(truthy, np.arange(len(rows)), len(rows))
    firstnamed = np.minimum.reduceat(pos, first) if len(rows) else pos
    named = firstnamed < starts[1:]
    container_of = np.where(named, c_codes[np.minimum(firstnamed, max(len(rows) - 1, 0))], len(c_values) - 1)

    ifn = _codes(work["ifname"])
    p_first = starts0[order]  # the packet's earliest row (before drop reordering), as _build_sorted
    # Wall clock of the first hop: its ktime plus the packet's first row's offset (as _build_sorted).
    time = pc.cast(work["time"], pa.int64())
    offset = pc.fill_null(pc.subtract(time, pc.cast(work["ktime_ns"], pa.int64())), 0).to_numpy(zero_copy_only=False)
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
        protocol=_Codes(proto_all.codes[p_first], proto_all.values),
        tcp_flags=tflags_all[p_first],
        length=_numpy(work["length"])[p_first],
        netns=_numpy(work["netns"])[rows].astype(np.int64),
        ifname=_Codes(ifn.codes[rows], ifn.values),
        container_id=_Codes(ids.codes[rows], ids.values),
        wall_ns=wall.astype(np.int64),
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
    kt = _numpy(work["ktime_ns"])
    same = pid[1:] == pid[:-1]
    return bool(np.all(pid[1:] >= pid[:-1]) and np.all(~same | (kt[1:] >= kt[:-1])))


def journey_json_lines(table: pa.Table) -> list[str]:
    """One JSON line per journey, in order of first sighting: for each packet
    exactly ``json.dumps(journey.to_json_dict())`` of build_journeys(table)."""
    jr = journey_rows(table)
    if not len(jr):
        return []
    pieces, line_starts = _json_pieces(jr, newline=False)
    data, offsets = _string_buffer(pieces)
    at = offsets[line_starts].tolist()
    text = bytes(data[at[0] : at[-1]])
    return [text[s - at[0] : e - at[0]].decode() for s, e in zip(at[:-1], at[1:])]


def journey_json_block(table: pa.Table) -> tuple[memoryview, int]:
    """The same lines, each ended by a newline, as one UTF-8 buffer (and how
    many lines): for writing straight out, without a Python str per hop or
    per line."""
    jr = journey_rows(table)
    if not len(jr):
        return memoryview(b""), 0
    pieces, _ = _json_pieces(jr, newline=True)
    data, offsets = _string_buffer(pieces)
    return data[int(offsets[0]) : int(offsets[-1])], len(jr)


def _string_buffer(arr: pa.StringArray) -> tuple[memoryview, np.ndarray]:
    """A string array's data buffer and its offsets (one per element, plus the end)."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=4 * arr.offset)
    return memoryview(arr.buffers()[2]), offsets


_PACKET_ID_KEY, _FLOW_ID_KEY = '{"packet_id": ', ', "flow_id": '
_TIME_KEY, _KTIME_KEY = ', "time": ', ', "ktime_ns": '
_HEADER_PIECES = 9  # '{"packet_id": ', id, flow key, flow, time key, time, ktime key, ktime, the rest


def _json_pieces(jr: JourneyRows, newline: bool) -> tuple[pa.StringArray, np.ndarray]:
    """The JSON lines as string pieces which, back to back, are the text: per
    journey '{"packet_id": ', id, ', "flow_id": ', flow, ', "time": ', time,
    ', "ktime_ns": ', ktime, the rest of its header; per hop its head (the
    previous hop's end, then hook .. "src": ), its addresses up to "dt_ns": ,
    dt; then the last hop's end and ']}'. Everything but the numbers and
    times is formatted once per distinct value; one take of a pool of all the
    texts lays the pieces out. Also returns the piece where each line starts
    (plus the end)."""
    n, count = len(jr.rows), len(jr)
    heads, head_idx = _hop_heads(jr)
    pairs, pair_idx = _hop_addresses(jr)
    rests, rest_idx = _header_rests(jr)
    close = "]}\n" if newline else "]}"
    closings = [_end_text(v) + close for v in jr.container_id.values]
    # The pool: the distinct texts, then the numbers formatted per row/journey.
    texts = [_PACKET_ID_KEY, _FLOW_ID_KEY, _TIME_KEY, _KTIME_KEY, *heads, *pairs, *closings, *rests]
    head_at = 4
    pair_at = head_at + len(heads)
    close_at = pair_at + len(pairs)
    rest_at = close_at + len(closings)
    dt_at = rest_at + len(rests)
    pid_at = dt_at + n
    flow_at = pid_at + count
    time_at = flow_at + count
    ktime_at = time_at + count
    times = pc.fill_null(pc.binary_join_element_wise('"', rfc3339_array(jr.wall_ns), '"', ""), "null")
    pool = pa.concat_arrays([
        pa.array(texts, pa.string()),
        pc.cast(pa.array(jr.dt), pa.string()),
        id_texts(jr.packet_id, json=True),  # ids as everywhere: hex text (tracer/ids.py)
        id_texts(jr.flow_id, json=True),  # 0: unknown -> null
        times,
        pc.cast(pa.array(jr.ktime[jr.starts[:-1]], pa.int64()), pa.string()),
    ])
    # Ten pieces per journey (header: 9, closing: 1) and three per hop.
    H = _HEADER_PIECES
    journeys = np.arange(count)
    line_starts = (H + 1) * np.arange(count + 1) + 3 * jr.starts
    idx = np.empty(line_starts[-1], np.int64)
    at = line_starts[:-1]
    idx[at] = 0
    idx[at + 1] = pid_at + journeys
    idx[at + 2] = 1
    idx[at + 3] = flow_at + journeys
    idx[at + 4] = 2
    idx[at + 5] = time_at + journeys
    idx[at + 6] = 3
    idx[at + 7] = ktime_at + journeys
    idx[at + 8] = rest_at + rest_idx
    hop = (H + 1) * np.repeat(journeys, np.diff(jr.starts)) + H + 3 * np.arange(n)
    idx[hop] = head_at + head_idx
    idx[hop + 1] = pair_at + pair_idx
    idx[hop + 2] = dt_at + np.arange(n)
    idx[line_starts[1:] - 1] = close_at + jr.container_id.codes[jr.starts[1:] - 1]
    return pool.take(pa.array(idx)), line_starts


def _hop_heads(jr: JourneyRows) -> tuple[list[str], np.ndarray]:
    """Per hop: the previous hop's end (none on a journey's first hop) and
    its own text up to "src": , as distinct texts and each hop's index."""
    n = len(jr.rows)
    # hook .. container: one formatted prefix per distinct combination.
    ifn = jr.ifname
    ku, kidx = _factorize(
        _mixed_radix(
            [(jr.hook.codes, None), (jr.stage.codes, len(jr.stage.values)),
             (jr.container.codes, len(jr.container.values)), (ifn.codes, len(ifn.values))]
        )
    )
    nu, nidx = _factorize(jr.netns)
    hu, hidx = _factorize(kidx * len(nu) + nidx)
    n_if, n_c, n_st = len(ifn.values), len(jr.container.values), len(jr.stage.values)
    heads = []
    for h in hu.tolist():
        k, ns = divmod(h, len(nu))
        k, i = divmod(int(ku[k]), n_if)
        k, c = divmod(k, n_c)
        hk, st = divmod(k, n_st)
        heads.append(_head_text(jr.hook.values[hk], jr.stage.values[st], ifn.values[i], int(nu[ns]), jr.container.values[c]))
    # What closes the previous hop: nothing on a journey's first hop.
    cid_codes = jr.container_id.codes
    ends_sep = [_end_text(v) + ", " for v in jr.container_id.values] + [""]
    prev_end = np.empty(n, np.int64)
    prev_end[1:] = cid_codes[:-1]
    prev_end[jr.starts[:-1]] = len(ends_sep) - 1
    # (previous end, head) has few distinct values: formatted once each.
    eu, eidx = _factorize(prev_end * len(hu) + hidx)
    e_end, e_head = np.divmod(eu, len(hu))
    return [ends_sep[e] + heads[h] for e, h in zip(e_end.tolist(), e_head.tolist())], eidx


def _hop_addresses(jr: JourneyRows) -> tuple[list[str], np.ndarray]:
    """Per hop 'src, "dst": dst, "dt_ns": ', as distinct texts (once per
    distinct endpoint, then per distinct pair) and each hop's index."""
    su, sidx = _factorize(_endpoint_key(jr.src))
    du, didx = _factorize(_endpoint_key(jr.dst))
    pu, pidx = _factorize(sidx * len(du) + didx)
    s_text = [_endpoint_json(k, jr.src_ip) for k in su.tolist()]
    d_text = [_endpoint_json(k, jr.dst_ip) for k in du.tolist()]
    nd = len(du)
    return [f'{s_text[p // nd]}, "dst": {d_text[p % nd]}, "dt_ns": ' for p in pu.tolist()], pidx


def _mixed_radix(parts: list[tuple[np.ndarray, int | None]]) -> np.ndarray:
    """One int64 key from several small codes (the radix of the first is unused)."""
    key = parts[0][0].astype(np.int64)
    for codes, radix in parts[1:]:
        key = key * radix + codes
    return key


def _endpoint_key(ep: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    ip, port, icmp = ep
    return (ip << 17) | (port << 1) | icmp


def _endpoint_json(key: int, ips: list) -> str:
    return _endpoint_text(ips[key >> 17], (key >> 1) & 0xFFFF, key & 1)


# Formatted texts are cached across batches: the same few hooks, interfaces
# and endpoints recur in every poll.
@lru_cache(maxsize=1 << 16)
def _endpoint_text(ip: str | None, port: int, icmp: int) -> str:
    if ip is None:
        return "null"
    return _dumps(ip if icmp else endpoint(ip, port))


@lru_cache(maxsize=1 << 12)
def _head_text(hook, stage, ifname, netns: int, container) -> str:
    return (
        f'{{"hook": {_dumps(hook)}, "nat_stage": {_dumps(stage)}, "ifname": {_dumps(ifname)}, '
        f'"netns": {netns}, "container": {_dumps(container)}, "src": '
    )


@lru_cache(maxsize=1 << 12)
def _header_text(direction, protocol, flags: int, container, verdict: str, reason) -> str:
    return (
        f', "direction": {_dumps(direction)}, "protocol": {_dumps(protocol)}, '
        f'"tcp_flags": {_dumps(None if flags == 256 else _flags_text(flags))}, '
        f'"container": {_dumps(container)}, "verdict": {_dumps(verdict)}, '
        f'"drop_reason": {_dumps(reason)}, "hops": ['
    )


@lru_cache(maxsize=1 << 12)
def _end_text(container_id) -> str:
    return f', "container_id": {_dumps(container_id)}}}'


def _header_rests(jr: JourneyRows) -> tuple[list[str], np.ndarray]:
    """Per journey its header after the flow id (direction .. '"hops": ['),
    as distinct texts and each journey's index."""
    tcp = _lut(jr.protocol.values, lambda v: v == "tcp")[jr.protocol.codes]
    flags = np.where(tcp, jr.tcp_flags.astype(np.int64), 256)  # 256: not TCP -> null
    key = _mixed_radix(
        [(jr.direction.astype(np.int64), None), (jr.protocol.codes, len(jr.protocol.values)), (flags, 257),
         (jr.container_of, len(jr.container.values)), (jr.verdict.astype(np.int64), 3),
         (jr.reason, len(jr.drop_reason.values))]
    )
    ku, kidx = _factorize(key)
    texts = []
    for k in ku.tolist():
        k, r = divmod(k, len(jr.drop_reason.values))
        k, v = divmod(k, 3)
        k, c = divmod(k, len(jr.container.values))
        k, f = divmod(k, 257)
        d, p = divmod(k, len(jr.protocol.values))
        texts.append(
            _header_text(_DIRECTION_NAMES[d], jr.protocol.values[p], f, jr.container.values[c], VERDICTS[v], jr.drop_reason.values[r])
        )
    return texts, kidx


def journey_count(table: pa.Table) -> int:
    """Number of journeys (packets) in a pop_complete_table table."""
    pid = _numpy(_normalise(table)["packet_id"])
    return int(len(np.unique(pid)))


def first_journeys(table: pa.Table, n: int) -> pa.Table:
    """The rows of the first ``n`` journeys (by first sighting, as
    journey_json_lines orders them): for --count."""
    jr = journey_rows(table)
    if n >= len(jr):
        return table
    keep = np.zeros(jr.work.num_rows, bool)
    keep[np.isin(_numpy(jr.work["packet_id"]), jr.packet_id[:n])] = True
    return jr.work.filter(pa.array(keep))


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
            jr.ktime.tolist(),
            jr.dt.tolist(),
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
