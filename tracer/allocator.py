"""Memory freed by one pass of a live run is kept for the next.

A live run (`trace`, `record`, `latency`) allocates the same few megabytes
every pass (records, journey columns, the JSON text, Arrow's compressed
buffers) and frees them. By default the allocators hand that memory back to
the kernel soon after: glibc trims the heap top and unmaps blocks above its
mmap threshold (and Arrow's mimalloc purges freed pages). The next pass then
faults the pages in again, and the kernel zeroes each one: about a tenth of
`trace --json`'s CPU, measured with perf (docs/benchmarks.md, "Session 7").
Keeping freed memory costs nothing more than the run's peak, which it
reached anyway.

Arrow allocates from glibc too (its system pool, not mimalloc): its
buffers (a capture's compressed columns) then reuse the blocks the pass's
numpy arrays freed in the same heap. mimalloc's arena is marked for huge
pages, and its scattered blocks faulted in 2 MiB each (30-40 MB resident
for the 5-7 MB Arrow had allocated), every page zeroed by the kernel on
first touch: the capture writer's first second cost ~25 % less CPU on the
system pool (docs/benchmarks.md, "Session 12: record"). Every thread keeps
its own glibc arena: one arena for all (M_ARENA_MAX=1) was measured and
not kept, the drain thread's reads then faulted in fresh heap more often.

Analyses (`stats`, `report`) keep the allocators' defaults: they run under
memory limits (tests/e2e/test_bounded_memory.py) where returning memory
matters more than the faults.
"""

from __future__ import annotations

import ctypes
import os

from tracer import own_env

LIVE_COMMANDS = ("trace", "record", "latency", "demo")
# Arrow and mimalloc read these once, when libarrow loads: before `import pyarrow`.
ARROW_POOL = "ARROW_DEFAULT_MEMORY_POOL"
MIMALLOC_PURGE = "MIMALLOC_PURGE_DELAY"  # for a user who chose mimalloc as the pool
# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks above it are still unmapped on free
_TRIM_THRESHOLD = 1 << 30


# A buffer grown for a pass's text (`--json`'s bytearray, the direct
# output's stage) goes back to its first size after this many passes in a
# row (idle ones too, ~0.15 s each) that used under a quarter of what it
# last grew for, or at once past KEEP_AT_MOST: a run whose passes only vary
# keeps it (regrowing faults its pages in again: a traced stream writes
# ~20 MB of JSON a pass), a burst's is not kept for the rest of the run.
QUIET_PASSES = 16
KEEP_AT_MOST = 128 << 20


class KeepWhileNeeded:
    """When a buffer grown for a pass's text is let go (see QUIET_PASSES):
    ``grew`` when it grows, ``let_go`` after each pass."""

    def __init__(self) -> None:
        self.grown_for = 0  # the size it last grew for
        self.quiet = 0  # passes in a row that used under a quarter of that

    def grew(self, size: int) -> None:
        self.grown_for, self.quiet = size, 0

    def let_go(self, used: int, held: int) -> bool:
        """After a pass that used ``used`` bytes (0: an idle pass) of a
        buffer ``held`` bytes long: True when it goes back to its first size."""
        self.quiet = self.quiet + 1 if used < self.grown_for // 4 else 0
        if held > KEEP_AT_MOST or self.quiet >= QUIET_PASSES:
            self.grown_for = self.quiet = 0
            return True
        return False


def is_live(argv: list[str]) -> bool:
    """Whether the command line runs a live command (its first word after
    the program, the group having no options of its own but --help/--version)."""
    return len(argv) > 1 and argv[1] in LIVE_COMMANDS


def keep_arrow_memory(environ=os.environ, own: set[str] | None = None) -> None:
    """Arrow allocates from glibc's heap (its system pool), and mimalloc,
    if a user picks it, keeps freed pages (a user's own settings win). Must
    run before pyarrow is imported; a no-op after. Noted as tracer's own
    (tracer/own_env.py): a dockerd `demo` restarts does not inherit them."""
    own_env.set_default(ARROW_POOL, "system", environ, own)
    own_env.set_default(MIMALLOC_PURGE, "-1", environ, own)


def keep_heap_memory() -> bool:
    """glibc keeps freed heap memory (numpy's arrays, Arrow's buffers).
    Any time; False where the C library has no mallopt (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
