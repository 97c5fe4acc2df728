"""``--compile-only``: the BPF programs a set of options builds, compiled
into the program cache (or found there) and verified by the kernel, with
nothing attached. scripts/setup.sh runs it for the default option sets, as
a package would ship prebuilt objects, so the first start of an installed
tracer with them is a warm one. The cache's key still decides: another
kernel, BCC or header tree, or other options, compile on their first start.
"""

from __future__ import annotations

import time

from tracer.errors import TracerError, require_root


class NotPrebuilt(TracerError):
    """The programs compiled but could not be kept, or the kernel refused a
    required one (an optional sensor's refusal is a line of the result)."""


def prebuild(options, latency: bool = False) -> list[str]:
    """Build the options' programs into the program cache; one line per
    build said what happened. A trace or record start builds the proxy
    sensor only while docker-proxy processes for its targets run, so both
    builds are made where it may."""
    from tracer.kernel import program_cache
    from tracer.kernel.program import load_programs, own_loader, shared_entries
    from tracer.session import TraceSession

    require_root("tracer --compile-only")
    cache = program_cache.ProgramCache()
    usable, what = cache.describe()
    if not shared_entries():
        raise NotPrebuilt("the program cache is not used with TRACER_SHARED_ENTRIES=0 (BCC compiles every start)")
    if not (usable and own_loader()):
        raise NotPrebuilt(f"the program cache is not used here: {what}")
    said = []
    for running in (False, True) if not latency and options.proxy_links else (None,):
        session = TraceSession(options, latency=latency)
        program = session._plan(proxies_running=running)
        if running and session.proxy is None:
            continue  # no proxy sensor for these options
        programs = session._programs()
        phases: dict[str, float] = {}
        t0 = time.monotonic()
        module = program.build(programs, lambda phase: phases.setdefault(phase, time.monotonic() - t0), cache)
        try:
            failed = load_programs(module, programs)  # the ones that failed are tried again, and say why
        finally:
            module.cleanup()
        # A required program's refusal raised in build (its MissingCapability
        # line); only optional ones come back in failed.
        which = "" if running is None else " with the docker-proxy sensor" if running else " without the docker-proxy sensor"
        if failed:
            # Only an optional sensor's program (the docker-proxy one): a start
            # goes on without it, so this kernel is not a failed prebuild (setup
            # would try again on every run). Such a build is not cached (a cached
            # one must load whole): the starts that build it compile.
            why = " ".join(failed[0].split())[:200]
            said.append(f"programs{which}: the kernel refused an optional sensor's program ({why}); starts trace "
                        "without it and compile this build (not kept in the program cache)")
            continue
        if cache.load(program.cache_key(program.source(), program.cflags(shared=True))) is None:
            raise NotPrebuilt(f"compiled, but not kept in {cache.directory}")
        how = "found in" if "from cache" in phases else f"compiled in {phases.get('compiled', 0):.1f} s into"
        said.append(f"programs{which} {how} the program cache {cache.directory}")
    return said
