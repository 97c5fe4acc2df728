"""A tracing session: the wiring of a run's kernel side. It picks the
containers from Docker metadata, compiles and attaches the sensors, drains
the kernel's records and names their places, follows containers and host
interfaces as they come and go (tracer/follow.py, tracer/docker_proxies.py),
and detaches everything on the way out. It formats nothing: what a run shows
or writes is the sinks' (tracer/sinks.py), fed by tracer/live.py."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from tracer.decode import DecodeContext, decode
from tracer.docker_proxies import DockerProxies
from tracer.drain import PAGE_SIZE, BackgroundDrain, RingBufferDrain
from tracer.errors import TracerError, require_root
from tracer.expand import expand
from tracer.follow import Attachments, host_netns_inode, sweep_leftovers
from tracer.inventory import Inventory, NoDocker
from tracer.kernel import counts
from tracer.kernel.counts import Counters
from tracer.kernel.kernel_filter import Filter, write_containers
from tracer.kernel.program import FP_WINDOW_NS, Program
from tracer.places import PlaceBook
from tracer.sensors.drops import DropSensor
from tracer.sensors.hook_profile import traces_bridges
from tracer.sensors.netfilter import NetfilterSensor
from tracer.sensors.proxy import ProxySensor
from tracer.sensors.tc import TcSensor
from tracer.sinks import RunInfo
from tracer.targets import Targets

log = logging.getLogger(__name__)

# Program.build's phases after which it needs no GIL for a while (the
# verifier, clang), and how long the inventory waits for one at most.
BUILD_UNDERWAY = ("from cache", "compiling")
BUILD_HEAD_START_S = 0.5


@dataclass
class TraceOptions:
    targets: Targets = field(default_factory=Targets)  # what to trace
    ifaces: tuple[str, ...] = ()
    tc_mode: str = "auto"
    rules: bool = False  # name the netfilter rules traced packets meet (nf_tables tracing)
    # Link docker-proxy's two connections (bpf/proxy.c): `trace` shows the
    # links, `trace -w` and `record` keep them in the capture; off elsewhere
    # (its syscall tracepoints cost every process).
    proxy_links: bool = False
    # Which hooks the sensors attach to (--hooks: tracer/sensors/hook_profile.py).
    hooks: str = "all"


class TraceSession:
    def __init__(self, options: TraceOptions, latency: bool = False, sightings: bool = False) -> None:
        self.options = options
        # Latency mode: the kernel keeps histograms (tracer/latency.py reads
        # them); no per-packet events, so no ring-buffer drain.
        self.latency = latency
        # One record per sighting instead of one journey per packet (the
        # oracle build, see Program.sightings; TRACER_SIGHTING_EVENTS=1 picks
        # it for a whole CLI run, for the equivalence test and benchmarks).
        self.sightings = (sightings or os.environ.get("TRACER_SIGHTING_EVENTS") == "1") and not latency
        self.sweeper = None
        self.rules = None  # tracer.rule_trace.RuleTracer with --rules
        self.inventory: Inventory | NoDocker = NoDocker()  # Docker's containers, or none without an engine
        self.bpf = None
        self.program = None
        self._empty: pa.Table | None = None  # decode() of no records, kept
        self.drain: RingBufferDrain | None = None
        self.drainer: BackgroundDrain | None = None
        self.sensors: list = []
        self.tc: TcSensor | None = None
        self.filter: Filter | None = None  # what the kernel matches
        self.containers: tuple = ()  # with --container: the containers traced (inventory.Container)
        self.ctx: DecodeContext | None = None
        self.traced_names: set[str] = set()
        self.link_events = None  # kernel.link_events.LinkEvents, while tracing
        self.attachments: Attachments | None = None  # the tc sensor's interfaces, following the host
        self.lock = threading.Lock()
        self.started_at = 0.0
        self.startup: dict[str, float] = {}  # start-up phase -> seconds from start() to its end
        self.proxies: DockerProxies | None = None
        self.proxy = None  # the proxy sensor, when linking docker-proxy's legs
        # Told of every container start/die, with the kernel's time (from the
        # Docker events thread): the run's sinks, e.g. a capture's rows.
        self._container_listeners: list[Callable[[str, Any, int], None]] = []

    # ---- setup -----------------------------------------------------------
    def start(self) -> "TraceSession":
        require_root("tracer trace")
        self.started_at = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        opts = self.options
        if self.sightings and not self.latency:  # said aloud, like TRACER_BPF_CFLAGS
            log.warning("one ring-buffer record per sighting (TRACER_SIGHTING_EVENTS): the pre-journey design")
        # Bad input fails before any kernel or Docker work.
        program = self._plan()
        targets = opts.targets
        drops = next(s for s in self.sensors if isinstance(s, DropSensor))
        if opts.rules:  # a host whose iptables rules nf_tables cannot see fails here, before any work
            from tracer.kernel.ruleset import check_rule_attribution

            check_rule_attribution()
        # Compiling (or taking the programs from the program cache) and the
        # verifier are most of the start-up time and need no Docker metadata
        # (filter values go into maps afterwards): they run meanwhile. The
        # build's own Python first (the cache entry read, the maps made):
        # the inventory's Python would hold the GIL it needs, and what it
        # leads to, the verifier or clang, runs without the GIL beside the
        # inventory. Worth ~0.1 s of a warm start while the inventory
        # imported pyroute2 and the docker SDK; ~15 ms since it does not
        # (docs/benchmarks.md, session 20).
        underway = threading.Event()

        def mark(phase: str) -> None:
            self._mark(phase)
            if phase in BUILD_UNDERWAY:
                underway.set()

        with ThreadPoolExecutor(max_workers=1) as pool:
            building = pool.submit(program.build, self._programs(), mark)
            building.add_done_callback(lambda _: underway.set())
            try:
                underway.wait(BUILD_HEAD_START_S)
                containers = self._containers()
                self.containers = tuple(c for c in containers if c.name in self.traced_names) if targets.containers else ()
                tc_targets = self.attachments.initial(containers)
                self._mark("docker inventory")
            finally:
                self.bpf = building.result()  # so close() can unload it on any error
        if opts.tc_mode != "tcx":
            sweep_leftovers(tc_targets)
        self.filter.fill_maps(self.bpf)
        self._write_container_maps()
        self.tc.pending = tc_targets
        self.ctx = DecodeContext(host_netns=host_netns_inode(), drop_reasons=drops.reasons,
                                 book=PlaceBook(host_netns_inode(), self._host_interfaces))
        if not self.latency:
            from tracer.opaque_ids import AddressHasher

            self.drain = RingBufferDrain(self.bpf["events"].map_fd, program.ringbuf_pages * PAGE_SIZE,
                                         sample=program.record_dtype, addresses=AddressHasher())
            if self._sweeps():
                from tracer.kernel.sweep import JourneySweeper

                # Journeys quiet for longer than the packet cache joins
                # sightings can never end: out they go, marked incomplete.
                self.sweeper = JourneySweeper(self.bpf, program.packet_entries, program.journey_slots, FP_WINDOW_NS)
        if opts.rules:
            from tracer.rule_trace import RuleTracer, match_for

            # Before the netfilter links: registering the table's hooks after
            # them made the BPF hooks miss packets for a moment here.
            match = match_for(targets, *self._container_values())
            if match.is_everything():
                log.warning("--rules without --port/--host/--container/--proto marks all IPv4 traffic for nf_tables "
                            "tracing (a filter expression is not translated to nft): the kernel reports every rule "
                            "every packet meets")
            self.rules = RuleTracer(match).start()
        for sensor in self.sensors:
            sensor.attach(self.bpf)
        if self.drain is not None:
            # Traffic already flowing met some sensors before others: those
            # packets' journeys miss hops, so they are left out (and counted).
            self.drain.arm(self.now_ktime())
        if self.proxy is not None:
            self.proxy.set_pids(self.proxies.by_pid)
        self._mark("attached")
        self._rebuild_places()
        self.inventory.watch(self._on_container_change)
        self._follow_host_interfaces()
        self._mark("started")

    def _programs(self) -> list[tuple[str, int, int]]:
        """Every program this run loads: the sensors', and the sweep's."""
        programs = [p for sensor in self.sensors for p in sensor.programs()]
        if self._sweeps():
            from tracer.kernel.sweep import SWEEP_PROGRAM

            programs.append(SWEEP_PROGRAM)
        return programs

    def _sweeps(self) -> bool:
        """Whether open journeys are swept from the kernel (journey records:
        not latency mode, not the per-sighting oracle)."""
        return not (self.latency or self.sightings)

    def _mark(self, phase: str) -> None:
        """When a start-up phase ended, in seconds from start() (for
        scripts/bench_start.py --phases; a phase run in a thread ends in
        parallel with the others)."""
        self.startup[phase] = time.monotonic() - self.started_at

    def _plan(self, proxies_running: bool | None = None) -> Program:
        """The sensors and the program to build for the options: no kernel
        or Docker work yet. ``proxies_running`` overrides whether relevant
        docker-proxy processes run (tracer/prebuild.py builds both)."""
        opts, targets = self.options, self.options.targets
        # docker-proxy relays host ports to containers as a second TCP
        # connection: the proxy sensor links the two (trace and record only).
        linking = not (self.latency or self.sightings)
        self.proxies = DockerProxies(targets, enabled=linking)
        running = bool(self.proxies) if proxies_running is None else proxies_running and linking
        self.filter = targets.kernel_filter(follow_proxies=running and bool(targets.ports or targets.containers))
        self.tc = TcSensor([], mode=opts.tc_mode, latency=self.latency)
        self.attachments = Attachments(self.tc, self._host_interfaces, opts.ifaces, bridges=traces_bridges(opts.hooks))
        self.proxy = ProxySensor() if running and opts.proxy_links else None
        self.netfilter = NetfilterSensor(opts.hooks, tc_narrowed=bool(opts.ifaces))
        self.sensors = [self.tc, self.netfilter, DropSensor()] + ([self.proxy] if self.proxy else [])
        self.program = Program(self.sensors, self.filter, latency=self.latency, sightings=self.sightings)
        return self.program

    def ebpf_source(self) -> str:
        """The BPF C these options build, after the clang flags it is built
        with (as bcc's tools print with --ebpf): nothing is loaded."""
        return self._plan().annotated_source()

    def on_containers(self, listener: Callable[[str, Any, int], None]) -> None:
        """Tell ``listener`` of every container start/die from now on:
        (action, inventory.Container, kernel time), on the Docker events thread."""
        self._container_listeners.append(listener)

    def run_info(self) -> RunInfo:
        """What the run's sinks may know of it, once started."""
        return RunInfo(
            describe=self.describe(), interfaces=len(self.tc.targets()),
            records="histogram" if self.latency else "event" if self.sightings else "journey",
            boot_offset_ns=self.ctx.boot_offset_ns, containers=lambda: list(self.inventory.containers),
            sample=self.options.targets.sample, rules=self.options.rules, hooks=self.options.hooks,
            hooks_kept=self.netfilter.kept_anyway,
            places=self.ctx, places_lock=self.lock, now_ktime=self.now_ktime,
        )

    def describe(self) -> str:
        """What is traced, for the UI and a capture's metadata."""
        return self.options.targets.describe(c.name for c in self.containers)

    def _container_values(self) -> tuple[set[str], set[int]]:
        """The traced containers' addresses and published host ports (--container)."""
        return ({ip for c in self.containers for ip in c.ips},
                {p.host_port for c in self.containers for p in c.published})

    def _write_container_maps(self) -> None:
        write_containers(self.bpf, *self._container_values())
        if self.filter.follow_proxies:
            self.proxies.write_backends(self.bpf, self._container_values()[0])

    def _containers(self):
        opts = self.options.targets
        try:
            inventory = Inventory()
            containers = inventory.refresh()
            self.inventory = inventory
        except TracerError:
            if opts.containers:
                raise
            log.warning("no Docker engine: tracing host interfaces only, without container names")
            return []
        if opts.containers:
            chosen = [inventory.find(name) for name in opts.containers]
            self.traced_names = {c.name for c in chosen}
        else:
            self.traced_names = {c.name for c in containers}
        return [c for c in containers if c.name in self.traced_names]

    def read_proxy_links(self) -> list:
        """New links between proxy legs the kernel saw (bpf/proxy.c)."""
        if self.proxy is None or self.bpf is None:
            return []
        self.proxy.warn_unseen()
        return self.proxies.read_links(self.bpf, self.inventory)

    def _host_interfaces(self):
        return self.inventory.host_interfaces()

    # ---- host interfaces coming and going ----------------------------------
    def _follow_host_interfaces(self) -> None:
        """As containers through Docker events, host interfaces through
        netlink link events: a new (or re-created: new ifindex) interface is
        attached, a deleted one let go, a renamed one shown by its new name."""
        from tracer.kernel.link_events import LinkEvents

        try:
            self.link_events = LinkEvents(self._sync_host_interfaces)
        except OSError as exc:
            log.warning("not following host interfaces (netlink: %s)", exc)

    def _sync_host_interfaces(self) -> None:
        if self.attachments.sync_host_interfaces():
            self._rebuild_places()

    # ---- places for decoding ---------------------------------------------
    def _rebuild_places(self) -> None:
        self.ctx.book.rebuild(self._host_interfaces(), self.inventory.containers, self.tc.targets(), self.lock)

    # ---- containers coming and going ---------------------------------------
    def _on_container_change(self, what: str, container) -> None:
        ktime = self.now_ktime()
        for listener in self._container_listeners:
            try:
                listener(what, container, ktime)
            except Exception as exc:  # a listener's bug must not stop us following containers
                log.warning("container %s listener failed: %s", what, exc)
        if container.name not in self.traced_names and self.options.targets.containers:
            if what == "start":  # its network's links, taken for external ones, let go
                try:
                    self._sync_host_interfaces()
                except Exception as exc:
                    log.warning("could not follow the host interfaces: %s", exc)
            return
        try:
            if what == "die":
                self.attachments.container_died(container)
            elif what == "start":
                if not self.options.targets.containers:
                    self.traced_names.add(container.name)
                self.attachments.container_started(container)
                if self.containers:
                    self.containers = tuple(c for c in self.containers if c.name != container.name) + (container,)
                    self._write_container_maps()
                    if self.rules is not None:
                        from tracer.rule_trace import match_for

                        self.rules.update(match_for(self.options.targets, *self._container_values()))
                # Inventory now knows the network's bridge and veths: host
                # links that link events took for external ones are let go.
                self.attachments.sync_host_interfaces()
            self._rebuild_places()
            self.proxies.refresh(self.bpf, self.proxy, self.filter.follow_proxies, self._container_values()[0])
        except Exception as exc:  # keep tracing; say what we could not follow
            log.warning("could not follow container %s (%s): %s", container.name, what, exc)

    # ---- running -----------------------------------------------------------
    def read_records(self, timeout: float, every_s: float | None = None) -> np.ndarray:
        """The kernel's records drained so far (waiting up to `timeout` for
        the first): journeys (events.JOURNEY_DTYPE), or sightings
        (events.RAW_DTYPE) in the per-sighting build. ``every_s``: how often
        the drain thread reads the ring buffer and sweeps quiet journeys (its
        defaults if None), set by the first call."""
        if self.drainer is None:
            every = {} if every_s is None else {"batch_s": every_s, "tick_s": every_s}
            self.drainer = BackgroundDrain(self.drain, tick=self._sweep if self.sweeper else None, **every)
        return self.drainer.take(timeout)

    def _sweep(self) -> None:
        # Only while some journey is open: an idle tracer costs nothing here.
        if counts.open_journeys(self._journey_counts()):
            self.sweeper.sweep()

    def decode_records(self, records: np.ndarray) -> pa.Table:
        """Records -> the event table (one row per sighting)."""
        return self._decode(records if self.sightings else expand(records))

    def journey_rows(self, records: np.ndarray):
        """Journey records (a batch of whole packets) -> JourneyRows."""
        from tracer.journey_records import journey_rows_of_records

        with self.lock:  # the places may be rebuilt meanwhile (Docker thread)
            return journey_rows_of_records(records, self.ctx)

    def poll(self, timeout: float) -> pa.Table:
        return self.decode_records(self.read_records(timeout))

    def final_records(self) -> np.ndarray:
        """The rest, at the end of a trace: stops the sensors and the
        draining; journeys still open are emitted, marked incomplete."""
        self.stop_sensors()
        if self.drainer is not None:
            self.drainer.stop()
        if self.sweeper is not None:
            from tracer.kernel.sweep import FLUSH_PASSES

            # Walked again while the kernel still counts journeys open (a
            # program still in a slot as the walk reached it).
            left = self.sweeper.flush(lambda: counts.open_journeys(self._journey_counts()))
            if left:
                log.warning("%d journeys still open after %d flush passes at stop: not emitted (a sensor was still "
                            "in their slots)", left, FLUSH_PASSES)
        if self.drainer is None:
            return self.drain.read()
        records = self.drainer.finish()
        self.drainer = None
        return records

    def stop_sensors(self) -> None:
        """Detach every sensor: nothing new is seen, what was seen stays to
        be read."""
        if self.link_events is not None:
            self.link_events.close()
            self.link_events = None
        self.inventory.close()
        for sensor in reversed(self.sensors):
            try:
                sensor.detach()
            except Exception as exc:
                log.warning("detaching %s: %s", sensor.name, exc)

    def _journey_counts(self) -> np.ndarray:
        """journey_ends summed over CPUs ([0]: journeys opened); none
        without journeys."""
        if self.bpf is None or self.latency or self.sightings:
            return np.zeros(0, np.int64)
        return counts.journey_counts(self.bpf)

    def _decode(self, raw: np.ndarray) -> pa.Table:
        if not len(raw) and self._empty is not None:
            return self._empty  # an idle poll: no decode work (~0.7 ms each)
        with self.lock:
            table = decode(raw, self.ctx)
        if not len(raw):
            self._empty = table
        return table

    def counters(self) -> Counters:
        """The kernel's counts so far (kernel/counts.py)."""
        emitted, lost = counts.sensor_counts(self.bpf)
        journeys = not (self.sightings or self.latency)
        journey_counts = self._journey_counts()
        return Counters(emitted, lost, record="journey" if journeys else "event",
                        journey_ends=counts.journey_ends(journey_counts),
                        journey_faults=counts.journey_faults(journey_counts),
                        before_start=self.drain.before_start if self.drain is not None else 0)

    @staticmethod
    def now_ktime() -> int:
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    # ---- teardown ----------------------------------------------------------
    def close(self) -> None:
        self.stop_sensors()
        self.sensors = []
        if self.rules is not None:
            self.rules.close()  # our nft table goes
            self.rules = None
        if self.drainer is not None:
            self.drainer.stop()
            self.drainer = None
        if self.drain is not None:
            self.drain.close()
            self.drain = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def __enter__(self) -> "TraceSession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
