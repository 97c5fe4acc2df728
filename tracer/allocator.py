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
