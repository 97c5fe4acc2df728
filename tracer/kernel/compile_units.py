"""A cold build's compile split in two units, compiled at once.

clang (through BCC) compiles on one thread, and a cold start waits for it:
1.2-1.5 s for every sensor in one module on a 2-CPU VM, while the other
CPU has little to do. The netfilter sensor's C is about as much of clang's
work as the rest together (tc, drops, docker-proxy's), so it is compiled in
this process while a child interpreter compiles the rest: 0.9-1.2 s for
both, each unit paying BCC's fixed ~0.25 s and the child its interpreter's
~0.1 s (docs/benchmarks.md, "Session 19").

A unit is the program's source with only its sensors' files (the shared
part, bpf/common.h and journey.h, in each), built with the whole program's
flags. Its snapshot (program_cache.snapshot) holds its programs, and
``merge`` joins the snapshots into what one compile gives: the maps by
name (the same attributes in every unit that declares them, or the units
are NotCacheable and the caller compiles the program at once, as before),
the programs by name (each in one unit: the shared part's trc_sweep is
compiled in the first only, -DTRC_NO_SWEEP in the others), every
relocation pointing into the merged maps. The instructions are clang's for the same C, though not always the
same bytes: with fewer functions in a unit it may allocate registers
differently (tests/e2e/test_compile_units.py).

A child process, not a thread: two BCC compiles in one process's threads
raced here (a program came out loading a map fd of the other module), so
each unit has a BCC of its own. The child gets its request in a file (so
starting it never waits on a pipe) and answers with a program-cache entry
on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from tracer.errors import MissingCapability
from tracer.kernel import program_cache
from tracer.kernel.program_cache import Compiled, CorruptEntry, MapSpec, NotCacheable, ProgramSpec

log = logging.getLogger(__name__)

# Sensors compiled apart from the rest, in this process (the child's
# interpreter start, ~0.1 s, goes to the rest, which compiles a little faster).
APART = ("netfilter",)
UNIT_KEY = "compile-unit"  # the child's answer is a program-cache entry under this key
COMPILE_REFUSED = 3  # the child's exit status when clang refused its source (the line on its stderr)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # where `tracer` is: the child runs there


def enabled() -> bool:
    """TRACER_COMPILE_UNITS=1: the whole program in one compile, as before
    (to measure against, or where a child interpreter cannot run)."""
    return os.environ.get("TRACER_COMPILE_UNITS", "2") != "1"


def split(sensors: Sequence) -> list[list]:
    """The sensors as compile units: APART's first, then the rest; one unit
    when one of the two is empty."""
    apart = [s for s in sensors if s.name in APART]
    rest = [s for s in sensors if s.name not in APART]
    return [unit for unit in (apart, rest) if unit]


def compiled(program, source: str, cflags: list[str]) -> Compiled | None:
    """``program`` (tracer/kernel/program.py Program, whose ``source`` is
    the whole's) compiled for tracer's loader: its units at once, else in
    one compile; None where tracer's loader cannot take it (a missed
    speed-up, never a failed start: BCC then builds and loads it itself)."""
    units = split(program.sensors)
    if len(units) > 1 and enabled():
        try:
            return compile_units([program.source(unit) for unit in units], cflags, program.snapshot)
        except NotCacheable as exc:
            log.warning("compile units not used (%s): compiling the program at once", exc)
    try:
        return program.snapshot(source, cflags)
    except NotCacheable as exc:
        log.warning("compiled programs not loadable by tracer's loader (%s): compiling for BCC's", exc)
        return None


def compile_units(sources: Sequence[str], cflags: list[str],
                  compile_here: Callable[[str, list[str]], Compiled]) -> Compiled:
    """The snapshots of ``sources`` compiled at once, merged: the first by
    ``compile_here`` in this process, each other one by a child. A source
    clang refuses raises MissingCapability (its first error); a unit that
    could not be compiled or merged so, NotCacheable."""
    children: list[_Child] = []
    try:
        for source in sources[1:]:  # the shared part's trc_sweep is the first unit's alone
            children.append(_Child(source, cflags + ["-DTRC_NO_SWEEP"]))
        parts = [compile_here(sources[0], cflags)] + [child.result() for child in children]
    finally:
        for child in children:
            child.close()
    return merge(parts)


class _Child:
    """One unit compiled by ``python -m tracer.kernel.compile_units REQUEST``."""

    command = (sys.executable, "-m", "tracer.kernel.compile_units")

    def __init__(self, source: str, cflags: list[str]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tracer-unit-")
        request = Path(self._dir.name) / "unit.json"
        request.write_text(json.dumps({"source": source, "cflags": list(cflags)}))
        try:
            # Run from the package's root: `-m` puts the working directory
            # first on sys.path, so the child imports this tracer, not one a
            # user's directory holds.
            self.proc = subprocess.Popen([*self.command, str(request)], cwd=PACKAGE_ROOT,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            self._dir.cleanup()
            raise NotCacheable(f"compile unit not started: {exc}") from None

    def result(self) -> Compiled:
        out, err = self.proc.communicate()
        said = err.decode(errors="replace").strip().splitlines()
        if self.proc.returncode == COMPILE_REFUSED and said:
            raise MissingCapability(said[-1])
        if self.proc.returncode != 0:
            raise NotCacheable(f"compile unit exited with status {self.proc.returncode}"
                               + (f": {said[-1]}" if said else ""))
        try:
            return program_cache.decode(out, UNIT_KEY)
        except CorruptEntry as exc:
            raise NotCacheable(f"compile unit's answer: {exc}") from None

    def close(self) -> None:
        """The child ended (killed if this process stopped waiting for it)."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate()
        self._dir.cleanup()


def merge(parts: Sequence[Compiled]) -> Compiled:
    """The units' snapshots as the one snapshot of the whole program."""
    maps: list[MapSpec] = []
    index: dict[str, int] = {}
    programs: dict[str, ProgramSpec] = {}
    for part in parts:
        if (part.license, part.kern_version) != (parts[0].license, parts[0].kern_version):
            raise NotCacheable("compile units differ in license or kernel version")
        merged_index = []
        for spec in part.maps:
            if spec.name not in index:
                index[spec.name] = len(maps)
                maps.append(spec)
            elif maps[index[spec.name]] != spec:
                raise NotCacheable(f"map {spec.name} differs between compile units")
            merged_index.append(index[spec.name])
        for program in part.programs:
            if program.name in programs:
                raise NotCacheable(f"program {program.name} in two compile units")
            programs[program.name] = dataclasses.replace(
                program, relocs=tuple((i, merged_index[m]) for i, m in program.relocs))
    return Compiled(parts[0].license, parts[0].kern_version, tuple(maps), tuple(programs.values()))


def main(argv: list[str]) -> int:
    """The child: compile the request's source, answer with its snapshot."""
    from tracer.kernel.bcc_compile import compile_text  # noqa: PLC0415 - the child's only heavy import

    request = json.loads(Path(argv[0]).read_text())
    try:
        bpf = compile_text(request["source"], request["cflags"])
    except MissingCapability as exc:
        print(exc, file=sys.stderr)
        return COMPILE_REFUSED
    try:
        compiled = program_cache.unloaded_snapshot(bpf)
    except NotCacheable as exc:  # the parent compiles at once
        print(f"not snapshotted: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(program_cache.encode(compiled, UNIT_KEY))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
