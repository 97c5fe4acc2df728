"""Run a block of code inside another network namespace.

Netfilter links bind to the netns of the thread that creates them, and tcx's
``target_ifindex`` and netlink sockets resolve there too, so we switch only the
calling thread (``setns`` is per thread) and always switch back.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread (only) into the namespace open at fd."""
    # os.setns only exists from Python 3.12; Debian 12 ships 3.11.
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(netns: str) -> str:
    """Accept a path (/proc/PID/ns/net, /run/netns/NAME) or a bare `ip netns` name."""
    if "/" in netns:
        return netns
    return f"/run/netns/{netns}"


def netns_inode(path: str | None = None) -> int:
    """Inode number identifying a netns (the current thread's when path is None)."""
    return os.stat(netns_path(path) if path else "/proc/thread-self/ns/net").st_ino


@contextmanager
def in_netns(path: str | None) -> Iterator[None]:
    """Switch this thread into ``path``'s netns for the block; ``None`` is a no-op."""
    if path is None:
        yield
        return
    target = os.open(netns_path(path), os.O_RDONLY | os.O_CLOEXEC)
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        setns(target)
        try:
            yield
        finally:
            setns(original)
    finally:
        os.close(target)
        os.close(original)


@contextmanager
def in_fresh_netns() -> Iterator[None]:
    """Run the block in a brand-new, unnamed netns on this thread.

    Probes attach there: nothing touches the host's hooks, and the netns (with
    anything left in it) is freed once we switch back and drop our references.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            yield
        finally:
            setns(original)
    finally:
        os.close(original)
