"""Live commands keep the memory one pass frees for the next
(tracer/allocator.py): Arrow's mimalloc is told before pyarrow loads, glibc
by mallopt. Analyses keep the allocators' defaults."""

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
            seen.append(os.environ.get("MIMALLOC_PURGE_DELAY"))
        return None
sys.meta_path.insert(0, Watch())
os.environ.pop("MIMALLOC_PURGE_DELAY", None)
sys.argv = ["tracer", *sys.argv[1:]]
import tracer.cli
print(seen[0] if seen else "never")
"""


def _purge_delay_at_pyarrow_import(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_live_commands_keep_arrow_memory_from_before_pyarrow_loads():
    for command in ("trace", "record", "latency"):
        assert _purge_delay_at_pyarrow_import(command, "--json") == "-1"


def test_analyses_keep_the_allocators_defaults():
    assert _purge_delay_at_pyarrow_import("stats", "x.arrows") == "None"
    assert _purge_delay_at_pyarrow_import() == "None"


def test_a_users_own_setting_wins():
    env = {"MIMALLOC_PURGE_DELAY": "10"}
    allocator.keep_arrow_memory(env)
    assert env["MIMALLOC_PURGE_DELAY"] == "10"
    env = {}
    allocator.keep_arrow_memory(env)
    assert env["MIMALLOC_PURGE_DELAY"] == "-1"


def test_which_command_lines_are_live():
    assert allocator.is_live(["tracer", "trace"]) and allocator.is_live(["/x/__main__.py", "record", "-w", "f"])
    assert not allocator.is_live(["tracer"]) and not allocator.is_live(["tracer", "show", "trace"])


def test_glibc_keeps_freed_heap_memory():
    assert allocator.keep_heap_memory()  # glibc here: both mallopt calls accepted
