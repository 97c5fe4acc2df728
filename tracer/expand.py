"""The kernel's journey records -> sighting rows (events.RAW_DTYPE).

The kernel emits one ``struct journey`` per packet (bpf/journey.h). Everything
downstream (decode, captures, journeys, stats, pcapng, report) reads sighting
rows, one per hop, so a record is laid out as its hops here: on whole arrays,
no Python per record or per hop. What a record holds once (the fingerprint,
flow, direction, CPU) is repeated on each of its rows; the addresses come
from the tuple each hop points at.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tracer import events, record_words
from tracer.last_hop import last_hop_ktime

_HOOK_DROP = events.HOOKS.index("drop")
_HOOK_FORWARD = events.HOOKS.index("nf_forward")
_OUT_IS_IFINDEX = np.zeros(16, bool)  # hooks whose sighting device is the out-device
_OUT_IS_IFINDEX[[events.HOOKS.index("nf_postrouting"), events.HOOKS.index("nf_output")]] = True
_IS_NF = np.zeros(16, bool)
_IS_NF[[i for i, h in enumerate(events.HOOKS) if h and h.startswith("nf_")]] = True
_NEW_PACKET_BIT = 0x80  # HOP_NEW_PACKET_BIT in bpf/journey.h
_COMPLETE = np.zeros(256, bool)
_COMPLETE[list(events.COMPLETE_ENDS)] = True


class Sightings:
    """Sighting rows as one contiguous array per field of events.RAW_DTYPE:
    what decode() reads (``rows[name]``, ``len(rows)``), without packing them
    into the 88-byte ring-buffer struct first."""

    def __init__(self, n: int, columns: dict[str, np.ndarray]) -> None:
        self.n = n
        self.columns = columns

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


def expand(journeys: np.ndarray) -> Sightings:
    """Sighting rows of journey records, record by record, hops in order."""
    if not (journeys["n_hops"] > 0).all():  # a record copied mid-restart (bpf/journey.h): nothing to show
        journeys = record_words.take(journeys, journeys["n_hops"] > 0)
    n_hops = np.minimum(journeys["n_hops"].astype(np.int64), events.MAX_HOPS)
    if int(n_hops.sum()) == 0:
        return empty()
    rec = np.repeat(np.arange(len(journeys)), n_hops)
    hops = record_words.hops(journeys, n_hops)  # plain words, not struct fields: ~8x cheaper
    t_idx = np.minimum(hops.tuple, events.MAX_TUPLES - 1)
    addresses = record_words.tuples_at(journeys, rec, t_idx)
    return lay_out(n_hops, rec, hops.code, hops.dt_ns, hops.ifindex, hops.ttl, addresses,
                   lambda name: journeys[name])


def empty() -> Sightings:
    raw = events.empty_raw()
    return Sightings(0, {name: raw[name] for name in events.RAW_DTYPE.names})


def lay_out(n_hops: np.ndarray, rec: np.ndarray, code: np.ndarray, dt_ns: np.ndarray, ifindex: np.ndarray,
            ttl: np.ndarray, addresses: tuple, record: Callable[[str], np.ndarray]) -> Sightings:
    """Sighting rows of records given as per-hop arrays (record by record,
    hops in order; ``rec`` is each hop's record) and ``record(name)``, a
    journey field of every record (events.JOURNEY_FIELDS names, numbers):
    the one layout of a journey as sightings, for live records (expand) and
    stored journey rows (tracer/journey_capture.py) alike."""
    total = len(rec)
    first = np.concatenate(([0], np.cumsum(n_hops)[:-1]))
    j = _Gather(record, rec)  # a record's field, once per row
    hook = code & 0x0F
    in_ct = (code & events.HOP_IN_CT_BIT) != 0
    ktime = j["first_ktime"].astype(np.uint64) + dt_ns.astype(np.uint64)
    ends = first[n_hops > 0] + n_hops[n_hops > 0] - 1
    # the last hop: last_ktime only where dt_ns saturated (a late drop); it may name a hop not carried
    ktime[ends] = last_hop_ktime(record("first_ktime")[n_hops > 0].astype(np.uint64), dt_ns[ends],
                                 record("last_ktime")[n_hops > 0])
    is_drop = hook == _HOOK_DROP
    flags = (np.where(in_ct, events.FLAG_IN_CONTAINER_NS, 0)
             | np.where((code & _NEW_PACKET_BIT) != 0, events.FLAG_NEW_PACKET, 0)
             | np.where(_COMPLETE[j["end"]], 0, events.FLAG_INCOMPLETE)).astype(np.uint8)
    src_ip, dst_ip, src_port, dst_port = addresses
    return Sightings(total, {
        "ktime_ns": ktime,
        "skb": np.where(_IS_NF[hook] | is_drop, j["skb"], 0),
        "packet_id": j["packet_id"],
        "flow_id": j["flow_id"],
        "drop_reason": np.where(is_drop, j["drop_reason"], 0),
        "netns": np.where(is_drop, j["drop_netns"], 0),  # 0: the attachment's (host) netns
        "ifindex": ifindex,
        "out_ifindex": np.where(hook == _HOOK_FORWARD, j["fwd_out_ifindex"], np.where(_OUT_IS_IFINDEX[hook], ifindex, 0)),
        "src_ip": src_ip,
        "dst_ip": dst_ip,
        "src_port": src_port,
        "dst_port": dst_port,
        "tcp_seq": j["tcp_seq"],
        "tcp_ack": j["tcp_ack"],
        "ip_id": j["ip_id"],
        "length": j["length"],
        "cpu": j["cpu"],
        "hook": hook,
        "nat_stage": (code >> events.HOP_STAGE_SHIFT) & 0x03,
        "direction": j["direction"],
        "protocol": j["protocol"],
        "ttl": ttl,
        "tcp_flags": j["tcp_flags"],
        "tcp_doff": j["tcp_doff"],
        "flags": flags,
    })


class _Gather:
    """``g[name]`` is the record field repeated for each row: field by field
    (a whole-record gather would copy every record's 16 hops per row)."""

    def __init__(self, record: Callable[[str], np.ndarray], rec: np.ndarray) -> None:
        self.record, self.rec = record, rec

    def __getitem__(self, name: str) -> np.ndarray:
        return self.record(name)[self.rec]
