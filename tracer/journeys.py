"""Events -> packet journeys.

The kernel already gives every sighting of one packet the same ``packet_id``,
so building a journey is a group-by, not event-by-event matching: sort a batch
by (packet_id, ktime_ns), cut it where packet_id changes, and fill what only
some sightings know (the conntrack entry ``flow_id`` and ``direction`` are read
at netfilter hooks, not at tc) from the packet's other rows. All of that is
done on whole columns; Python only touches each hop once to build its ``Hop``.

``build_journeys`` works on a complete table (a capture replay);
tracer/journey_assembler.py's ``JourneyAssembler`` does the same on a live stream,
holding back packets that may still be moving until they have been quiet for
a while, and computes journeys column-wise; tracer/journey_json.py writes
them as JSON lines.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.events import CONTAINER, EXTERNAL, FLAG_IN_CONTAINER_NS, tcp_flags_text
from tracer.ids import format_id
from tracer.untimed import in_place, times_or_none, timed
from tracer.wallclock import rfc3339

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
    ktime_ns: int | None  # None: the row has no ktime_ns (a damaged capture's)
    dt_ns: int | None  # since the packet's first hop; None where either has no ktime_ns
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
    def first_ktime(self) -> int | None:
        """None: the packet has no row with a ktime_ns (its untimed rows sort last)."""
        return self.hops[0].ktime_ns

    @property
    def last_ktime(self) -> int | None:
        return max((h.ktime_ns for h in self.hops if h.ktime_ns is not None), default=None)

    @property
    def to_container(self) -> str | None:
        """The container the packet ends in, where that is not ``container``
        (one container to another, e.g. through a published port of the
        host); None otherwise (journeyrows.journey_containers column-wise)."""
        named = [h for h in self.hops if h.container]
        if not named:
            return None
        a, b = named[0], named[-1]
        other = a.container_id != b.container_id if a.container_id and b.container_id else a.container != b.container
        return b.container if other else None

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
    ("tc_ingress", None, frozenset({CONTAINER}), "arrived in the container's netns"),
    ("tc_egress", None, frozenset({EXTERNAL}), "left the host toward the outside"),
    # INPUT 'before' is not the end: replies of DNATed connections get their
    # source translated back at INPUT (nat priority 100), after which comes 'after'.
    ("nf_input", frozenset({"after", None}), None, "delivered to the host itself"),
)


def is_terminal(hop: Hop) -> bool:
    return ends_journey(hop.hook, hop.nat_stage, hop.if_role)


def ends_journey(hook: str, nat_stage: str | None, if_role: str | None) -> bool:
    """is_terminal from a hop's parts (on columns: once per distinct hop)."""
    return any(
        hook == h and (stages is None or nat_stage in stages) and (roles is None or if_role in roles)
        for h, stages, roles, _ in TERMINAL_SIGHTINGS
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
        ("tcp_seq", pa.uint32()),
        ("tcp_doff", pa.uint8()),
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
    ktimes, dts = times_or_none(ktime, dt, timed(work))  # rows without a ktime_ns: no time, no dt

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
    role[in_ns & (role == None)] = CONTAINER  # noqa: E711
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
            ktimes,
            dts,
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
        if offset[s] is not None and j.first_ktime is not None:
            j.time_ns = j.first_ktime + offset[s]
        journeys.append(j)
    journeys.sort(key=first_sighting)
    return journeys


def timed_pairs(hops: list[Hop]) -> Iterator[tuple[Hop, Hop]]:
    """Each hop and the next, where both have a ktime_ns (a latency between them)."""
    return ((a, b) for a, b in zip(hops, hops[1:]) if a.ktime_ns is not None and b.ktime_ns is not None)


def first_sighting(j: Journey) -> tuple:
    """Journeys' order: by first sighting, ties by packet id; a journey
    without a ktime_ns at all (a damaged capture's) after those with one."""
    return (j.first_ktime is None, j.first_ktime or 0, j.packet_id)


def wall_offsets(work: pa.Table) -> list:
    """Per row, its wall clock (the `time` column) minus its ktime_ns, None
    where the row has no time: a journey's time is its first hop's ktime
    plus its first row's offset (one clock for all rows of a run)."""
    time = pc.cast(work["time"], pa.int64())
    diff = pc.subtract(time, pc.cast(work["ktime_ns"], pa.int64(), safe=False))  # wrapping, as the writers' sum
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
    if work["ktime_ns"].null_count:  # a row without one keeps its written place (tracer/untimed.py)
        pid = _numpy(work["packet_id"])
        key = in_place(pid, _numpy(work["ktime_ns"]).astype(np.int64), timed(work))
        return work.take(pa.array(np.lexsort((key, pid))))
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
