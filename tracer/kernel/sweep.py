"""Emit journeys that went quiet without ending (bpf/journey.h trc_sweep).

A packet that leaves the sensors' view (a GSO packet a qdisc split, a sensor
missing on its way) never reaches a sighting that ends its journey. Its record
is still in the kernel's slot; trc_sweep, run here with BPF_PROG_TEST_RUN over
the journey slots in chunks, emits it marked incomplete once no sighting could
join it any more, and at the end emits every journey still open.
"""

from __future__ import annotations

import ctypes

from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS, ProgTestRun

# The program, as load_programs (tracer/kernel/program.py) takes it.
SWEEP_PROGRAM = ("trc_sweep", BPF_PROG_TYPE_SCHED_CLS, -1)
# A test run needs a packet; trc_sweep does not look at it.
_PACKET = bytes(64)


class _SweepArgs(ctypes.Structure):
    _fields_ = [("idle_ns", ctypes.c_uint64), ("cursor", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class JourneySweeper:
    def __init__(self, bpf, journey_slots: int, chunk: int, idle_ns: int) -> None:
        self.runner = ProgTestRun(bpf.load_func(*SWEEP_PROGRAM[:2]).fd, _PACKET)
        self.args = bpf["sweep_args"]
        self.runs = max(1, -(-journey_slots // chunk))  # the last chunk may be short
        self.idle_ns = idle_ns
        self._set = None

    def _arm(self, idle_ns: int) -> None:
        if self._set != idle_ns:  # a map write only when the mode changes
            self.args[self.args.Key(0)] = _SweepArgs(idle_ns, 0, 0)
            self._set = idle_ns

    def sweep(self) -> None:
        """One pass over every slot: journeys quiet for idle_ns go out.
        One syscall: the kernel repeats the program ``runs`` times, each run
        sweeping the next chunk from the cursor it left in sweep_args (a
        test run per chunk cost more in syscalls and skb set-up than the
        chunk's slots did)."""
        self._arm(self.idle_ns)
        self._run()

    def flush(self) -> None:
        """Every open journey goes out (tracing stops)."""
        self._arm(0)
        self._run()

    def _run(self) -> None:
        # With repeat > 1 the kernel stops between runs when a signal is
        # pending (EINTR): a second Ctrl-C, the write-grace alarm. The
        # cursor stays in sweep_args, so running again goes on from there
        # (a few chunks swept twice do no harm).
        for _ in range(5):
            try:
                self.runner.run(self.runs)
                return
            except InterruptedError:
                continue
        self.runner.run(self.runs)
