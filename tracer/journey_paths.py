"""The report's path pass (tracer/paths.py) straight from journey rows
(capture schema 2), as `tracer stats` reads them (tracer/journey_analysis.py).

``journey_packets`` already has, for the packets it takes, each hop's label,
clock and record in journey order; the path pass needs a few more things per
hop: its addresses and ports (NAT changes and translations), its interface
and container (its place's), and its record's CPU and drop reason. They are
gathered here from the list columns, a few arrays per chunk, instead of
laying every journey row out as sighting rows (decode: addresses as text,
one dictionary column per field) and sorting them back into journeys: that
was two thirds of what `tracer report` cost. The packets journey_packets
hands back (parts, hops out of order, ...) go the sighting way as for
`stats`, so every number is what the sighting path gives
(tests/unit/test_journey_paths.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import addresses, events
from tracer.analysis_rows import _ints
from tracer.journey_analysis import _field, tuple_layout
from tracer.journey_capture import _address_rows
from tracer.paths import PathRows


def path_rows(hops: Any, facts: Any) -> PathRows:
    """PathRows of the packets journey_packets took (``hops``, ``facts``: what it returned)."""
    rows, places = hops.rows, hops.places
    rec = hops.rec
    src_ip, src_ips, src_port, dst_ip, dst_ips, dst_port, at = _hop_endpoints(rows, hops.flat, hops.sel, rec)
    reason_col = rows.column("drop_reason")
    reason_col = reason_col.combine_chunks() if isinstance(reason_col, pa.ChunkedArray) else reason_col
    reasons = reason_col.dictionary.to_pylist() if pa.types.is_dictionary(reason_col.type) else []
    # A place past the registry (place == len(places)) is the unknown place: no interface, no container.
    ifnames = [p.ifname for p in places] + [None]
    containers = [p.container_name for p in places] + [None]
    return PathRows(
        labels=hops.labels, hooks=hops.label_hooks, roles=hops.label_roles, terminal=hops.label_terminal,
        label=hops.label, kt=hops.kt, starts=hops.pstart, direction=facts.direction,
        wall_first=hops.wall[hops.pstart], wall_known=None if hops.clocked is None else hops.clocked[hops.pstart],
        timed=hops.timed,
        src_ip=src_ip, src_ips=src_ips, src_port=src_port, dst_ip=dst_ip, dst_ips=dst_ips, dst_port=dst_port,
        cpu=_ints(rows, "cpu")[rec], reason=hops.reason_codes[rec], reasons=reasons,
        ifname=hops.place, ifnames=ifnames, container=hops.place, containers=containers, tuple_id=at)


def _hop_endpoints(rows: pa.Table, flat: Any, sel: np.ndarray | None, rec: np.ndarray):
    """Each tuple's source and destination as codes into one list of
    address texts (per chunk) and its ports, one more tuple of zeros, and
    each taken hop's tuple among them: the one its ``tuple`` field points
    at among its record's; past them, or none, the zeros (as laid out)."""
    tuples, lengths, tstart = tuple_layout(rows)
    t_idx = _field(flat, "tuple")
    if sel is not None:
        t_idx = t_idx[sel]
    if isinstance(tuples, pa.ChunkedArray):
        tuples = tuples.combine_chunks()
    nt = len(tuples)
    ok = t_idx < np.minimum(lengths, events.MAX_TUPLES)[rec]
    at = np.where(ok, tstart[rec] + t_idx, nt)  # nt: the zero tuple appended below
    zero = np.zeros((1, 16), np.uint8)
    raw = np.concatenate([_address_rows(pc.struct_field(tuples, "saddr")), _address_rows(pc.struct_field(tuples, "daddr")),
                          zero]) if nt else zero
    texts, inverse = addresses.factorize(raw)
    s_code = np.append(inverse[:nt], inverse[-1])
    d_code = np.append(inverse[nt: 2 * nt], inverse[-1])
    ports = []
    for name in ("sport", "dport"):
        p = np.zeros(nt + 1, np.int64)
        if nt:
            col = pc.struct_field(tuples, name)
            p[:nt] = (pc.fill_null(col, 0) if col.null_count else col).to_numpy(zero_copy_only=False)
        ports.append(p)
    return s_code, texts, ports[0], d_code, texts, ports[1], at
