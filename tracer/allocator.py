"""Memory freed by one pass of a live run is kept for the next.

A live run (`trace`, `record`, `latency`) allocates the same few megabytes
every pass (records, journey columns, the JSON text) and frees them. By
default both allocators hand that memory back to the kernel soon after:
Arrow's mimalloc purges freed pages (MADV_DONTNEED on its 1 GiB arena,
which it marks for transparent huge pages) and glibc trims the heap top and
unmaps blocks above its mmap threshold. The next pass then faults the pages
in again, and the kernel zeroes each one (2 MiB at a time for a huge page):
about a tenth of `trace --json`'s CPU, measured with perf (docs/benchmarks.md,
"Session 7"). Keeping freed memory costs nothing more than the run's peak,
which it reached anyway.

Analyses (`stats`, `report`) keep the allocators' defaults: they run under
memory limits (tests/e2e/test_bounded_memory.py) where returning memory
matters more than the faults.
"""

from __future__ import annotations

import ctypes
import os

from tracer import own_env

LIVE_COMMANDS = ("trace", "record", "latency", "demo")
# mimalloc reads its options once, when libarrow loads: before `import pyarrow`.
MIMALLOC_PURGE = "MIMALLOC_PURGE_DELAY"
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
    """Arrow's mimalloc keeps freed pages (a user's own setting wins). Must
    run before pyarrow is imported; a no-op after. Noted as tracer's own
    (tracer/own_env.py): a dockerd `demo` restarts does not inherit it."""
    own_env.set_default(MIMALLOC_PURGE, "-1", environ, own)


def keep_heap_memory() -> bool:
    """glibc keeps freed heap memory (numpy's arrays, glibc-allocated buffers).
    Any time; False where the C library has no mallopt (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
