"""Environment variables tracer sets in its own process, kept out of the
processes it leaves running.

tracer tunes its own libraries through the environment (OPENBLAS_NUM_THREADS
on import, MIMALLOC_PURGE_DELAY for live commands, BCC_KERNEL_SOURCE before
the first BPF compile), and every child inherits
os.environ. That is harmless for a command that ends with the run, but the
lab's dockerd (`tracer lab up` may restart it) and its client-netns server
outlive it, and must not keep tracer's settings. Only keys tracer set are
dropped: a value the user exported stays, in tracer and in its children."""

from __future__ import annotations

import os
from typing import MutableMapping

# Keys set by set_default in os.environ in this process.
OWN: set[str] = set()
# The keys a tracer process set, with their values, passed down to its
# children in the environment: a tracer started by one (a test, a benchmark,
# `lab up` from a script that imported tracer) must not take them for the
# user's. A key whose value changed since (the user set it for the child) is
# the user's again.
MARK = "TRACER_OWN_ENV"


def _inherited(environ: MutableMapping[str, str]) -> set[str]:
    pairs = (p.partition("=") for p in environ.get(MARK, "").split(",") if p)
    return {k for k, _, v in pairs if environ.get(k) == v}


def set_default(key: str, value: str, environ: MutableMapping[str, str] = os.environ,
                own: set[str] | None = None) -> bool:
    """environ[key] = value unless it is already set (a user's setting wins),
    noting the key as tracer's own; whether it was set."""
    own = OWN if own is None else own
    if key in environ:
        if key in _inherited(environ):  # set by the tracer this process was started from
            own.add(key)
        return False
    environ[key] = value
    own.add(key)
    environ[MARK] = ",".join(f"{k}={environ[k]}" for k in sorted(own | _inherited(environ)) if k in environ)
    return True


def child_env(environ: MutableMapping[str, str] = os.environ, own: set[str] | None = None) -> dict[str, str]:
    """environ without the keys tracer set itself (nor its mark): for a child
    that outlives the run."""
    drop = (OWN if own is None else own) | _inherited(environ) | {MARK}
    return {k: v for k, v in environ.items() if k not in drop}
