"""Emit journeys that went quiet without ending (bpf/journey.h trc_sweep).

A packet that leaves the sensors' view (a GSO packet a qdisc split, a sensor
missing on its way) never reaches a sighting that ends its journey. Its record
is still in the kernel's slot; trc_sweep, run here with BPF_PROG_TEST_RUN over
the packet cache in chunks (every JOURNEY_WALK_EVERY-th pass and at the end
over the journey slots), emits it marked incomplete once no sighting could
join it any more, and at the end emits every journey still open.
"""

from __future__ import annotations

import ctypes
import time

from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun
from tracer.kernel.program import JOURNEY_SWEEP_CHUNK, SWEEP_CHUNK

# The program, as load_programs (tracer/kernel/program.py) takes it.
SWEEP_PROGRAM = ("trc_sweep", BPF_PROG_TYPE_SCHED_CLS, -1)
# A test run needs a packet; trc_sweep does not look at it.
_PACKET = bytes(64)


class _SweepArgs(ctypes.Structure):
    _fields_ = [("idle_ns", ctypes.c_uint64), ("cursor", ctypes.c_uint32), ("journeys", ctypes.c_uint32)]


# Every this many sweeps, the walk is over the journey slots instead of the
# packet cache (bpf/journey.h trc_sweep): it also reaches a journey whose
# packet-cache slot another CPU's claim took in a race. A whole walk of the
# journey slots costs ~2.5x one of the packet cache (~5x per run of the
# program: a cache line per journey slot, and fewer runs: docs/benchmarks.md).
# The drain thread sweeps every 50 ms while journeys are open (`trace`;
# `record` every 250 ms), so this walk comes once a second in `trace`, every
# 5 s in `record`, and at the flush.
JOURNEY_WALK_EVERY = 20
# The flush at stop skips a slot a program on another CPU is still in (link
# release need not wait for it): walked again, this many passes in all,
# FLUSH_RETRY_S apart, while journeys are still open.
FLUSH_PASSES = 4
FLUSH_RETRY_S = 0.002


class JourneySweeper:
    def __init__(self, bpf, packet_entries: int, journey_slots: int, idle_ns: int, *,
                 chunk: int = SWEEP_CHUNK, journey_chunk: int = JOURNEY_SWEEP_CHUNK) -> None:
        """``chunk``, ``journey_chunk``: the slots one run of trc_sweep walks
        in the packet cache and in the journey slots. Each defaults to the
        constant the program is built with (tracer/kernel/program.py passes
        them to the compiler), so they cannot disagree with it; a test's
        stand-in gives its own."""
        self.runner = ProgTestRun(bpf.load_func(*SWEEP_PROGRAM[:2]).fd, _PACKET)
        self.args = bpf["sweep_args"]
        # Runs that cover the packet cache, and the journey slots (the last
        # chunk of those may be short).
        self.runs = {0: max(1, packet_entries // chunk), 1: max(1, -(-journey_slots // journey_chunk))}
        self.idle_ns = idle_ns
        self._set = None
        self._sweeps = 0

    def _arm(self, idle_ns: int, journeys: int) -> None:
        if self._set != (idle_ns, journeys):  # a map write only when the mode changes
            self.args[self.args.Key(0)] = _SweepArgs(idle_ns, 0, journeys)
            self._set = (idle_ns, journeys)

    def sweep(self) -> None:
        """One pass over every slot: journeys quiet for idle_ns go out.
        One syscall: the kernel repeats the program ``runs`` times, each run
        sweeping the next chunk from the cursor it left in sweep_args (a
        test run per chunk cost more in syscalls and skb set-up than the
        chunk's slots did). Every JOURNEY_WALK_EVERY-th pass walks the
        journey slots."""
        self._sweeps += 1
        self._arm(self.idle_ns, int(self._sweeps % JOURNEY_WALK_EVERY == 0))
        self._run()

    def sweep_journey_slots(self) -> None:
        """One pass over the journey slots, whatever the count says."""
        self._arm(self.idle_ns, 1)
        self._run()

    def flush(self, still_open=None) -> int:
        """Every open journey goes out (tracing stops): the journey slots
        walked, so one no packet-cache slot leads to goes out too.
        ``still_open()``: journeys the kernel counts open; while it is not 0
        (a slot a straggling program was in when the walk reached it, or a
        journey it opened just after) the slots are walked again, up to
        FLUSH_PASSES in all. Returns what was still open after the last
        pass (0 without ``still_open``)."""
        left = 0
        for attempt in range(FLUSH_PASSES):
            if attempt:
                time.sleep(FLUSH_RETRY_S)
            self._arm(0, 1)
            self._run()
            if still_open is None:
                return 0
            left = still_open()
            if not left:
                return 0
        return left

    def _run(self) -> None:
        # With repeat > 1 the kernel stops between runs when a signal is
        # pending (EINTR): a second Ctrl-C, the write-grace alarm. The
        # cursor stays in sweep_args, so running again goes on from there
        # (a few chunks swept twice do no harm).
        for _ in range(5):
            try:
                self.runner.run(self.runs[self._set[1]])
                return
            except InterruptedError:
                continue
        self.runner.run(self.runs[self._set[1]])
