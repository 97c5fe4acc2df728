"""Links and qdiscs of the calling thread's netns, read with rtnetlink.

What the inventory needs of each link (RTM_GETLINK): its index, name,
whether it is up, its kind (veth, bridge...), its master (a bridge port's
bridge) and its peer's index (a veth's IFLA_LINK); and whether any clsact
qdisc is there at all (RTM_GETQDISC), before a start looks for the clsact
filters a killed tracer left. Read with a plain netlink socket: the whole
of pyroute2 is imported by its package's __init__, ~80-120 ms of CPU on
every start that only needs this (docs/benchmarks.md, session 20).
pyroute2 stays for the clsact fallback itself and rule tracing.

The socket belongs to the netns of the thread that opens it (as pyroute2's
does): callers move the thread first (tracer/kernel/netns.py).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
TCA_KIND = 1
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP = 0x1, 0x2, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO = 3, 5, 10, 18
IFLA_INFO_KIND = 1
IFF_UP = 0x1
AF_UNSPEC = 0

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTA = struct.Struct("=HH")  # len, type
_ERR = struct.Struct("=i")
_TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info


@dataclass(frozen=True)
class LinkInfo:
    """The few netlink facts about one link that the inventory needs."""

    ifindex: int
    name: str
    up: bool
    kind: str | None = None  # IFLA_INFO_KIND: 'veth', 'bridge', ... (None for physical)
    master: int | None = None  # IFLA_MASTER: the bridge a port is enslaved to
    link: int | None = None  # IFLA_LINK: a veth's peer ifindex (in the peer's netns)


class LinkNotFound(LookupError):
    """RTM_GETLINK by name: no such link here (ENODEV)."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, at: int, end: int) -> dict[int, bytes]:
    """The rtattrs in data[at:end] by type (the nested flag cleared)."""
    out = {}
    while at + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, at)
        if length < _RTA.size or at + length > end:
            break
        out[kind & 0x3FFF] = data[at + _RTA.size : at + length]
        at += _align(length)
    return out


def _text(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack_from("=I", raw)[0] if raw is not None and len(raw) >= 4 else None


def parse_link(data: bytes, at: int, end: int) -> LinkInfo:
    """One RTM_NEWLINK message's payload (after its nlmsghdr) as a LinkInfo."""
    _, _, index, flags, _ = _IFINFO.unpack_from(data, at)
    attrs = _attrs(data, at + _IFINFO.size, end)
    kind = None
    if IFLA_LINKINFO in attrs:
        info = attrs[IFLA_LINKINFO]
        kind = _text(_attrs(info, 0, len(info)).get(IFLA_INFO_KIND))
    return LinkInfo(ifindex=index, name=_text(attrs.get(IFLA_IFNAME)) or "", up=bool(flags & IFF_UP), kind=kind,
                    master=_u32(attrs.get(IFLA_MASTER)), link=_u32(attrs.get(IFLA_LINK)))


def parse_qdisc_kind(data: bytes, at: int, end: int) -> str:
    """One RTM_NEWQDISC message's payload: the qdisc's kind ("clsact", "noqueue"...)."""
    return _text(_attrs(data, at + _TCMSG.size, end).get(TCA_KIND)) or ""


_PARSERS = {RTM_NEWLINK: parse_link, RTM_NEWQDISC: parse_qdisc_kind}


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """The netlink messages of one datagram, as (type, flags, seq, where its
    payload starts, where it ends); a length shorter than a header or past
    the datagram's end stops the walk."""
    at = 0
    while at + _NLMSG.size <= len(data):
        length, kind, flags, seq, _ = _NLMSG.unpack_from(data, at)
        if length < _NLMSG.size or at + length > len(data):
            return
        yield kind, flags, seq, at + _NLMSG.size, at + length
        at += _align(length)


def parse_messages(data: bytes, seq: int, answer: int = RTM_NEWLINK) -> tuple[list, bool]:
    """The answers (links, or qdisc kinds for RTM_NEWQDISC) in one datagram
    of answers to request ``seq``, and whether the answer is over
    (NLMSG_DONE, or the single answer of a non-dump request); an error
    message raises OSError with its errno."""
    parse = _PARSERS[answer]
    answers, done = [], False
    for kind, flags, mseq, body, end in messages(data):
        if mseq != seq:
            continue
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            code = -_ERR.unpack_from(data, body)[0]
            if code:
                raise OSError(code, os.strerror(code))
            done = True  # an ack
        elif kind == answer:
            answers.append(parse(data, body, end))
            if not flags & NLM_F_MULTI:  # one answer, not a dump
                done = True
    return answers, done


def request(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One netlink message: its header, then ``payload``."""
    return _NLMSG.pack(_NLMSG.size + len(payload), kind, flags, seq, 0) + payload


def _link_request(flags: int, seq: int, name: str | None = None) -> bytes:
    payload = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0)
    if name is not None:
        raw = name.encode() + b"\0"
        payload += _RTA.pack(_RTA.size + len(raw), IFLA_IFNAME) + raw + b"\0" * (_align(len(raw)) - len(raw))
    return request(RTM_GETLINK, flags, seq, payload)


def _ask(message: bytes, seq: int, answer: int = RTM_NEWLINK) -> list:
    """Every answer of the kernel to ``message`` (request ``seq``)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.sendto(message, (0, 0))
        answers: list = []
        done = False
        while not done:
            got, done = parse_messages(sock.recv(1 << 16), seq, answer)
            answers += got
        return answers


def links() -> list[LinkInfo]:
    """Every link of this thread's netns."""
    return _ask(_link_request(NLM_F_REQUEST | NLM_F_DUMP, 1), 1)


def link_named(name: str) -> LinkInfo:
    """The link called ``name`` in this thread's netns; LinkNotFound if none."""
    try:
        found = _ask(_link_request(NLM_F_REQUEST, 2, name), 2)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise LinkNotFound(name) from None
        raise
    if not found:
        raise LinkNotFound(name)
    return found[0]


def clsact_present() -> bool:
    """Whether any link of this thread's netns has a clsact qdisc."""
    dump = request(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, 3, _TCMSG.pack(AF_UNSPEC, 0, 0, 0, 0))
    return "clsact" in _ask(dump, 3, RTM_NEWQDISC)
