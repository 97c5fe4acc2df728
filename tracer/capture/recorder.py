"""The capture as a sink of a live run (tracer/sinks.py): ``Recorder``."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import __version__, events
from tracer.capture import STDIN, CaptureWriteError
from tracer.arrow_columns import numeric_array
from tracer.capture.writer import CaptureWriter
from tracer.output import say
from tracer.render import capture_written, histograms_written, recording_progress
from tracer.sinks import Batch, RunEnd, RunInfo


def container_info(container: Any) -> dict[str, Any]:
    """The facts about a container a capture keeps (inventory.Container)."""
    return {
        "id": container.id,
        "name": container.name,
        "ips": list(container.ips),
        "published": [
            {"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port, "proto": p.proto}
            for p in container.published
        ],
        "netns": container.netns_inode,
        "host_veth": container.host_veth,
    }


def command_line(argv: list[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    return shlex.join(["tracer", *argv[1:]])


# Flow ids gathered before their distinct values are taken (a few passes'
# ids at the lab's rates; views of the capture's flow_id columns, which
# they keep alive until then: 8 bytes a row).
FLOWS_AT_ONCE = 1 << 15


class Recorder:
    """Records a live run into a capture: a sink of the run loop
    (tracer/sinks.py) that writes every batch's records, rule hits, proxy
    links and latency intervals as they come; ``finish`` appends the
    statistics row.

    Container start/stop arrives on the Docker events thread; it is queued
    and written from the loop's thread, because the writer is not thread-safe.
    """

    keeps_buckets = True  # latency mode: each interval's histogram buckets, not just its percentiles

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        rotate_size: int | None = None,
        rotate_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rotate_files: int | None = None,
        count: int | None = None,
        progress: bool = False,
    ) -> None:
        self.path = Path(path)
        self.rotate_size = rotate_size
        self.rotate_seconds = rotate_seconds
        self.rotate_files = rotate_files
        self.clock = clock
        self.count = count  # `record -c N`: enough once N packets are in the capture
        self.progress = progress  # a progress line on stderr every status pass (`record` without --quiet)
        self.writer: CaptureWriter | None = None
        self.packets = 0
        self.histogram_rows = 0
        self.proxy_rows = 0
        self._flows: set[int] = set()
        self._flows_pending: list[np.ndarray] = []  # flow ids not yet in _flows (FLOWS_AT_ONCE)
        self._flows_pending_rows = 0
        self._run: RunInfo | None = None
        self._queue: list[tuple[str, Any, int]] = []
        self._lock = threading.Lock()
        self._started = 0.0

    def check(self) -> None:
        """Fail before any kernel work if the file cannot be created there."""
        if str(self.path) == STDIN:
            if self.rotate_size is not None or self.rotate_seconds is not None or self.rotate_files is not None:
                raise CaptureWriteError("-w -: a stream on standard output cannot be rotated")
            if sys.stdout.isatty():
                raise CaptureWriteError("-w -: standard output is a terminal; pipe it (tracer record -w - | tracer show -)")
            return
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise CaptureWriteError(f"cannot write {self.path}: no directory {parent}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CaptureWriteError(f"cannot write {self.path}: {parent} is not writable")

    # ---- the sink (tracer/sinks.py) -----------------------------------------
    def on_start(self, run: RunInfo) -> None:
        self._run = run
        self._started = self.clock()
        # The kernel's journey records are stored as they come (schema 2);
        # the per-sighting build and latency mode write sighting rows.
        self.writer = CaptureWriter(
            self.path, self._metadata, rotate_size=self.rotate_size, rotate_seconds=self.rotate_seconds, clock=self.clock,
            journeys=run.records == "journey", max_files=self.rotate_files,
        )

    def on_batch(self, batch: Batch) -> bool:
        """Everything of one pass, in the order the capture keeps it."""
        if isinstance(batch.arrived, pa.Table):
            self.add(batch.arrived)
        elif batch.arrived is not None:
            self.add_records(batch.arrived)
        self.add_rules(batch.rules)
        self.add_proxy_links(batch.proxy_links)
        if batch.interval is not None:
            i = batch.interval
            self.add_histogram(i.end_ktime_ns, histogram_info(i.number, i.report, i.start_ktime_ns, i.end_ktime_ns))
        if not batch.final:
            self.tick()
        if batch.complete is not None:
            self.add_records(batch.complete)
        if self.progress and batch.status is not None:
            say("tracer: " + recording_progress(self.writer.event_rows, self.writer.bytes_written, batch.status.lost,
                                                self.clock() - self._started))
        return self.count is not None and self.packets >= self.count

    def on_containers(self, action: str, container: Any, ktime_ns: int) -> None:
        with self._lock:
            self._queue.append((action, container, ktime_ns))

    def _metadata(self) -> dict[str, str]:
        run = self._run
        return {
            "host": socket.gethostname(),
            "kernel": os.uname().release,
            "version": __version__,
            "command": command_line(),
            "filter": run.describe,
            "start_time": _iso_now(),
            "ktime_offset_ns": str(run.boot_offset_ns),
            "containers": json.dumps([container_info(c) for c in run.containers()]),
            "sample": str(run.sample),
            "rules": "1" if run.rules else "0",
            "hooks": run.hooks,
            "hooks_kept": ",".join(run.hooks_kept),
        }

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.writer.add_events(table)
        flags = table.column("flags").to_numpy()
        self.packets += int(np.count_nonzero(flags & events.FLAG_NEW_PACKET))
        self._note_flows(table.column("flow_id").to_numpy())

    def add_records(self, records: np.ndarray) -> None:
        """The kernel's journey records, stored as they are (``add`` takes
        decoded sighting rows)."""
        if not len(records):
            return
        # Under the run's lock: the places may be rebuilt meanwhile (Docker thread).
        stored = self.writer.add_journeys(records, self._run.places, self._run.places_lock)
        # counted on the laid-out columns the writer just wrote, not on the records
        self.packets += stored.new_packets
        self._note_flows(stored.flow_ids)

    def _note_flows(self, flow_ids: np.ndarray) -> None:
        """Flow ids of rows written, counted among the run's flows a few
        passes' at once (FLOWS_AT_ONCE)."""
        self._flows_pending.append(flow_ids)
        self._flows_pending_rows += len(flow_ids)
        if self._flows_pending_rows >= FLOWS_AT_ONCE:
            self._add_flows()

    def _add_flows(self) -> None:
        """The distinct flows (opaque ids, 0: none; nf_conn addresses, so
        bounded by conntrack's table) among the pending flow ids, into the
        run's set. Arrow's hash kernel (np.unique took ~0.35 ms for a pass of
        6,500 records: a sort), over several passes' ids at once: a call's
        own cost, cold in a live run, was most of it."""
        if self._flows_pending:
            flows = pc.unique(numeric_array(np.concatenate(self._flows_pending))).to_numpy()
            self._flows.update(flows[flows != 0].tolist())
            self._flows_pending, self._flows_pending_rows = [], 0

    @property
    def flows(self) -> int:
        self._add_flows()
        return len(self._flows)

    def tick(self) -> None:
        self._write_container_rows()
        self.writer.tick()

    def _write_container_rows(self) -> None:
        with self._lock:
            queued, self._queue = self._queue, []
        for action, c, ktime in queued:
            self.writer.add_row(
                "container", ktime, {"action": action, **container_info(c)},
                container_id=c.id, container_name=c.name, netns=c.netns_inode,
            )

    def add_rules(self, pairs) -> None:
        """Rule hits joined to packets ((packet_id, RuleHit) pairs,
        tracer/rule_join.py) as kind='rule' rows."""
        if pairs:
            self.writer.add_rule_rows([(hit.ktime, pid, hit.hook, hit.rule) for pid, hit in pairs])

    def add_proxy_links(self, links) -> None:
        """docker-proxy links (tracer/proxies.py ProxyLink) as kind='proxy'
        rows, written as the kernel makes them: before the first relayed
        bytes' journeys, so `show` has them when it gets there."""
        if not links:
            return
        ktime = self._run.now_ktime()
        for link in links:
            self.writer.add_row("proxy", ktime, link.to_record())
        self.proxy_rows += len(links)

    def add_histogram(self, end_ktime_ns: int, info: Mapping[str, Any]) -> None:
        """One latency-mode interval (`tracer latency -w`) as a kind='histogram'
        row stamped with the interval's end; see docs/capture-format.md."""
        self.writer.add_row("histogram", end_ktime_ns, info)
        self.histogram_rows += 1

    def finish(self, end: RunEnd) -> dict[str, Any]:
        """Append the statistics row, close the stream and say what was
        written; returns the stats."""
        counters = end.counters
        self._write_container_rows()
        ktime = self._run.now_ktime()
        stats = {
            # The kernel's records per emitting sensor: journeys (one per
            # packet, or per part of one), or events in the per-sighting build.
            "events": dict(counters.emitted),
            "lost": dict(counters.lost),
            "record": getattr(counters, "record", "event"),
            "journey_ends": dict(getattr(counters, "journey_ends", {})),
            "journey_faults": dict(getattr(counters, "journey_faults", {})),
            "event_rows": self.writer.event_rows,  # sightings
            "journey_rows": self.writer.journey_rows,
            **({"rule_rows": self.writer.rule_rows} if self.writer.rule_rows else {}),
            **({"proxy_rows": self.proxy_rows} if self.proxy_rows else {}),
            "packets": self.packets,
            "flows": self.flows,
            "duration_s": round(self.clock() - self._started, 3),
        }
        if self.histogram_rows:
            stats["histogram_rows"] = self.histogram_rows
        if getattr(counters, "before_start", 0):
            stats["before_start"] = counters.before_start
        self.writer.add_row("stats", ktime, stats)
        self.close()
        if self._run.records == "histogram":
            say(histograms_written(self.histogram_rows, self.writer.bytes_written, self.writer.paths))
        else:
            say(capture_written(self.writer.event_rows, self.writer.bytes_written, self.writer.paths,
                                sum(counters.lost.values())))
        return stats

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def histogram_info(number: int, rep: dict, start_ktime_ns: int, end_ktime_ns: int) -> dict:
    """The info JSON of one kind='histogram' capture row (docs/capture-format.md)."""
    return {"interval": number, "start_ktime_ns": start_ktime_ns, "end_ktime_ns": end_ktime_ns, **rep}


def _iso_now() -> str:
    """Now, ISO 8601 UTC to the nanosecond, from one clock read (seconds and
    nanoseconds read apart could straddle a second: a part opened later
    would read as earlier)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"
