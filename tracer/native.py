"""tracer._native, the compiled twins of a few hot loops (native/*.c, built
by setup.py when `scripts/setup.sh` installs the package), or None.

The extension is optional: every function in it has a Python twin that is
the reference (the tests compare their bytes) and the fallback where it was
not built (no compiler or Python headers, a source tree run without
installing). ``TRACER_NATIVE=0`` in the environment turns it off, to compare
or to rule it out."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# The first words of why_not() for a build older than native/ (a pull
# without scripts/setup.sh): what to run, said the same everywhere (a run's
# warning, doctor, the tests' one-line stop: tests/conftest.py).
STALE = "stale native build: run scripts/setup.sh"

# What the Python side calls (native/module.c's table). A build from older
# sources (a pull without re-running scripts/setup.sh) lacks some: then none
# is used, rather than a half-built module failing mid-run.
FUNCTIONS = ("journey_json", "journey_text", "address_ids", "journey_layout", "journey_hops", "journey_facts",
             "segment_groups", "reservoir_draw", "ring_records")

_loaded = False
_module = None
_why_not = ""
_warned = False


def native(warn: bool = True):
    """The extension module, or None (then ``why_not()`` says why). A stale
    build is warned about once, at the first call with ``warn`` (doctor
    shows why_not() itself)."""
    global _warned
    if warn and not _warned:
        _warned = True
        if _load() is None and _why_not.startswith(STALE):
            log.warning("%s", _why_not)
    return _load()


def _load():
    global _loaded, _module, _why_not
    if not _loaded:
        _loaded = True
        if os.environ.get("TRACER_NATIVE", "1") == "0":
            _why_not = "turned off by TRACER_NATIVE=0"
        else:
            try:
                from tracer import _native
            except ImportError as e:
                _why_not = f"not built ({e}); run bash scripts/setup.sh"
            else:
                missing = missing_functions(_native)
                if missing or stale(_native):
                    lacks = f", which lacks {', '.join(missing)}" if missing else ""
                    _why_not = (f"{STALE} (`bash scripts/setup.sh` rebuilds tracer._native, built from older "
                                f"native/ sources{lacks}; the Python paths are used meanwhile, at more CPU per packet)")
                else:
                    _module = _native
    return _module


def missing_functions(module) -> list[str]:
    """The FUNCTIONS a built module does not have."""
    return [f for f in FUNCTIONS if not hasattr(module, f)]


def sources_hash(directory: Path) -> str:
    """The hash of native/'s sources (setup.py calls this too, and bakes it
    into the build as SOURCES). Standard library only: setup.py loads this
    file before the package can be imported."""
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def stale(module, directory: Path = Path(__file__).resolve().parent.parent / "native") -> bool:
    """A source tree's build made before its native/ changed (a pull without
    scripts/setup.sh): its functions may take other arguments or write other
    text. An installed package has no native/ beside it: nothing to compare."""
    if not directory.is_dir():
        return False
    return getattr(module, "SOURCES", "") != sources_hash(directory)


def i64(a):
    """A column as the C functions take it: contiguous int64 (a view when it is one)."""
    import numpy as np  # noqa: PLC0415 - numpy only where columns are passed

    return np.ascontiguousarray(a, np.int64)


def u64(a):
    """A column as contiguous uint64 (a view when it is one)."""
    import numpy as np  # noqa: PLC0415

    return np.ascontiguousarray(a, np.uint64)


def why_not() -> str:
    """Why native() is None ('' when it is not)."""
    _load()
    return _why_not


def describe() -> str:
    """One line for --verbose: which text path a live run uses."""
    return "compiled text output (tracer._native)" if native() is not None else f"Python text output: compiled part {why_not()}"


def capability():
    """`tracer doctor`'s line for the extension (optional: without it the
    Python paths write the same text, at more CPU per packet)."""
    from tracer.kernel.probes import Capability

    ok = native(warn=False) is not None  # its detail is why_not(): not said twice
    return Capability("native_text", ok, "tracer._native: compiled journey text and address ids" if ok else why_not(),
                      required=False, fix="" if ok else "bash scripts/setup.sh (builds it with gcc and python3-dev)")
