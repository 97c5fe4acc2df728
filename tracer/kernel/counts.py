"""The kernel's own counts, read from the program's per-CPU maps: records
each sensor emitted and lost (``counters``), and journeys by why they were
emitted (``journey_ends``, whose slot 0 counts the journeys opened, and whose
slots after the ends count what the kernel left out rather than write a wrong
journey: events.JOURNEY_FAULTS)."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

import numpy as np

from tracer import events
from tracer.kernel import bpf_syscall as sc
from tracer.kernel.cpus import possible_cpus

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """The kernel's counts of the records it emitted and lost, per sensor."""

    emitted: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    record: str = "journey"  # what a record is: "journey", or "event" (per-sighting build, latency mode)
    journey_ends: dict[str, int] = field(default_factory=dict)  # journeys by why they were emitted
    journey_faults: dict[str, int] = field(default_factory=dict)  # left out rather than written wrong (JOURNEY_FAULTS)
    before_start: int = 0  # packets first seen before every sensor was attached: left out

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())


def sensor_counts(bpf) -> tuple[dict[str, int], dict[str, int]]:
    """(emitted, lost) records per sensor (events.SENSORS), summed over CPUs."""
    values = per_cpu_sums(bpf["counters"], 2 * len(events.SENSORS))
    emitted = {name: values[2 * i] for i, name in enumerate(events.SENSORS)}
    lost = {name: values[2 * i + 1] for i, name in enumerate(events.SENSORS)}
    return emitted, lost


# What a kernel without a batch lookup for the map answers: EINVAL (no
# BPF_MAP_LOOKUP_BATCH command before 5.6, or a call it cannot take),
# ENOTSUPP (524, the kernel's own: a map type without batch ops) or
# EOPNOTSUPP. Asking again will not change it; any other error (ENOMEM,
# EINTR, EAGAIN, ...) may pass, so it costs that one read its batch only.
NO_BATCH_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, 524})
# Other failures this many reads running (EPERM on a map fd without read
# access, say, which no retry mends) switch the table for good too: not a
# failed bpf() call on every pass for the rest of the run.
BATCH_FAILURES_IN_A_ROW = 8


def per_cpu_sums(table, entries: int) -> list[int]:
    """The first ``entries`` values of a per-CPU u64 array map, each summed
    over CPUs: one batch lookup (read every pass of a live run: a lookup
    per entry was ~20 bpf() calls a pass), or an entry at a time where
    the kernel has no batch lookup for it. The table object remembers a
    batch lookup the kernel does not support (NO_BATCH_ERRNOS; BCC's module
    and ours hand out one table object a map), so it is not tried again on
    every sweep and status line; another failure reads entry by entry this
    once and is counted on the table (``batch_lookup_failures``, in a row:
    BATCH_FAILURES_IN_A_ROW of them switch it for good as well)."""
    fd = getattr(table, "map_fd", None)
    if fd is not None and not getattr(table, "no_batch_lookup", False):
        try:
            values = sc.per_cpu_u64_array(fd, entries, possible_cpus())
        except OSError as exc:
            name = getattr(table, "name", fd)
            failures = getattr(table, "batch_lookup_failures", 0) + 1
            if exc.errno in NO_BATCH_ERRNOS or failures >= BATCH_FAILURES_IN_A_ROW:
                log.debug("map %s: no batch lookup (%s): read entry by entry", name, exc)
                _remember(table, "no_batch_lookup", True)
            else:
                log.debug("map %s: batch lookup failed (%s): this read entry by entry", name, exc)
                _remember(table, "batch_lookup_failures", failures)
        else:
            if getattr(table, "batch_lookup_failures", 0):
                _remember(table, "batch_lookup_failures", 0)  # counted in a row
            return values
    return [int(sum(table[table.Key(i)])) for i in range(entries)]


def _remember(table, name: str, value) -> None:
    try:
        setattr(table, name, value)
    except AttributeError:  # a table that takes no attribute: tried again next read
        pass


def journey_counts(bpf) -> np.ndarray:
    """journey_ends summed over CPUs ([0]: journeys opened; then the ends,
    then the faults)."""
    return np.array(per_cpu_sums(bpf["journey_ends"], events.N_JOURNEY_COUNTS), np.int64)


def journey_ends(counts: np.ndarray) -> dict[str, int]:
    """Journeys the kernel emitted, by why (events.JOURNEY_ENDS)."""
    return {name: int(counts[i]) for i, name in enumerate(events.JOURNEY_ENDS) if name and len(counts) and counts[i]}


def journey_faults(counts: np.ndarray) -> dict[str, int]:
    """What the kernel left out rather than write a wrong journey, by why
    (events.JOURNEY_FAULTS); only those that happened."""
    base = len(events.JOURNEY_ENDS)
    return {name: int(counts[base + i]) for i, name in enumerate(events.JOURNEY_FAULTS)
            if len(counts) > base + i and counts[base + i]}


def open_journeys(counts: np.ndarray) -> int:
    """Journeys the kernel has opened and not yet emitted (bpf/journey.h
    counts openings in journey_ends[0], records by end after it; a record
    the ring buffer had no room for counts as emitted: it is not open)."""
    if not len(counts):
        return 0
    return int(counts[0] - counts[1:len(events.JOURNEY_ENDS)].sum())
