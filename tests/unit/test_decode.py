"""Raw ring-buffer records -> Arrow event table."""

from __future__ import annotations

import threading

import numpy as np

from tracer import addresses, events
from tracer.decode import DecodeContext, decode
from tracer.places import Place

HOST_NS = 4026531840
CT_NS = 4026532500


def ip(text: str) -> np.ndarray:
    """The 16 bytes the kernel records (IPv4-mapped for IPv4)."""
    return np.frombuffer(addresses.packed(text), np.uint8)


def raw(rows: list[dict]) -> np.ndarray:
    out = events.empty_raw(len(rows))
    for i, row in enumerate(rows):
        for key, value in row.items():
            out[i][key] = value
    return out


def ctx() -> DecodeContext:
    c = DecodeContext(host_netns=HOST_NS, drop_reasons={12: "NETFILTER_DROP"}, boot_offset_ns=1_000)
    c.book.places[(HOST_NS, 7)] = Place("trc-host", "external", HOST_NS)
    c.book.places[(HOST_NS, 9)] = Place("veth1", "veth", HOST_NS, "id-a", "web")
    # Two containers whose eth0 have the same ifindex in their own netns.
    c.book.container_places[2] = [(Place("eth0", "container", CT_NS, "id-a", "web"), ("172.17.0.2",)),
                             (Place("eth0", "container", CT_NS + 1, "id-b", "db"), ("172.17.0.3",))]
    return c


def test_columns_decode_codes_addresses_and_places():
    hook = events.HOOKS.index
    table = decode(raw([
        {"ktime_ns": 10, "hook": hook("tc_ingress"), "ifindex": 7, "src_ip": ip("198.18.0.2"), "dst_ip": ip("198.18.0.1"),
         "src_port": 40000, "dst_port": 8000, "protocol": 6, "packet_id": 1, "tcp_flags": 2},
        {"ktime_ns": 20, "hook": hook("nf_prerouting"), "nat_stage": 2, "direction": 1, "ifindex": 7, "netns": HOST_NS,
         "src_ip": ip("198.18.0.2"), "dst_ip": ip("172.17.0.2"), "protocol": 6, "packet_id": 1, "flow_id": 99},
        {"ktime_ns": 30, "hook": hook("tc_ingress"), "ifindex": 2, "flags": events.FLAG_IN_CONTAINER_NS,
         "src_ip": ip("198.18.0.2"), "dst_ip": ip("172.17.0.3"), "protocol": 6, "packet_id": 1},
        {"ktime_ns": 40, "hook": hook("drop"), "ifindex": 9, "drop_reason": 12, "protocol": 17, "packet_id": 2},
    ]), ctx())
    d = table.drop_columns(["time"]).to_pydict()
    assert table.schema == events.EVENT_SCHEMA
    assert d["hook"] == ["tc_ingress", "nf_prerouting", "tc_ingress", "drop"]
    assert d["nat_stage"] == [None, "after", None, None]
    assert d["direction"] == [None, "original", None, None]
    assert d["src_ip"][0] == "198.18.0.2" and d["dst_ip"][1] == "172.17.0.2"
    assert d["src_port"][0] == 40000 and d["dst_port"][0] == 8000
    assert d["ifname"] == ["trc-host", "trc-host", "eth0", "veth1"]
    assert d["if_role"] == ["external", "external", "container", "veth"]
    # The shared ifindex is told apart by the container's address.
    assert d["container_name"] == [None, None, "db", "web"]
    assert d["netns"] == [HOST_NS, HOST_NS, CT_NS + 1, HOST_NS]
    assert d["drop_reason"] == [None, None, None, "NETFILTER_DROP"]
    assert d["protocol"] == ["tcp", "tcp", "tcp", "udp"]
    assert table.column("time").cast("int64").to_pylist() == [1_010, 1_020, 1_030, 1_040]


def test_unknown_interface_and_reason_still_decode():
    table = decode(raw([{"hook": events.HOOKS.index("drop"), "ifindex": 55, "drop_reason": 999, "protocol": 47}]), ctx())
    d = table.drop_columns(["time"]).to_pydict()
    assert d["ifname"] == [None] and d["if_role"] == ["other"]
    assert d["drop_reason"] == ["REASON_999"] and d["protocol"] == ["47"]


def test_empty_batch_is_an_empty_table():
    assert decode(events.empty_raw(), ctx()).num_rows == 0


def test_ifindex_zero_is_not_looked_up():
    # Drop rows of an skb without a device carry ifindex 0: no interface to
    # ask the host about (a netlink dump per poll), still an 'other' place.
    asked = []
    c = ctx()
    c.book.host_interfaces = lambda: asked.append(len(asked)) or []  # the host's interfaces, asked for
    table = decode(raw([{"hook": events.HOOKS.index("drop"), "ifindex": 0, "drop_reason": 12},
                        {"hook": events.HOOKS.index("tc_ingress"), "ifindex": 55}]), c)
    d = table.to_pydict()
    assert len(asked) == 1  # for ifindex 55 only
    assert d["ifname"] == [None, None] and d["if_role"] == ["other", "other"]


def test_unknown_ifindex_is_asked_once_until_places_change():
    # Each ask re-reads every host link: an interface the host cannot name
    # (gone already) must not cost that on every poll.
    asked = []
    c = ctx()
    c.book.host_interfaces = lambda: asked.append(len(asked)) or []  # the host's interfaces, asked for
    row = [{"hook": events.HOOKS.index("tc_ingress"), "ifindex": 77}]
    decode(raw(row), c)
    decode(raw(row), c)
    assert len(asked) == 1
    c.book.rebuild([], [], [], threading.Lock())  # what TraceSession does when the host changes
    decode(raw(row), c)
    assert len(asked) == 2


def test_factorize_by_range_and_by_hash_agree():
    """Small integer ranges are factorized by a count per value, the rest by
    Arrow's hash: both give each row its distinct value back."""
    from tracer.decode import _SMALL_RANGE, _factorize

    rng = np.random.default_rng(3)
    cases = [np.full(50, -1, np.int64), np.array([6, 17, 6, 1, 17], np.uint8), rng.integers(-1, 300, 400),
             rng.integers(0, 1 << 40, 300, dtype=np.uint64), np.array([0, _SMALL_RANGE], np.int64), np.zeros(0, np.int64),
             np.array([HOST_NS << 32 | 7, HOST_NS << 32 | 9, HOST_NS << 32 | 7], np.uint64),  # keys past 2^63
             np.array([-5, -1, -5, 3], np.int64), np.array([250, 255, 250], np.uint8)]
    for values in cases:
        distinct, index = _factorize(values)
        assert index.dtype == np.int32
        assert np.array_equal(distinct[index], values) and distinct.dtype == values.dtype
        assert len(distinct) == len(np.unique(values))


def test_dictionary_columns_null_where_the_entry_is_none():
    from tracer.decode import _dict_column, code_column

    column = code_column(np.array([2, 0, 1, 7, 0], np.uint8), events.DIRECTIONS)  # 7: past the table, entry 0
    column.validate(full=True)
    assert column.to_pylist() == ["reply", None, "original", None, None]
    for names in ([None, "a", None], [None, None], ["x", "y"], [None, "a"]):
        indices = np.array([0, 1, 2, 1], np.int64) % len(names)
        got = _dict_column(indices, names)
        got.validate(full=True)
        assert got.to_pylist() == [names[i] for i in indices]
