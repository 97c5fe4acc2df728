"""BTF reader on hand-made blobs: no kernel, no root."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from pytest import MonkeyPatch

from tracer.errors import MissingCapability
from tracer.kernel import btf as btf_mod
from tracer.kernel.btf import (
    ARRAY, CONST, DATASEC, DECL_TAG, ENUM, ENUM64, FLOAT, FUNC, FUNC_PROTO, FWD, INT,
    PTR, RESTRICT, STRUCT, TYPE_TAG, TYPEDEF, UNION, VAR, VOLATILE,
    BitfieldOffsetError, Btf, Member, has_type, kernel_btf, resolve_offsets,
)


class Encoder:
    """Writes BTF the way pahole does: header, type section, string section."""

    def __init__(self, endian: str = "<") -> None:
        self.e = endian
        self.strings = bytearray(b"\0")
        self.offsets: dict[str, int] = {"": 0}
        self.types: list[bytes] = []

    def s(self, name: str) -> int:
        if name not in self.offsets:
            self.offsets[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        return self.offsets[name]

    def add(self, kind: int, name: str = "", size_or_type: int = 0, vlen: int = 0,
            trailer: bytes = b"", kind_flag: bool = False) -> int:
        info = kind << 24 | vlen | (1 << 31 if kind_flag else 0)
        self.types.append(struct.pack(self.e + "III", self.s(name), info, size_or_type) + trailer)
        return len(self.types)

    def u32(self, *values: int) -> bytes:
        return struct.pack(f"{self.e}{len(values)}I", *values)

    def int_(self, name: str, size: int, bits: int | None = None, offset: int = 0) -> int:
        bits = 8 * size if bits is None else bits
        return self.add(INT, name, size, trailer=self.u32(offset << 16 | bits))

    def ptr(self, target: int) -> int:
        return self.add(PTR, "", target)

    def array(self, elem: int, nelems: int, index_type: int = 1) -> int:
        return self.add(ARRAY, "", 0, trailer=self.u32(elem, index_type, nelems))

    def composite(self, name: str, size: int, members: list[tuple[str, int, int, int]],
                  union: bool = False, kind_flag: bool = False) -> int:
        """members: (name, type id, bit offset, bitfield size)."""
        body = b"".join(
            self.u32(self.s(m), t, (bits << 24 | off) if kind_flag else off)
            for m, t, off, bits in members
        )
        return self.add(UNION if union else STRUCT, name, size, len(members), body, kind_flag)

    def enum(self, name: str, values: dict[str, int], signed: bool = False) -> int:
        body = b"".join(struct.pack(self.e + "Ii", self.s(k), v) for k, v in values.items())
        return self.add(ENUM, name, 4, len(values), body, signed)

    def enum64(self, name: str, values: dict[str, int]) -> int:
        body = b"".join(
            self.u32(self.s(k), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF) for k, v in values.items()
        )
        return self.add(ENUM64, name, 8, len(values), body)

    def build(self) -> bytes:
        types = b"".join(self.types)
        header = struct.pack(self.e + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types),
                             len(types), len(self.strings))
        return header + types + bytes(self.strings)


def sample(endian: str = "<") -> Encoder:
    """A miniature of the kernel types tracer reads, plus one of every kind."""
    b = Encoder(endian)
    u32 = b.int_("unsigned int", 4)                                   # 1
    u8 = b.int_("unsigned char", 1)                                   # 2
    u16 = b.int_("short unsigned int", 2)                             # 3
    ulong = b.int_("long unsigned int", 8)                            # 4
    be16 = b.add(TYPEDEF, "__be16", u16)
    cv_u32 = b.add(CONST, "", b.add(VOLATILE, "", u32))
    # Kinds the reader only has to step over correctly.
    proto = b.add(FUNC_PROTO, "", u32, 2, b.u32(b.s("a"), u32, b.s("b"), u8))
    b.add(FUNC, "do_thing", proto)
    var = b.add(VAR, "some_var", u32, trailer=b.u32(1))
    b.add(DATASEC, ".data", 4, 1, b.u32(var, 0, 4))
    b.add(FLOAT, "double", 8)
    b.add(DECL_TAG, "tag", var, trailer=b.u32(0xFFFFFFFF))
    b.add(TYPE_TAG, "user", u32)
    b.add(RESTRICT, "", u32)
    b.add(FWD, "net_device")
    b.enum64("big", {"LOW": 1, "HIGH": 1 << 40})
    b.enum("skb_drop_reason", {"SKB_NOT_DROPPED_YET": 0, "SKB_DROP_REASON_NETFILTER_DROP": 12})
    b.enum("signed_e", {"NEG": -3, "POS": 5}, signed=True)

    net = b.composite("net", 16, [("ifindex_base", u32, 0, 0), ("inum", cv_u32, 32, 0)])
    dev = b.composite("net_device", 40, [
        ("ifindex", u32, 0, 0), ("name", b.array(u8, 16), 32, 0),
        ("nd_net", b.add(TYPEDEF, "possible_net_t",
                          b.composite("", 8, [("net", b.ptr(net), 0, 0)])), 192, 0),
        ("pad", b.array(ulong, 2), 256, 0),
    ])
    # sk_buff-like: dev and len live inside anonymous unions/structs.
    inner = b.composite("", 16, [("next", b.ptr(0), 0, 0), ("dev", b.ptr(dev), 64, 0)])
    anon_union = b.composite("", 16, [("", inner, 0, 0), ("rbnode", ulong, 0, 0)], union=True)
    headers = b.composite("", 4, [("protocol", be16, 0, 0), ("network_header", u16, 16, 0)])
    b.composite("sk_buff", 40, [
        ("", anon_union, 0, 0),
        ("len", u32, 128, 0),
        ("pkt_type", u8, 160, 3), ("ignore_df", u8, 163, 1), ("flag", u16, 164, 12),
        ("", b.add(CONST, "", headers), 192, 0),
        ("head", b.ptr(u8), 256, 0),
    ], kind_flag=True)
    # nf_conn-like nested arrays of named structs.
    man = b.composite("nf_conntrack_man", 8, [("u3", u32, 0, 0), ("l3num", u16, 32, 0)])
    dst = b.composite("", 8, [("u3", u32, 0, 0), ("protonum", u8, 32, 0), ("dir", u8, 40, 0)])
    tuple_ = b.composite("nf_conntrack_tuple", 16, [("src", man, 0, 0), ("dst", dst, 64, 0)])
    thash = b.composite("nf_conntrack_tuple_hash", 24, [("node", ulong, 0, 0), ("tuple", tuple_, 64, 0)])
    conn = b.composite("nf_conn", 64, [
        ("use", u32, 0, 0), ("tuplehash", b.array(thash, 2), 64, 0), ("status", ulong, 448, 0),
    ])
    b.add(TYPEDEF, "conn_t", b.add(CONST, "", b.add(VOLATILE, "", conn)))
    # Pre-kind_flag bitfields: the INT's encoding carries offset and width.
    b.composite("old_bits", 4, [("a", b.int_("unsigned int", 4, bits=5), 0, 0),
                                ("b", b.int_("unsigned int", 4, bits=7, offset=2), 8, 0)])
    return b


@pytest.fixture(scope="module")
def btf() -> Btf:
    return Btf.from_bytes(sample().build())


def test_every_kind_is_skipped_and_indexed(btf: Btf) -> None:
    assert btf.sizeof("nf_conn") == 64  # defined after one type of every kind
    assert btf.enum_values("big") == {"LOW": 1, "HIGH": 1 << 40}
    assert "sk_buff" in btf and "possible_net_t" in btf and "do_thing" not in btf  # FUNCs are not indexed


def test_plain_struct(btf: Btf) -> None:
    m = btf.member("net_device", "ifindex")
    assert m == Member("ifindex", 0, 4, False, 0, 32, "unsigned int")
    assert btf.member("net_device", "name") == Member("name", 4, 16, False, 32, 128, "unsigned char[16]")
    assert btf.offsetof("nf_conn", "status") == 56
    assert btf.sizeof("net_device") == 40


def test_anonymous_members_are_transparent(btf: Btf) -> None:
    dev = btf.member("sk_buff", "dev")
    assert (dev.offset, dev.size, dev.type_name) == (8, 8, "struct net_device *")
    assert btf.offsetof("sk_buff", "rbnode") == 0
    assert btf.offsetof("sk_buff", "len") == 16
    assert btf.offsetof("sk_buff", "network_header") == 26  # const anon struct at 24
    assert btf.member("sk_buff", "protocol").type_name == "__be16"


def test_named_nested_path_and_typedef_struct(btf: Btf) -> None:
    assert btf.offsetof("net_device", "nd_net.net") == 24
    assert btf.member("net_device", "nd_net").type_name == "possible_net_t"
    assert btf.offsetof("possible_net_t", "net") == 0  # typedef of an anonymous struct
    assert btf.sizeof("possible_net_t") == 8
    assert btf.offsetof("nf_conntrack_tuple", "dst.protonum") == 12


def test_array_indexing(btf: Btf) -> None:
    assert btf.offsetof("nf_conn", "tuplehash[0].tuple.dst.u3") == 8 + 8 + 8
    assert btf.offsetof("nf_conn", "tuplehash[1].tuple.dst.u3") == 8 + 24 + 8 + 8
    assert btf.offsetof("nf_conn", "tuplehash[1].tuple.src.l3num") == 8 + 24 + 8 + 4
    assert btf.member("nf_conn", "tuplehash").size == 48
    assert btf.offsetof("net_device", "name[3]") == 7
    with pytest.raises(MissingCapability, match="index 2"):
        btf.offsetof("nf_conn", "tuplehash[2]")
    with pytest.raises(MissingCapability, match="non-array"):
        btf.offsetof("nf_conn", "status[0]")


def test_typedef_const_volatile_are_peeled(btf: Btf) -> None:
    assert btf.sizeof("conn_t") == 64
    assert btf.offsetof("conn_t", "status") == 56
    inum = btf.member("net", "inum")
    assert (inum.offset, inum.size, inum.type_name) == (4, 4, "const volatile unsigned int")


def test_bitfields_with_kind_flag(btf: Btf) -> None:
    assert btf.member("sk_buff", "pkt_type") == Member("pkt_type", 20, 1, True, 160, 3, "unsigned char")
    ignore_df = btf.member("sk_buff", "ignore_df")
    assert (ignore_df.bit_offset, ignore_df.bit_size, ignore_df.offset) == (163, 1, 20)
    flag = btf.member("sk_buff", "flag")  # bits 164..175 straddle two bytes
    assert (flag.offset, flag.size, flag.bit_offset, flag.bit_size) == (20, 2, 164, 12)
    with pytest.raises(BitfieldOffsetError, match="sk_buff.pkt_type is a bitfield"):
        btf.offsetof("sk_buff", "pkt_type")
    assert issubclass(BitfieldOffsetError, MissingCapability)


def test_bitfields_without_kind_flag(btf: Btf) -> None:
    a, b = btf.member("old_bits", "a"), btf.member("old_bits", "b")
    assert (a.bitfield, a.bit_offset, a.bit_size) == (True, 0, 5)
    assert (b.bitfield, b.bit_offset, b.bit_size) == (True, 10, 7)


def test_enum_values(btf: Btf) -> None:
    assert btf.enum_values("skb_drop_reason")["SKB_DROP_REASON_NETFILTER_DROP"] == 12
    assert btf.enum_values("signed_e") == {"NEG": -3, "POS": 5}
    with pytest.raises(MissingCapability, match="no enum nope"):
        btf.enum_values("nope")


def test_unknown_struct_and_member(btf: Btf) -> None:
    with pytest.raises(MissingCapability, match="no struct sock$"):
        btf.member("sock", "sk_family")
    with pytest.raises(MissingCapability, match="struct sk_buff has no member tail"):
        btf.offsetof("sk_buff", "tail")
    with pytest.raises(MissingCapability, match=r"nf_conn has no member tuplehash\[0\].tuple.nope"):
        btf.offsetof("nf_conn", "tuplehash[0].tuple.nope")
    with pytest.raises(MissingCapability, match="not a struct"):
        btf.offsetof("sk_buff", "len.x")  # through a scalar
    with pytest.raises(MissingCapability, match="not a struct"):
        btf.offsetof("sk_buff", "dev.ifindex")  # through a pointer
    with pytest.raises(MissingCapability, match="bad member path"):
        btf.offsetof("sk_buff", "len[")
    with pytest.raises(MissingCapability, match="no type nope"):
        btf.sizeof("nope")


def test_big_endian_blob() -> None:
    be = Btf.from_bytes(sample(">").build())
    assert be.offsetof("nf_conn", "tuplehash[1].tuple.dst.u3") == 48
    assert be.member("sk_buff", "flag").bit_offset == 164
    assert be.enum_values("signed_e")["NEG"] == -3


def test_truncated_blobs_fail_cleanly() -> None:
    blob = sample().build()
    for cut in range(len(blob)):
        with pytest.raises(MissingCapability, match="malformed BTF"):
            Btf.from_bytes(blob[:cut])


def test_garbage_fails_cleanly() -> None:
    rng = random.Random(7)
    for _ in range(200):
        with pytest.raises(MissingCapability):
            Btf.from_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(200))))
    with pytest.raises(MissingCapability, match="unknown kind 31"):
        bad = Encoder()
        bad.add(31, "x")
        Btf.from_bytes(bad.build())


def test_dangling_ids_fail_cleanly() -> None:
    b = Encoder()
    b.composite("s", 8, [("m", 99, 0, 0)])
    b.add(STRUCT, "", 4, 1, b.u32(10_000, 1, 0))  # name past the string section
    btf = Btf.from_bytes(b.build())
    with pytest.raises(MissingCapability, match="type id 99 out of range"):
        btf.member("s", "m")
    loop = Encoder()
    first = loop.add(TYPEDEF, "a", 2)
    loop.add(TYPEDEF, "b", first)
    with pytest.raises(MissingCapability, match="malformed BTF"):
        Btf.from_bytes(loop.build()).sizeof("a")


def test_missing_kernel_btf(tmp_path: Path) -> None:
    with pytest.raises(MissingCapability, match="kernel BTF not found at .*CONFIG_DEBUG_INFO_BTF=y"):
        kernel_btf(tmp_path / "vmlinux")


WANTED = {"OFF_SKB_DEV": ("sk_buff", "dev"), "OFF_CT_DST": ("nf_conn", "tuplehash[1].tuple.dst.u3")}


def test_resolve_offsets_caches_per_build(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(sample().build())
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    assert resolve_offsets(WANTED, vmlinux) == {"OFF_SKB_DEV": 8, "OFF_CT_DST": 48}
    (cache_file,) = (tmp_path / "cache" / "btf").glob("*.json")
    assert len(cache_file.stem) == 16
    assert json.loads(cache_file.read_text())["offsets"]["sk_buff:dev"] == 8

    def no_parse(_: bytes, __: str) -> Btf:
        raise AssertionError("parsed although every entry was cached")

    monkeypatch.setattr(btf_mod, "_parse_once", no_parse)
    assert resolve_offsets({"X": ("nf_conn", "tuplehash[1].tuple.dst.u3")}, vmlinux) == {"X": 48}


def test_resolve_offsets_without_writable_cache(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(sample().build())
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("TRACER_CACHE", str(not_a_dir))
    assert resolve_offsets(WANTED, vmlinux)["OFF_SKB_DEV"] == 8


def test_resolve_offsets_names_every_missing_entry(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(sample().build())
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    wanted = {**WANTED, "A": ("sock", "x"), "B": ("sk_buff", "nope"), "C": ("sk_buff", "pkt_type")}
    with pytest.raises(MissingCapability) as err:
        resolve_offsets(wanted, vmlinux)
    assert "sock" in str(err.value) and "nope" in str(err.value) and "bitfield" in str(err.value)
    assert "\n" not in str(err.value)


def test_has_type_answers_from_the_blob_and_caches(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    """has_type (the proxy sensor's "does this kernel have tracepoint X":
    a btf_trace_X typedef) answers, then answers again without parsing."""
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(sample().build())
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    assert has_type("__be16", vmlinux) and has_type("sk_buff", vmlinux)
    assert not has_type("btf_trace_sock_send_length", vmlinux)

    def no_parse(_: bytes, __: str) -> Btf:
        raise AssertionError("parsed although the answer was cached")

    monkeypatch.setattr(btf_mod, "_parse_once", no_parse)
    assert has_type("__be16", vmlinux) and not has_type("btf_trace_sock_send_length", vmlinux)
