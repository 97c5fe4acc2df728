"""nf_tables trace events, in-process over netlink.

A NETLINK_NETFILTER socket joins NFNLGRP_NFTRACE (one message per rule a
packet marked with `meta nftrace set 1` matched, per chain it returned from,
per base-chain policy it met) and NFNLGRP_NFTABLES (ruleset changes, so rule
positions are re-read after a commit). pyroute2 names the constants; its
generic message classes decode far slower than the rate traces arrive, so
the few attributes of NFT_MSG_TRACE are read here with struct.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from dataclasses import dataclass

from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTABLES, NFNLGRP_NFTRACE
from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_NEWGEN, NFT_MSG_TRACE

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_NO_ENOBUFS = 5

MSG_TRACE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE
MSG_NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
NLMSG_ERROR = 2

# include/uapi/linux/netfilter/nf_tables.h: enum nft_trace_attributes
A_TABLE, A_CHAIN, A_RULE_HANDLE, A_TYPE, A_VERDICT, A_ID = 1, 2, 3, 4, 5, 6
A_LL_HEADER, A_NETWORK_HEADER, A_TRANSPORT_HEADER = 7, 8, 9
A_IIF, A_IIFTYPE, A_OIF, A_OIFTYPE, A_MARK, A_NFPROTO, A_POLICY = 10, 11, 12, 13, 14, 15, 16
A_CT_ID, A_CT_DIRECTION = 18, 19
NLA_TYPE_MASK = 0x3FFF
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2

TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
# NF_* and NFT_* verdict codes (signed 32-bit)
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")


@dataclass(slots=True)
class TraceEvent:
    """One NFT_MSG_TRACE: where in the ruleset a marked packet was, and the
    packet's headers there (before any NAT the rule itself sets up)."""

    family: int  # nfgen family of the chain's table (2 ip, 1 inet, ...)
    table: str
    chain: str
    type: str  # rule, return, policy
    handle: int  # rule handle (0 for policy/return without a rule)
    verdict: str | None
    target: str | None  # jump/goto target chain
    trace_id: int
    iif: int
    oif: int
    mark: int
    nfproto: int
    policy: str | None
    network: bytes  # the IP header as nf_tables saw it (up to 40 bytes)
    transport: bytes  # up to 20 bytes of the L4 header
    ktime: int = 0  # CLOCK_MONOTONIC when user space read it


def _attrs(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    out = {}
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(buf, start)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = buf[start + 4:start + length]
        start += (length + 3) & ~3
    return out


def _be32(value: bytes | None, signed: bool = False) -> int:
    if not value:
        return 0
    return struct.unpack(">i" if signed else ">I", value[:4])[0]


def parse_trace(buf: bytes, start: int, end: int, ktime: int = 0) -> TraceEvent:
    """One NFT_MSG_TRACE message's payload (after the nlmsghdr)."""
    family = buf[start]
    a = _attrs(buf, start + 4, end)  # after struct nfgenmsg
    verdict = target = None
    if A_VERDICT in a:
        v = _attrs(a[A_VERDICT], 0, len(a[A_VERDICT]))
        code = _be32(v.get(NFTA_VERDICT_CODE), signed=True)
        verdict = VERDICTS.get(code, str(code))
        if NFTA_VERDICT_CHAIN in v:
            target = v[NFTA_VERDICT_CHAIN].rstrip(b"\0").decode()
    policy = a.get(A_POLICY)
    return TraceEvent(
        family=family,
        table=a.get(A_TABLE, b"").rstrip(b"\0").decode(),
        chain=a.get(A_CHAIN, b"").rstrip(b"\0").decode(),
        type=TRACE_TYPES.get(_be32(a.get(A_TYPE)), "unknown"),
        handle=struct.unpack(">Q", a[A_RULE_HANDLE][:8])[0] if A_RULE_HANDLE in a else 0,
        verdict=verdict,
        target=target,
        trace_id=_be32(a.get(A_ID)),
        iif=_be32(a.get(A_IIF)),
        oif=_be32(a.get(A_OIF)),
        mark=_be32(a.get(A_MARK)),
        nfproto=_be32(a.get(A_NFPROTO)),
        policy=VERDICTS.get(_be32(policy, signed=True)) if policy else None,
        network=a.get(A_NETWORK_HEADER, b""),
        transport=a.get(A_TRANSPORT_HEADER, b""),
        ktime=ktime,
    )


# In the list read() returns, where the ruleset changed (a commit), and where
# messages were lost (the socket's buffer overflowed: a commit may have been
# among them, and the first report of a chain, which carries the headers).
NEW_GENERATION = None
OVERRUN = False


def parse_messages(buf: bytes, ktime: int = 0, out: list | None = None) -> list:
    """Trace events in a datagram, in order, with NEW_GENERATION where a
    commit (NFT_MSG_NEWGEN) was announced."""
    out = [] if out is None else out
    off = 0
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size:
            break
        if kind == MSG_TRACE:
            out.append(parse_trace(buf, off + _NLMSG.size, off + length, ktime))
        elif kind == MSG_NEWGEN:
            out.append(NEW_GENERATION)
        off += (length + 3) & ~3
    return out


def count_reports(buf: bytes) -> int:
    """How many NFT_MSG_TRACE messages a datagram holds (headers only)."""
    n = off = 0
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size:
            break
        n += kind == MSG_TRACE
        off += (length + 3) & ~3
    return n


class TraceSocket:
    """A netlink socket subscribed to nf_tables traces and ruleset commits."""

    def __init__(self, rcvbuf: int = 64 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            try:  # root may exceed rmem_max: a burst of traces must not overflow it
                self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            for group in (NFNLGRP_NFTRACE, NFNLGRP_NFTABLES):
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        except BaseException:
            self.sock.close()
            raise
        self.overruns = 0  # ENOBUFS: the kernel dropped messages for us
        self.empty = False  # the last read()/skip() found no datagram left

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, now, max_datagrams: int | None = None) -> list:
        """The datagrams waiting (non-blocking), at most ``max_datagrams``:
        trace events in order, with NEW_GENERATION where the ruleset
        changed. ``empty`` says whether the socket was found empty (every
        report sent before the call is then in the list)."""
        out: list = []
        self.empty = False
        n = 0
        while max_datagrams is None or n < max_datagrams:
            buf = self._recv()
            if buf is None:
                return out
            if buf is OVERRUN:
                out.append(OVERRUN)
                continue
            n += 1
            parse_messages(buf, now(), out)
        return out

    def _recv(self):
        """One datagram; None once the socket is empty (``empty`` set), or
        OVERRUN where the kernel dropped reports (ENOBUFS, counted)."""
        try:
            return self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            self.empty = True
            return None
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.overruns += 1
            return OVERRUN

    def skip(self, seconds: float) -> int:
        """Read and throw away the oldest waiting reports, without decoding
        them, until the socket is empty or ``seconds`` have passed (``empty``
        says which); returns how many trace reports were thrown away."""
        deadline = time.monotonic() + seconds
        self.empty = False
        dropped = 0
        while True:
            for _ in range(256):
                buf = self._recv()
                if buf is None:
                    return dropped
                if buf is not OVERRUN:
                    dropped += count_reports(buf)
            if time.monotonic() >= deadline:
                return dropped

    def close(self) -> None:
        self.sock.close()
