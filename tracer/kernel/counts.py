"""The kernel's own counts, read from the program's per-CPU maps: records
each sensor emitted and lost (``counters``), and journeys by why they were
emitted (``journey_ends``, whose slot 0 counts the journeys opened)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracer import events


@dataclass
class Counters:
    """The kernel's counts of the records it emitted and lost, per sensor."""

    emitted: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    record: str = "journey"  # what a record is: "journey", or "event" (per-sighting build, latency mode)
    journey_ends: dict[str, int] = field(default_factory=dict)  # journeys by why they were emitted
    before_start: int = 0  # packets first seen before every sensor was attached: left out

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())


def sensor_counts(bpf) -> tuple[dict[str, int], dict[str, int]]:
    """(emitted, lost) records per sensor (events.SENSORS), summed over CPUs."""
    table = bpf["counters"]
    emitted, lost = {}, {}
    for i, name in enumerate(events.SENSORS):
        emitted[name] = int(sum(table[table.Key(2 * i)]))
        lost[name] = int(sum(table[table.Key(2 * i + 1)]))
    return emitted, lost


def journey_counts(bpf) -> np.ndarray:
    """journey_ends summed over CPUs ([0]: journeys opened)."""
    table = bpf["journey_ends"]
    return np.array([sum(table[table.Key(i)]) for i in range(len(events.JOURNEY_ENDS))], np.int64)


def journey_ends(counts: np.ndarray) -> dict[str, int]:
    """Journeys the kernel emitted, by why (events.JOURNEY_ENDS)."""
    return {name: int(counts[i]) for i, name in enumerate(events.JOURNEY_ENDS) if name and len(counts) and counts[i]}


def open_journeys(counts: np.ndarray) -> int:
    """Journeys the kernel has opened and not emitted (bpf/journey.h
    counts openings in journey_ends[0])."""
    return int(counts[0] - counts[1:].sum()) if len(counts) else 0
