"""Build and compile the one BPF module that holds every enabled sensor.

All sensors live in one compilation unit so they share maps (flows, the
packet cache, the ring buffer) and clang runs once. The source is assembled from
``bpf/common.h`` plus each sensor's file, preceded by the generated event
definitions and ``#define``s for BTF offsets and the filter.

A trace's start (``Program.build``) has BCC compile and then loads the
result with our own loader (tracer/kernel/cached_module.py), the same one
the program cache's warm starts use: it can write a value into a compiled
body, so the four tc programs and the two netfilter ones are each one
function compiled once (-DTRC_SHARED_ENTRIES, Sensor.variants) instead of
six inlined copies of the same C. ``Program.compile`` is BCC alone (each
program its own function, BCC loads them), for tests, benchmarks and
TRACER_DEBUG (which keeps BCC's debug info).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from tracer import events
from tracer.errors import MissingCapability
from tracer.kernel.bcc_compile import compile_text
from tracer.kernel.btf import resolve_offsets
from tracer.kernel.cpus import cpu_id_bound
from tracer.kernel.headers import ensure_bcc_headers
from tracer.kernel.hop_codes import c_definitions as hop_definitions
from tracer.kernel.kernel_filter import Filter, c_definitions as filter_definitions
from tracer.kernel import compile_units, program_cache
from tracer.kernel.verifier_log import keep_verifier_logs, verifier_log, where_the_log_is

BPF_DIR = Path(__file__).resolve().parent.parent.parent / "bpf"
log = logging.getLogger(__name__)

# Offsets every sensor may use: macro -> (struct, member path, size the C reads).
COMMON_OFFSETS: dict[str, tuple[str, str, int]] = {
    "OFF_SKB_HEAD": ("sk_buff", "head", 8),
    "OFF_SKB_NETWORK_HEADER": ("sk_buff", "network_header", 2),
    "OFF_DEV_IFINDEX": ("net_device", "ifindex", 4),
    "OFF_NET_INUM": ("net", "ns.inum", 4),
    "OFF_SKB_TAIL": ("sk_buff", "tail", 4),  # bpf/pcap_filter.h: linear bytes of the packet
}

RINGBUF_PAGES = 8192  # 32 MiB: ~100k journeys (~350k per-sighting events) of slack while user space is busy
FLOW_ENTRIES = 65536
PACKET_ENTRIES = 65536
# Trace/record mode's packet cache: slots are picked by a hash, so a first
# sighting touches a cold one: 16384 of them (512 KiB) miss the CPU caches
# less than 65536 and still hold far more packets than are ever in flight; a
# closed journey's slot is only kept for a late drop (freed after delivery: on
# the lab's HTTP within ms; drops are matched up to 5 s), and a busy host
# reuses it sooner than that.
JOURNEY_ENTRIES = 16384
# Journey slots (440 bytes: events.JOURNEY_DTYPE) per CPU, taken in turn (bpf/journey.h
# journey_take; the last one taken again while its journey is closed): a
# journey still open when its slot comes round (JOURNEY_POOL moves of the
# CPU's cursor later) is emitted as evicted. 256 (~110 KB a CPU) came
# round within the sweep's period on a busy host: 2.1-9.4 evicted per 1,000
# records in busy rounds of record under ab -c 8 + iperf3; 4096 (1.8 MB a
# CPU) evicted 0-0.3 per 1,000 in the same rounds (6,478 -> 88 in all of
# 1.9 M records each) at the same BPF ns per sighting (x0.981 [0.900-0.998]
# and x1.064 [0.973-1.127] in two runs: scripts/bench_journey_pool.py,
# docs/benchmarks.md). All CPUs' pools together stay below 2^16 slots (the
# packet cache holds a slot's index in 16 bits): journey_pool() halves it
# past 16 CPUs, so the pools never take more than ~29 MB.
JOURNEY_POOL = 4096
# A fingerprint seen again within this window is the same packet (a packet
# crosses the host in microseconds; TCP retransmits come after >= 200 ms).
FP_WINDOW_NS = 20_000_000
# Latency mode keeps following a packet across slow hops (a full qdisc can
# hold it for tens of ms); a fingerprint repeating within 1 s is rare.
LATENCY_FP_WINDOW_NS = 1_000_000_000
# Packet-cache slots (SWEEP_CHUNK) and journey slots (JOURNEY_SWEEP_CHUNK)
# trc_sweep looks at per run (bpf/journey.h): bounded loops the verifier
# walks iteration by iteration at load time, so this is start-up time. The
# verifier processes ~750 instructions per packet-cache slot and ~1,070 per
# journey slot of a chunk (the close and the record inlined in each), ~10k
# besides: at 64 and 64 trc_sweep was 126k instructions processed, 3.4x
# trc_nf_a's, the longest verification of all and the last one started
# (programs load longest first by size); at 32 and 16, 51k. More runs a
# pass cost little: a pass over the packet cache took 53-93 µs at 32 against
# 60-69 at 64, over the journey slots 47-82 at 16 against 34-49 at 64 (a
# loaded VM). packet_entries / SWEEP_CHUNK runs cover the cache,
# journey_slots / JOURNEY_SWEEP_CHUNK (rounded up) every CPU's pool
# (docs/benchmarks.md, "Session 11: emit").
SWEEP_CHUNK = 32
JOURNEY_SWEEP_CHUNK = 16
# A program's verification cost per instruction against the others' (what
# load_programs orders by): trc_sweep's bounded loops, walked iteration by
# iteration, make each ~10x as dear (65-110 ms for 485 instructions against
# 150-225 ms for trc_nf_a's 4,133): last by size, it ended the loads alone.
VERIFY_COST = {b"trc_sweep": 10}


def journey_pool(cpus: int) -> int:
    """Journey slots per CPU: JOURNEY_POOL, fewer (a power of two) where
    that many CPUs' pools would pass 2^16 slots."""
    pool = JOURNEY_POOL
    while pool > 1 and pool * cpus > 65536:
        pool //= 2
    return pool


def hist_slices() -> int:
    """Copies of the latency histograms (bpf/latency.h): one per CPU, up to 8."""
    return max(1, min(os.cpu_count() or 1, 8))


class SensorParts(Protocol):
    """What the module takes of each sensor (tracer/sensors/base.Sensor
    provides it; named here so this layer imports nothing above itself)."""

    name: str
    source_file: str
    optional: bool

    def offsets(self) -> dict[str, tuple[str, str, int]]: ...

    def cflags(self) -> list[str]: ...

    def programs(self) -> list[tuple[str, int, int]]: ...

    def variants(self) -> dict[str, tuple[str, int]]: ...


@dataclass
class Program:
    sensors: list[SensorParts]
    filter: Filter = field(default_factory=Filter)
    ringbuf_pages: int = RINGBUF_PAGES
    # Latency mode: histograms in the kernel instead of per-packet events.
    latency: bool = False
    # One ring-buffer record per sighting (struct event) instead of one per
    # packet (struct journey): the design before journeys were assembled in
    # the kernel, kept as the oracle the journey path is tested against.
    sightings: bool = False
    # Per-CPU copies of the latency histograms (bpf/latency.h); user space
    # reads them back with the same count.
    hist_slices: int = field(default_factory=lambda: hist_slices())

    @property
    def packet_entries(self) -> int:
        """Packet-cache slots (latency mode and the per-sighting build keep
        no journeys: more, smaller slots, as before journeys)."""
        return PACKET_ENTRIES if self.latency or self.sightings else JOURNEY_ENTRIES

    @property
    def journey_slots(self) -> int:
        """Journey slots, all CPUs' pools (bpf/journey.h; what trc_sweep walks)."""
        cpus = cpu_id_bound()
        return journey_pool(cpus) * cpus

    @property
    def record_dtype(self):
        """What one ring-buffer record is (tracer/drain.py reads them)."""
        return events.RAW_DTYPE if self.sightings else events.JOURNEY_DTYPE

    def source(self, sensors: Iterable[SensorParts] | None = None) -> str:
        """The C of the program, or of a compile unit: only ``sensors``' files after the shared part."""
        parts = [events.c_definitions(), hop_definitions(), filter_definitions(), (BPF_DIR / "common.h").read_text(),
                 self.filter.c_filter(), (BPF_DIR / "pcap_filter.h").read_text()]
        if self.latency:
            parts.append((BPF_DIR / "latency.h").read_text())
        else:
            parts += [events.journey_c_definitions(), (BPF_DIR / "journey.h").read_text()]
        for sensor in self.sensors if sensors is None else sensors:
            parts.append(f"/* ---- sensor: {sensor.name} ---- */")
            parts.append((BPF_DIR / sensor.source_file).read_text())
        return "\n".join(parts)

    def annotated_source(self) -> str:
        """The source after the clang flags it is built with, as a C comment
        (what --ebpf prints, as bcc's tools do)."""
        # The flags BCC can load the dump with as it is (a function per
        # program): what TRACER_DEBUG, TRACER_SHARED_ENTRIES=0 and
        # TRACER_PROGRAM_CACHE=0 starts compile. A start with tracer's loader
        # adds one flag; the header says which, so copying these flags is
        # not mistaken for reproducing that build.
        if own_loader():
            how = ("a start of this run compiles it with these flags plus -DTRC_SHARED_ENTRIES (one body for the "
                   "tc programs and one for the netfilter ones, each program's value written in at load, which "
                   "only tracer's loader does), and with the filter's values (which parts are on, the port, protocol "
                   "and sample rate) left open (-DFILTER_ON=TRC_FILTER_ON and the like, written in at load too); these flags alone are "
                   "TRACER_SHARED_ENTRIES=0's build, a function per program, which BCC loads as it is")
        else:
            how = "a start of this run compiles it with exactly these flags, a function per program, and BCC loads it"
        head = [f"/* tracer: the BPF program as clang compiles it ({how}):"]
        head += [f" *   {flag}" for flag in self.cflags()]
        return "\n".join(head) + "\n */\n" + self.source()

    def variants(self) -> dict[str, tuple[str, int]]:
        """Program name -> (shared body, value) over every sensor (Sensor.variants)."""
        return {name: v for sensor in self.sensors for name, v in sensor.variants().items()}

    def cflags(self, shared: bool = False) -> list[str]:
        """clang's flags; ``shared``: one body per sensor for the programs
        that differ only by a value, and the filter's values left open
        (built for our loader, which writes them in, see build)."""
        wanted = dict(COMMON_OFFSETS)
        extra: list[str] = []
        for sensor in self.sensors:
            wanted.update(sensor.offsets())
            extra += sensor.cflags()
        offsets = resolve_offsets(wanted)
        flags = [f"-D{macro}={value}" for macro, value in sorted(offsets.items())]
        flags += [
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            f"-DFLOW_ENTRIES={FLOW_ENTRIES}",
            f"-DPACKET_ENTRIES={self.packet_entries}",
            f"-DFP_WINDOW_NS={LATENCY_FP_WINDOW_NS if self.latency else FP_WINDOW_NS}ULL",
        ]
        if self.latency:
            flags += ["-DLATENCY_MODE", f"-DHIST_SLICES={self.hist_slices}"]
        else:
            pool = journey_pool(cpu_id_bound())  # the pools are indexed by CPU id
            flags += [f"-DSWEEP_CHUNK={SWEEP_CHUNK}", f"-DJOURNEY_SWEEP_CHUNK={JOURNEY_SWEEP_CHUNK}",
                      f"-DJOURNEY_POOL={pool}", f"-DJOURNEY_SLOTS={self.journey_slots}"]
        if self.sightings and not self.latency:  # latency mode has no per-packet records at all
            flags.append("-DSIGHTING_EVENTS")
        if shared:
            flags.append("-DTRC_SHARED_ENTRIES")
        # Extra clang flags for experiments and benchmarks (e.g. -DTRACER_NOOP:
        # every program returns at once, to measure what attaching alone costs).
        extra_env = os.environ.get("TRACER_BPF_CFLAGS", "").split()
        if extra_env:  # say so: -DTRACER_NOOP left set makes the tracer see nothing
            print(f"tracer: building the BPF programs with TRACER_BPF_CFLAGS={' '.join(extra_env)}", file=sys.stderr)
        flags += extra_env
        return flags + extra + self.filter.cflags(open_values=shared) + _debug_info_flags()

    def compile(self, source: str | None = None, cflags: list[str] | None = None):
        """Compile with BCC; returns the bcc.BPF object (maps and programs).
        Filter values are not in it yet: see Filter.fill_maps, write_containers."""
        cflags = self.cflags() if cflags is None else cflags
        return compile_text(self.source() if source is None else source, cflags)

    def build(self, programs: Iterable[tuple[str, int, int]], mark: Callable[[str], Any] = lambda phase: None,
              cache: "program_cache.ProgramCache | None" = None):
        """The module with ``programs`` verified (load_programs). From the
        program cache when it holds this exact build (no clang); else BCC
        compiles it, the compiled programs are kept there, and our loader
        (CachedModule) loads them either way, each variant of a shared body
        with its value (Sensor.variants). An entry the kernel refuses is
        discarded and the program compiled. With TRACER_DEBUG, BCC compiles
        and loads on its own (one function per program, with its debug
        info), after the shared bodies are checked (_check_shared_bodies).
        ``mark`` is told when each phase ends ("from cache", or
        "compiling" as clang starts and "compiled", then "programs
        loaded")."""
        programs = list(programs)
        if not own_loader():
            if os.environ.get("TRACER_DEBUG") and shared_without_debug():
                self._check_shared_bodies(programs)
            return self._bcc_build(programs, mark)
        source, cflags = self.source(), self.cflags(shared=True)
        if cache is None and program_cache.enabled():
            cache = program_cache.ProgramCache()
        key = self.cache_key(source, cflags) if cache is not None else ""
        compiled = cache.load(key) if cache is not None else None
        if compiled is not None:
            module = None
            try:
                module = self._module(compiled)
                mark("from cache")
                failed = load_programs(module, programs)
            except OSError as exc:  # maps refused (e.g. memory): BCC's own attempt says why, if it fails too
                failed = [f"maps: {exc}"]
            if not failed:
                mark("programs loaded")
                return module
            log.warning("program cache entry not loadable here (%s): compiling", "; ".join(failed)[:300])
            if module is not None:
                module.cleanup()
            cache.discard(key)
        mark("compiling")
        compiled = compile_units.compiled(self, source, cflags)  # None: BCC builds it (_bcc_build)
        if compiled is None:
            return self._bcc_build(programs, mark)
        mark("compiled")
        try:
            module = self._module(compiled)
        except OSError as exc:
            raise MissingCapability(f"BPF maps not created: {exc.strerror or exc}") from None
        failed = load_programs(module, programs)
        self._refuse_if_required(module, failed, None)
        mark("programs loaded")
        if cache is not None and not failed:  # an optional program refused here: not a build to keep
            try:
                cache.store(key, compiled)
            except Exception as exc:  # noqa: BLE001 - a cache we cannot fill is only a missed speed-up
                log.warning("program not cached: %s", exc)
        return module

    def snapshot(self, source: str, cflags: list[str]) -> "program_cache.Compiled":
        """``source`` compiled here and kept as instructions and map specs
        (program_cache.snapshot); NotCacheable where they cannot be."""
        return program_cache.unloaded_snapshot(self.compile(source, cflags))

    def _refuse_if_required(self, module, failed: list[str], log_file: str | None) -> None:
        """One clear line, nothing left loaded, when a required program was
        refused (the sensors' own load would raise a bare Exception)."""
        required = self.required_failures(failed)
        if required:
            module.cleanup()
            raise MissingCapability(f"BPF program not loaded: {required[0]}{where_the_log_is(log_file)}")

    def required_failures(self, failed: list[str]) -> list[str]:
        """The failures ("name: why") that stop a start: not an optional
        sensor's program (the proxy sensor's attach says it is unavailable,
        and tracing goes on without it)."""
        optional = {name for sensor in self.sensors if sensor.optional for name, _, _ in sensor.programs()}
        return [f for f in failed if f.split(":", 1)[0] not in optional]

    def _check_shared_bodies(self, programs: list[tuple[str, int, int]]) -> None:
        """With TRACER_DEBUG: first the shared bodies a start without it
        builds (its exact flags), loaded by tracer's loader and unloaded, so
        that their refusal, which BCC's function-per-program build would
        not reproduce, stops the start with the verifier's whole log in a
        file the one-line error names. A build that cannot be checked so
        (not snapshottable) goes on to BCC's as before."""
        bpf = self.compile(self.source(), self.cflags(shared=True) + ["-g0"])
        try:
            compiled = program_cache.snapshot(bpf)
        except Exception as exc:  # noqa: BLE001 - as in build: BCC's own build then says what it says
            log.warning("shared bodies not checked (%s)", exc)
            return
        finally:
            bpf.cleanup()
        try:
            module = self._module(compiled)
        except OSError as exc:
            raise MissingCapability(f"BPF maps not created: {exc.strerror or exc}") from None
        try:
            required = self.required_failures(load_programs(module, programs))
            if required:
                path = keep_verifier_logs(module.verifier_logs)
                raise MissingCapability(f"BPF program not loaded as a shared body (TRACER_SHARED_ENTRIES=0 builds a "
                                        f"function per program): {required[0]}{where_the_log_is(path) if path else ''}")
        finally:
            module.cleanup()

    def _module(self, compiled: "program_cache.Compiled"):
        """Maps created, programs loaded on demand, from a compiled build."""
        from tracer.kernel.cached_module import CachedModule  # noqa: PLC0415

        return CachedModule(compiled, self.variants(), self.filter.values())

    def _bcc_build(self, programs: list[tuple[str, int, int]], mark: Callable[[str], Any]):
        """BCC compiles and loads, one function per program (no cache)."""
        bpf = self.compile()
        mark("compiled")
        with verifier_log() as verifier:
            failed = load_programs(bpf, programs)
            verifier.keep = bool(self.required_failures(failed))
        self._refuse_if_required(bpf, failed, verifier.path)
        mark("programs loaded")
        return bpf

    def cache_key(self, source: str, cflags: list[str]) -> str:
        """The program cache's key for this build (see program_cache.cache_key)."""
        from tracer.kernel.btf import kernel_btf_key

        headers = ensure_bcc_headers()
        uname = os.uname()
        return program_cache.cache_key(source, cflags, program_cache.bcc_version(), _header_tree_identity(headers.path),
                                       f"{uname.release} {uname.version} {uname.machine} {kernel_btf_key()}")


def own_loader() -> bool:
    """Whether starts load the compiled programs with tracer's loader
    (shared bodies, the program cache): not with TRACER_DEBUG, which keeps
    BCC's debug info (program BTF, source lines in verifier messages) that
    only BCC's own loading passes on, nor with TRACER_SHARED_ENTRIES=0 or
    TRACER_PROGRAM_CACHE=0 (BCC compiles and loads, as before the cache)."""
    return shared_entries() and program_cache.enabled()  # enabled(): not with TRACER_DEBUG


def shared_without_debug() -> bool:
    """Whether a start without TRACER_DEBUG loads shared bodies with
    tracer's loader (TRACER_DEBUG then checks them first: Program.build)."""
    return shared_entries() and program_cache.switched_on()


def shared_entries() -> bool:
    """TRACER_SHARED_ENTRIES=0: a function per program, as BCC builds and
    loads it, without TRACER_DEBUG's other changes (debug info, verifier
    logs): to tell whether a refusal comes from the shared bodies."""
    return os.environ.get("TRACER_SHARED_ENTRIES", "1") != "0"


def _header_tree_identity(path) -> str:
    """The header tree's path and the size and time of the files that say
    which kernel it describes: a tree rebuilt in place (a user's
    BCC_KERNEL_SOURCE) is a new build, not a stale cache hit."""
    parts = [str(path)]
    for name in ("include/generated/autoconf.h", "include/generated/uapi/linux/version.h", "Makefile"):
        try:
            st = os.stat(os.path.join(path, name))
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return " ".join(parts)


def _debug_info_flags() -> list[str]:
    """BCC compiles with -g to give the programs BTF (source lines in
    verifier messages, typed bpftool map dumps). Nothing here uses it and
    it is about 15 % of the compile's CPU, on the start-up's critical path:
    -g0 (after BCC's -g, so it wins) unless TRACER_DEBUG asks for detail."""
    return [] if os.environ.get("TRACER_DEBUG") else ["-g0"]


def load_programs(bpf, programs: Iterable[tuple[str, int, int]], workers: int | None = None) -> list[str]:
    """Have the kernel verify ``programs`` ((function, program type, attach
    type or -1)) from a compiled module, several at once: BCC's load is a
    ctypes call, which releases the GIL, and the verifier (tenths of a
    second for the netfilter programs) runs on whichever CPUs are free.
    BCC keeps each loaded program, so the sensors' own ``load_func`` calls
    then find them. Best effort: a program that fails here is loaded again
    by its sensor, which reports the failure as it always did. Returns
    what failed ("name: why"), for the program cache."""
    wanted: dict[bytes, tuple[int, int]] = {}
    for name, prog_type, attach_type in programs:
        wanted.setdefault(name.encode(), (prog_type, attach_type))
    # Longest verification first: the longest bounds the whole (VERIFY_COST).
    order = sorted(wanted, key=lambda name: -_function_size(bpf, name) * VERIFY_COST.get(name, 1))
    failed: list[str] = []

    def load(name: bytes) -> None:
        prog_type, attach_type = wanted[name]
        try:
            bpf.load_func(name, prog_type, attach_type=attach_type)
        except Exception as exc:  # BCC raises bare Exception; the sensor's load says why
            failed.append(f"{name.decode()}: {exc}")

    workers = max(1, min(len(order), workers or os.cpu_count() or 1))
    if workers == 1:
        for name in order:
            load(name)
        return failed
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bpf-load") as pool:
        list(pool.map(load, order))
    return failed


def _function_size(bpf, name: bytes) -> int:
    """A program's size in bytes, from BCC's module or a cached one."""
    if hasattr(bpf, "function_size"):
        return bpf.function_size(name)
    from bcc import lib  # noqa: PLC0415 - only once a module is compiled

    return int(lib.bpf_function_size(bpf.module, name) or 0)
