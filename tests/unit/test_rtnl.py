"""tracer/kernel/rtnl.py: RTM_GETLINK answers parsed, and read back
from this machine's own links as pyroute2 (which it replaces on the start
path) reads them. Reading links needs no privilege."""

from __future__ import annotations

import struct

import pytest

from tracer.kernel import rtnl as rl


def _rta(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _newlink(seq: int, index: int, flags: int, attrs: bytes, multi: bool = True) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), rl.RTM_NEWLINK, 0x2 if multi else 0, seq, 0) + body


def _done(seq: int) -> bytes:
    return struct.pack("=IHHII", 20, rl.NLMSG_DONE, 0x2, seq, 0) + struct.pack("=i", 0)


def test_a_dump_s_messages_parse_into_links():
    veth = _newlink(1, 7, rl.IFF_UP, _rta(rl.IFLA_IFNAME, b"veth0\0") + _rta(rl.IFLA_MASTER, struct.pack("=I", 5))
                    + _rta(rl.IFLA_LINK, struct.pack("=I", 6)) + _rta(rl.IFLA_LINKINFO | 0x8000, _rta(rl.IFLA_INFO_KIND, b"veth\0")))
    down = _newlink(1, 9, 0, _rta(rl.IFLA_IFNAME, b"eth1\0"))
    links, done = rl.parse_messages(veth + down, 1)
    assert not done, "a dump ends with NLMSG_DONE"
    assert links == [rl.LinkInfo(7, "veth0", True, "veth", 5, 6), rl.LinkInfo(9, "eth1", False)]
    assert rl.parse_messages(_done(1), 1) == ([], True)
    assert rl.parse_messages(veth, 2) == ([], False), "another request's answer is not this one's"


def test_a_single_answer_ends_the_request_and_an_error_raises():
    links, done = rl.parse_messages(_newlink(2, 1, rl.IFF_UP, _rta(rl.IFLA_IFNAME, b"lo\0"), multi=False), 2)
    assert done and links == [rl.LinkInfo(1, "lo", True)]
    err = struct.pack("=IHHII", 36, rl.NLMSG_ERROR, 0, 2, 0) + struct.pack("=i", -19) + b"\0" * 16
    with pytest.raises(OSError) as exc:
        rl.parse_messages(err, 2)
    assert exc.value.errno == 19
    truncated = _newlink(1, 3, 0, _rta(rl.IFLA_IFNAME, b"x\0"))[:-2]
    assert rl.parse_messages(truncated, 1) == ([], False), "a message past the datagram's end is not read"


def test_this_machine_s_links_as_pyroute2_reads_them():
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        theirs = {m["index"]: (m.get_attr("IFLA_IFNAME"), bool(m["flags"] & rl.IFF_UP), m.get_attr("IFLA_MASTER"),
                               m.get_attr("IFLA_LINK"),
                               (m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") if m.get_attr("IFLA_LINKINFO")
                                else None)) for m in ipr.get_links()}
    ours = {link.ifindex: (link.name, link.up, link.master, link.link, link.kind) for link in rl.links()}
    assert ours == theirs
    assert rl.link_named("lo").ifindex == 1
    with pytest.raises(rl.LinkNotFound):
        rl.link_named("trc-no-such-0")


def test_qdisc_kinds_parse_and_this_machine_s_answer():
    tc = struct.pack("=BxxxiIII", 0, 4, 0xFFFF0000, 0xFFFFFFF1, 1) + _rta(rl.TCA_KIND, b"clsact\0")
    msg = struct.pack("=IHHII", 16 + len(tc), rl.RTM_NEWQDISC, 0x2, 3, 0) + tc
    assert rl.parse_messages(msg + _done(3), 3, rl.RTM_NEWQDISC) == (["clsact"], True)
    assert rl.parse_messages(msg, 3) == ([], False), "a qdisc is not a link"
    assert isinstance(rl.clsact_present(), bool)
