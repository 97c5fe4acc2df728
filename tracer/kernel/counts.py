"""The kernel's own counts, read from the program's per-CPU maps: records
each sensor emitted and lost (``counters``), and journeys by why they were
emitted (``journey_ends``, whose slot 0 counts the journeys opened, and whose
slots after the ends count what the kernel left out rather than write a wrong
journey: events.JOURNEY_FAULTS)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracer import events
from tracer.kernel import bpf_syscall as sc
from tracer.kernel.cpus import possible_cpus

log = logging.getLogger(__name__)

# The maps whose batch lookup failed: map fd -> (the map's kernel id, a weak
# reference to the table object last seen reading it). Kept here, not on the
# table object (BCC's tables and map_table.MapTable alike, and a table made
# anew for the same map); the map id tells a map from a later one that got
# the same fd number after the first was closed, and is asked for only when
# the fd comes through another table object (every read, for a table that
# takes no weak reference).
_NO_BATCH_LOOKUP: dict[int, tuple[int, Callable[[], Any]]] = {}


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


def per_cpu_sums(table, entries: int) -> list[int]:
    """The first ``entries`` values of a per-CPU u64 array map, each summed
    over CPUs: one batch lookup (read every pass of a live run: a lookup
    per entry was ~20 bpf() calls a pass), or an entry at a time where
    the kernel has no batch lookup for it. A map whose batch lookup failed
    once is read entry by entry from then on (remembered by its fd and
    kernel id, whichever table object reads it): no bpf() call more on a
    sweep or status line (one when another table object reads the map)."""
    fd = getattr(table, "map_fd", None)
    if fd is not None and not _batch_failed_before(fd, table):
        try:
            return sc.per_cpu_u64_array(fd, entries, possible_cpus())
        except OSError as exc:
            log.debug("map %s: no batch lookup (%s): read entry by entry", getattr(table, "name", fd), exc)
            map_id = _map_id(fd)
            if map_id is not None:  # (no id: tried again next time)
                _NO_BATCH_LOOKUP[fd] = (map_id, _reader(table))
    return [int(sum(table[table.Key(i)])) for i in range(entries)]


def _batch_failed_before(fd: int, table) -> bool:
    """Whether the map behind ``fd`` is one whose batch lookup failed: no
    bpf() call through the table object that was seen reading it, one
    through another (the same map still?). Threads may read at once (the
    drain and the status line): each step is one dict operation."""
    known = _NO_BATCH_LOOKUP.get(fd)
    if known is None:
        return False
    map_id, reader = known
    if reader() is table:
        return True
    if _map_id(fd) == map_id:
        _NO_BATCH_LOOKUP[fd] = (map_id, _reader(table))
        return True
    _NO_BATCH_LOOKUP.pop(fd, None)  # the fd now holds another map (or none): it is tried afresh
    return False


def _reader(table) -> Callable[[], Any]:
    try:
        return weakref.ref(table)
    except TypeError:  # no weak reference to it: its map id is asked for every read
        return lambda: None


def _map_id(fd: int) -> int | None:
    try:
        return sc.map_info_by_fd(fd).id
    except OSError:
        return None


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
