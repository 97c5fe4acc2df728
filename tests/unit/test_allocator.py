"""Live commands keep the memory one pass frees for the next
(tracer/allocator.py): Arrow is told before pyarrow loads (glibc's heap, its
system pool; mimalloc's purge delay for a user who picks it), glibc by
mallopt. Analyses keep the allocators' defaults."""

import subprocess
import sys

from tracer import allocator

# Records, in a fresh interpreter, what MIMALLOC_PURGE_DELAY was when
# pyarrow was first imported by `import tracer.cli` for a command line.
_PROBE = r"""
import importlib.abc, os, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" and not seen:
            seen.append((os.environ.get("MIMALLOC_PURGE_DELAY"), os.environ.get("ARROW_DEFAULT_MEMORY_POOL")))
        return None
sys.meta_path.insert(0, Watch())
os.environ.pop("MIMALLOC_PURGE_DELAY", None)
os.environ.pop("ARROW_DEFAULT_MEMORY_POOL", None)
sys.argv = ["tracer", *sys.argv[1:]]
import tracer.cli
import pyarrow
print(*seen[0], pyarrow.default_memory_pool().backend_name if seen else "never")
"""


def _arrow_settings_at_pyarrow_import(*argv: str) -> str:
    """'MIMALLOC_PURGE_DELAY ARROW_DEFAULT_MEMORY_POOL pool-in-use'."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_live_commands_set_arrows_memory_from_before_pyarrow_loads():
    for command in ("trace", "record", "latency"):
        assert _arrow_settings_at_pyarrow_import(command, "--json") == "-1 system system"


def test_analyses_keep_the_allocators_defaults():
    for argv in (("stats", "x.arrows"), ()):
        purge, pool, in_use = _arrow_settings_at_pyarrow_import(*argv).split()
        assert (purge, pool) == ("None", "None") and in_use != "system"  # pyarrow's build default


def test_a_users_own_setting_wins():
    env = {"MIMALLOC_PURGE_DELAY": "10", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    allocator.keep_arrow_memory(env)
    assert env == {"MIMALLOC_PURGE_DELAY": "10", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    env = {}
    allocator.keep_arrow_memory(env)
    assert env["MIMALLOC_PURGE_DELAY"] == "-1" and env["ARROW_DEFAULT_MEMORY_POOL"] == "system"


def test_which_command_lines_are_live():
    assert allocator.is_live(["tracer", "trace"]) and allocator.is_live(["/x/__main__.py", "record", "-w", "f"])
    assert not allocator.is_live(["tracer"]) and not allocator.is_live(["tracer", "show", "trace"])


def test_glibc_keeps_freed_heap_memory():
    assert allocator.keep_heap_memory()  # glibc here: both mallopt calls accepted

