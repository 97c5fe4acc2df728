"""What a live run hands its outputs: the one interface between the run loop
(tracer/live.py) and whatever consumes a run: the journeys shown live (text
or JSON, tracer/live_output.py), the capture (tracer/capture/recorder.py),
the latency intervals shown live.

A sink is told once what the run is (``RunInfo``), gets one ``Batch`` a
pass of the loop, container start/die events as Docker reports them, and
the run's end (``RunEnd``). It never sees the session: what it may know of
the run is in these records, so a sink can be driven by a test without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

if TYPE_CHECKING:  # types only: a sink is handed these, it imports none of their modules at run time
    import threading

    import numpy as np
    import pyarrow as pa

    from tracer.decode import DecodeContext
    from tracer.inventory import Container
    from tracer.journey_rows import JourneyRows
    from tracer.kernel.counts import Counters
    from tracer.proxies import ProxyLink
    from tracer.rule_trace import RuleHit


@dataclass(frozen=True)
class RunInfo:
    """What a sink may know of a run, fixed once the sensors are attached."""

    describe: str  # what is traced, for the UI and a capture's metadata
    interfaces: int  # how many interfaces the sensors are attached to
    # What the kernel's records are: its journey records ("journey"), one
    # decoded row per sighting ("event", the per-sighting build), or none
    # but histograms ("histogram", latency mode).
    records: str
    boot_offset_ns: int  # CLOCK_MONOTONIC -> wall clock
    containers: Callable[[], Iterable[Container]] = tuple  # Docker's containers now
    sample: int = 1
    rules: bool = False  # --rules: rule hits come with the records
    hooks: str = "all"  # --hooks: the hook profile (tracer/sensors/hook_profile.py)
    hooks_kept: tuple[str, ...] = ()  # hops the profile leaves out attached all the same (lean with --iface)
    # Names the hops of journey records (decode.DecodeContext), read under
    # ``places_lock`` (the Docker thread rebuilds the places meanwhile).
    places: DecodeContext | None = None
    places_lock: threading.Lock | None = None
    now_ktime: Callable[[], int] = lambda: 0  # the kernel's clock now (CLOCK_MONOTONIC ns)


@dataclass
class Interval:
    """One latency-mode report (tracer/latency.py report()), with buckets."""

    number: int
    start_ktime_ns: int
    end_ktime_ns: int
    report: dict
    final: bool = False  # the part of an interval before a stop: the capture's only


@dataclass(frozen=True)
class Status:
    """How the run is going, given with a batch about once a second."""

    sightings: int  # hop sightings the kernel reported so far
    elapsed_s: float  # since the sensors were attached
    lost: int  # records the kernel could not hand over so far


@dataclass
class Batch:
    """What one pass of the run loop brought, in the order a capture keeps it:
    ``arrived``, ``rules``, ``proxy_links``, then ``complete``."""

    # Records stored as they come: every record in `record`; in `trace`,
    # continuations of packets already shown. A pyarrow Table of sighting
    # rows in the per-sighting build.
    arrived: np.ndarray | pa.Table | None = None
    rules: Sequence[tuple[int, RuleHit]] = ()  # (packet_id, hit) pairs joined this pass
    proxy_links: Sequence[ProxyLink] = ()  # new docker-proxy links
    complete: np.ndarray | None = None  # journey records of packets complete this pass (the ones shown)
    journeys: JourneyRows | pa.Table | None = None  # what to show (pa.Table: the per-sighting build's rows)
    interval: Interval | None = None  # latency mode
    status: Status | None = None  # about once a second: for a progress or status line
    final: bool = False  # the last batch: what was left when the sensors were detached


@dataclass
class RunEnd:
    """How a run ended: the kernel's counters once everything was drained."""

    counters: Counters  # the kernel's counters (kernel/counts.py)
    rules: dict = field(default_factory=dict)  # --rules: joined/unmatched counts and the tracer's stats


class Sink(Protocol):
    def on_start(self, run: RunInfo) -> None: ...

    def on_batch(self, batch: Batch) -> bool:
        """Take one pass's batch; True once this sink wants no more (its
        count reached, its reader gone)."""
        ...

    def on_containers(self, action: str, container: Container, ktime_ns: int) -> None:
        """A container started or died (from the Docker events thread)."""
        ...

    def finish(self, end: RunEnd) -> dict:
        """The run ended: say so, return what the run reports (its stats)."""
        ...

    def close(self) -> None:
        """Release what the sink holds (after an error, too; idempotent)."""
        ...
