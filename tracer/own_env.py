"""Environment variables tracer sets in its own process, kept out of the
processes it leaves running.

tracer tunes its own libraries through the environment (OPENBLAS_NUM_THREADS
on import, MIMALLOC_PURGE_DELAY for live commands), and every child inherits
os.environ. That is harmless for a command that ends with the run, but the
lab's dockerd (`tracer lab up` may restart it) and its client-netns server
outlive it, and must not keep tracer's settings. Only keys tracer set are
dropped: a value the user exported stays, in tracer and in its children."""

from __future__ import annotations

import os
from typing import MutableMapping

# Keys set by set_default in os.environ in this process.
OWN: set[str] = set()


def set_default(key: str, value: str, environ: MutableMapping[str, str] = os.environ,
                own: set[str] | None = None) -> bool:
    """environ[key] = value unless it is already set (a user's setting wins),
    noting the key as tracer's own; whether it was set."""
    if key in environ:
        return False
    environ[key] = value
    (OWN if own is None else own).add(key)
    return True


def child_env(environ: MutableMapping[str, str] = os.environ, own: set[str] | None = None) -> dict[str, str]:
    """environ without the keys tracer set itself: for a child that outlives the run."""
    own = OWN if own is None else own
    return {k: v for k, v in environ.items() if k not in own}
