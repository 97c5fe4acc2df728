"""The kernel's possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-3"
or "0,2-5"): per-CPU map values hold one entry per possible CPU, in id
order, and a program's CPU id (bpf_get_smp_processor_id) indexes arrays
sized to the largest id + 1. The two differ where the list has holes."""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def possible_cpu_ids() -> tuple[int, ...]:
    """The possible CPUs' ids (0 .. os.cpu_count() - 1 where sysfs cannot say)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            ids = parse_cpu_list(f.read())
        if ids:
            return ids
    except (OSError, ValueError):
        pass
    return tuple(range(os.cpu_count() or 1))


def parse_cpu_list(spec: str) -> tuple[int, ...]:
    """The ids of a kernel CPU list ("0-3", "0,2-5")."""
    ids: list[int] = []
    for part in spec.strip().split(","):
        lo, _, hi = part.partition("-")
        ids += range(int(lo), int(hi or lo) + 1)
    return tuple(ids)


def possible_cpus() -> int:
    """How many values a per-CPU map holds per key."""
    return len(possible_cpu_ids())


def cpu_id_bound() -> int:
    """One more than the largest CPU id a program may run on: the size of
    arrays indexed by CPU id."""
    return max(possible_cpu_ids()) + 1
