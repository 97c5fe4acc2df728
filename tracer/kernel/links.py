"""Attachments that own their kernel object and detach on close.

tcx and netfilter links are BPF links: the kernel removes them when the last fd
closes, so even a SIGKILLed tracer leaves nothing behind. clsact filters are
not: they outlive the process, which is why ours carry a name prefix and
``sweep_clsact_leftovers`` removes them (only them) at start.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import socket
import threading
from contextlib import contextmanager
from typing import Iterator, Literal

from tracer.errors import MissingCapability, TracerError
from tracer.kernel import bpf_syscall as sc, rtnl
from tracer.kernel.netns import in_fresh_netns, in_netns

Direction = Literal["ingress", "egress"]
FILTER_PREFIX = "tracer"
CLSACT_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
TCX_ATTACH = {"ingress": sc.BPF_TCX_INGRESS, "egress": sc.BPF_TCX_EGRESS}
ETH_P_ALL = 0x0003


class TargetGone(TracerError):
    """The interface or network namespace went away before it was attached."""


class PriorityTaken(TracerError):
    """A netfilter priority another hook holds (EBUSY): the caller may try
    another one (tracer/sensors/netfilter.py steps away from NAT)."""


def link_error(exc: OSError, kind: str, *, hook: str | None = None, priority: int | None = None,
               ifindex: int | None = None, netns: str | None = None) -> TracerError:
    """Turn an errno from attaching into a message a user can act on; the
    error keeps the errno (``.errno``)."""
    error = _link_error(exc.errno, kind, hook, priority, ifindex, f" in netns {netns}" if netns else "", netns)
    error.errno = exc.errno
    return error


def _link_error(err: int | None, kind: str, hook, priority, ifindex, where: str, netns) -> TracerError:
    if err == errno.EBUSY and kind == "netfilter":
        return PriorityTaken(
            f"netfilter priority {priority} on {hook} is already taken by another hook{where}; "
            f"pick a neighbouring priority (e.g. {priority - 1 if priority is not None else '?'} "
            f"or {priority + 1 if priority is not None else '?'})"
        )
    if err in (errno.EPERM, errno.EACCES):
        return MissingCapability(f"attaching a {kind} link was refused ({errno.errorcode[err]}): "
                                 "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    if err == errno.ENODEV or (err == errno.ENXIO and ifindex is not None):
        return TargetGone(f"no such interface: ifindex {ifindex}{where}")
    if err == errno.EINVAL:
        need = {"netfilter": "netfilter BPF links (Linux >= 6.4)", "tcx": "tcx links (Linux >= 6.6)"}.get(kind, f"{kind} links")
        return MissingCapability(f"kernel does not support {need}, or the program type does not match (EINVAL)")
    if err == errno.ENOENT and netns:
        return TargetGone(f"no such network namespace: {netns}")
    return TracerError(f"attaching a {kind} link failed: {os.strerror(err or 0)} (errno {err})")


class _Detaching:
    """Detach on close, at the end of a with-block, and when garbage collected
    (a dropped reference must not leave a program attached)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may be gone
            pass


class _FdLink(_Detaching):
    """Owns one link fd; closing it detaches."""

    kind = "bpf"

    def __init__(self) -> None:
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.kind} link is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def info(self) -> sc.LinkInfo:
        return sc.link_info_by_fd(self.fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)



class NetfilterLink(_FdLink):
    """A netfilter hook of one family (``pf``: NFPROTO_IPV4 or NFPROTO_IPV6)
    at an exact priority, in ``netns`` (default: ours)."""

    kind = "netfilter"

    def __init__(self, prog_fd: int, hook: str, priority: int, netns: str | None = None,
                 pf: int = sc.NFPROTO_IPV4) -> None:
        super().__init__()
        if hook not in sc.NF_HOOKS:
            raise TracerError(f"unknown netfilter hook {hook!r}; one of {', '.join(sc.NF_HOOKS)}")
        self.hook, self.priority, self.netns, self.pf = hook, priority, netns, pf
        attr = sc.netfilter_link_attr(prog_fd, sc.NF_HOOKS[hook], priority, pf=pf)
        try:
            with in_netns(netns):  # the link binds to the creating thread's netns
                self._fd = sc.link_create(attr)
        except FileNotFoundError:
            raise TracerError(f"no such network namespace: {netns}") from None
        except OSError as exc:
            raise link_error(exc, "netfilter", hook=hook, priority=priority, netns=netns) from None

    def __repr__(self) -> str:
        return (f"NetfilterLink(hook={self.hook}, pf={self.pf}, priority={self.priority}, netns={self.netns}, "
                f"fd={self._fd})")


class TcxLink(_FdLink):
    """A tcx attachment (ingress/egress) on ``ifindex`` as seen from ``netns``."""

    kind = "tcx"

    def __init__(self, prog_fd: int, ifindex: int, direction: Direction, netns: str | None = None) -> None:
        super().__init__()
        if direction not in TCX_ATTACH:
            raise TracerError(f"direction must be ingress or egress, not {direction!r}")
        self.ifindex, self.direction, self.netns = ifindex, direction, netns
        attr = sc.tcx_link_attr(prog_fd, ifindex, TCX_ATTACH[direction])
        try:
            with in_netns(netns):  # target_ifindex resolves in the calling thread's netns
                self._fd = sc.link_create(attr)
        except FileNotFoundError:
            raise TracerError(f"no such network namespace: {netns}") from None
        except OSError as exc:
            raise link_error(exc, "tcx", ifindex=ifindex, netns=netns) from None

    def __repr__(self) -> str:
        return f"TcxLink(ifindex={self.ifindex}, {self.direction}, netns={self.netns}, fd={self._fd})"


# --- clsact fallback ------------------------------------------------------------

_seq = itertools.count(1)


def default_filter_name() -> str:
    # the pid lets a sweep tell a live run's filters from a dead one's
    return f"{FILTER_PREFIX}_{os.getpid()}_{next(_seq)}"


@contextmanager
def _in_named_netns(netns: str | None) -> Iterator[None]:
    """in_netns, a netns that does not exist one clear TracerError."""
    try:
        with in_netns(netns):
            yield
    except FileNotFoundError:
        raise TracerError(f"no such network namespace: {netns}") from None


def _ipr(netns: str | None):
    from pyroute2 import IPRoute  # slow import; only the clsact path needs it

    with _in_named_netns(netns):  # the netlink socket stays in the netns it was made in
        return IPRoute()


def _bpf_filter_name(msg) -> str | None:
    if msg.get_attr("TCA_KIND") != "bpf":
        return None
    opts = msg.get_attr("TCA_OPTIONS")
    return opts.get_attr("TCA_BPF_NAME") if opts is not None else None


def _filters(ipr, ifindex: int, parent: int) -> list:
    # the dump also yields a per-prio header row with no options; skip it
    return [f for f in ipr.get_filters(index=ifindex, parent=parent) if f.get_attr("TCA_OPTIONS") is not None]


def _del_filter(ipr, ifindex: int, parent: int, msg) -> None:
    info = msg["info"]
    ipr.tc("del-filter", "bpf", ifindex, handle=msg["handle"], parent=parent,
           prio=info >> 16, protocol=socket.ntohs(info & 0xFFFF))


def _has_clsact(ipr, ifindex: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


# clsact qdiscs this process added, per (netns, ifindex): the ingress and the
# egress filter share one, and whichever of them closes last removes it.
_OUR_QDISCS: set[tuple[str | None, int]] = set()
_QDISC_LOCK = threading.Lock()


class ClsactFilter(_Detaching):
    """A direct-action ``bpf`` filter under clsact, named so a sweep can find it."""

    kind = "clsact"

    def __init__(self, prog_fd: int, ifindex: int, direction: Direction, netns: str | None = None,
                 name: str | None = None) -> None:
        if direction not in CLSACT_PARENT:
            raise TracerError(f"direction must be ingress or egress, not {direction!r}")
        name = name or default_filter_name()
        if not name.startswith(FILTER_PREFIX):
            raise TracerError(f"clsact filter names must start with {FILTER_PREFIX!r} so sweeps find them")
        self.ifindex, self.direction, self.netns, self.name = ifindex, direction, netns, name
        self.parent = CLSACT_PARENT[direction]
        self.created_qdisc = False
        self._closed = True
        self._lock = threading.Lock()
        from pyroute2.netlink.exceptions import NetlinkError

        ipr = _ipr(netns)
        try:
            with _QDISC_LOCK:
                if not _has_clsact(ipr, ifindex):
                    ipr.tc("add", "clsact", ifindex)
                    self.created_qdisc = True
                    _OUR_QDISCS.add((netns, ifindex))
            ipr.tc("add-filter", "bpf", ifindex, ":1", fd=prog_fd, name=name, parent=self.parent,
                   classid=1, direct_action=True)
            self._closed = False
        except NetlinkError as exc:
            if self.created_qdisc:
                _quiet(lambda: ipr.tc("del", "clsact", ifindex))
                _OUR_QDISCS.discard((netns, ifindex))
            raise link_error(OSError(exc.code, str(exc)), "clsact", ifindex=ifindex, netns=netns) from None
        finally:
            ipr.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            ipr = _ipr(self.netns)
        except TracerError:
            return  # netns gone: so is the filter
        try:
            for f in _filters(ipr, self.ifindex, self.parent):
                if _bpf_filter_name(f) == self.name:
                    _del_filter(ipr, self.ifindex, self.parent, f)
            with _QDISC_LOCK:
                ours = (self.netns, self.ifindex) in _OUR_QDISCS
                if ours and not any(_filters(ipr, self.ifindex, p) for p in CLSACT_PARENT.values()):
                    ipr.tc("del", "clsact", self.ifindex)
                    _OUR_QDISCS.discard((self.netns, self.ifindex))
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):  # interface already gone
                raise
        finally:
            ipr.close()


    def __repr__(self) -> str:
        return f"ClsactFilter({self.name}, ifindex={self.ifindex}, {self.direction}, netns={self.netns})"


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:
        pass


def _pid_alive(name: str) -> bool:
    parts = name.split("_")
    if len(parts) < 2 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_clsact_leftovers(netns: str | None = None, include_live: bool = False) -> int:
    """Remove clsact ``bpf`` filters named ``tracer*`` on every interface of ``netns``.

    Filters whose name carries the pid of another live process belong to a
    running tracer and are kept unless ``include_live``. Returns how many were removed.
    """
    removed = 0
    # Most starts: no clsact anywhere (tcx leaves none), so nothing to look
    # through, and no pyroute2 import (~0.1 s of CPU) for it.
    with _in_named_netns(netns):
        if not rtnl.clsact_present():
            return 0
    ipr = _ipr(netns)
    try:
        for link in ipr.get_links():
            idx = link["index"]
            removed_here = 0
            for parent in CLSACT_PARENT.values():
                for f in _filters(ipr, idx, parent):
                    name = _bpf_filter_name(f)
                    if not name or not name.startswith(FILTER_PREFIX):
                        continue
                    if not include_live and _pid_alive(name):
                        continue
                    _del_filter(ipr, idx, parent, f)
                    removed_here += 1
            # A clsact that held only our filters was almost surely added by
            # the killed run; an empty clsact does nothing, so remove it.
            if removed_here and not any(_filters(ipr, idx, p) for p in CLSACT_PARENT.values()):
                ipr.tc("del", "clsact", idx)
            removed += removed_here
    finally:
        ipr.close()
    return removed


# --- choosing tcx or clsact -----------------------------------------------------


@functools.cache
def tcx_available() -> bool:
    """Probe once: attach a do-nothing program to lo ingress in a private netns."""
    try:
        prog = sc.load_trivial_prog(sc.BPF_PROG_TYPE_SCHED_CLS, ret=0, name=b"tracer_tcxprobe")
    except OSError:
        return False
    try:
        with in_fresh_netns():
            os.close(sc.link_create(sc.tcx_link_attr(prog, 1, sc.BPF_TCX_INGRESS)))
        return True
    except OSError:
        return False
    finally:
        os.close(prog)


def attach_tc(prog_fd: int, ifindex: int, direction: Direction, netns: str | None = None,
              mode: Literal["auto", "tcx", "clsact"] = "auto", name: str | None = None) -> TcxLink | ClsactFilter:
    """Attach a tc program: tcx when the kernel has it (nothing outlives us), else clsact."""
    if mode == "tcx" or (mode == "auto" and tcx_available()):
        return TcxLink(prog_fd, ifindex, direction, netns)
    if mode in ("clsact", "auto"):
        return ClsactFilter(prog_fd, ifindex, direction, netns, name=name)
    raise TracerError(f"unknown tc attach mode {mode!r}; one of auto, tcx, clsact")
