"""The time of a journey record's last hop.

A record's ``last_ktime`` is the packet's latest sighting as the record was
copied, which can be a hop the record does not carry: an appender writes
``last_ktime`` before it publishes its hop (``hops_written``), and a closer
that read the count just before copies the record without that hop but with
its time (bpf/journey.h; the appender counts the hop refused). The record's
own last hop is exactly ``first_ktime + dt_ns``, except where ``dt_ns``
saturated (a hop 4.29 s or more after the first, usually a late drop): there
``last_ktime`` is the only time there is. Every reader of a hop's time takes
it by this one rule (native/journey_rows.c too); what asks when the packet
was last seen (tracer/hold.py, tracer/rule_join.py) reads ``last_ktime``.
"""

from __future__ import annotations

import numpy as np

# A hop's dt_ns when the hop came too late for 32 bits (bpf/journey.h clamps it).
DT_SATURATED = 0xFFFFFFFF


def last_hop_ktime(first_ktime: np.ndarray, last_dt: np.ndarray, last_ktime: np.ndarray) -> np.ndarray:
    """Each record's last hop time (in ``first_ktime``'s dtype), from its
    first time, its last hop's dt_ns and its ``last_ktime``."""
    out = first_ktime + last_dt.astype(first_ktime.dtype)
    saturated = last_dt == DT_SATURATED
    if saturated.any():
        out[saturated] = last_ktime[saturated]
    return out
