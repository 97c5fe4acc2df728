"""BTF reader against this kernel, checked with readers we did not write.

Oracles: tracefs event format files (the kernel's own offsets of the
``trace_event_raw_*`` records) and ``bpftool btf dump ... format raw`` (libbpf's
BTF reader). Needs root and /sys/kernel/btf/vmlinux.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer.kernel import btf as btf_mod
from tracer.kernel.btf import VMLINUX_BTF, Btf, kernel_btf, resolve_offsets

pytestmark = pytest.mark.root

TRACEFS = Path("/sys/kernel/tracing")
BPFTOOL = shutil.which("bpftool") or "/usr/sbin/bpftool"

# What the sensors read (struct -> member paths); all must resolve on this kernel.
NEEDED = {
    "sk_buff": ["head", "data", "network_header", "transport_header", "mac_header",
                "len", "_nfct", "dev", "protocol"],
    "nf_hook_state": ["hook", "pf", "in", "out", "net"],
    "net_device": ["ifindex", "name", "nd_net", "nd_net.net"],
    "possible_net_t": ["net"],
    "net": ["ns", "ns.inum"],
    "nf_conn": ["tuplehash", "status", "tuplehash[1].tuple.dst.u3"],
    "nf_conntrack_tuple_hash": ["tuple"],
    "nf_conntrack_tuple": ["src", "dst", "dst.protonum", "dst.dir", "dst.u3", "dst.u"],
    "nf_conntrack_man": ["u3", "u", "l3num"],
}

# Events defined through an event class: their record is named after the class.
EVENT_CLASS = {
    "netif_receive_skb": "net_dev_template",
    "netif_rx": "net_dev_template",
    "net_dev_queue": "net_dev_template",
    "netif_receive_skb_entry": "net_dev_rx_verbose_template",
    "netif_rx_entry": "net_dev_rx_verbose_template",
    "netif_receive_skb_exit": "net_dev_rx_exit_template",
    "tcp_destroy_sock": "tcp_event_sk",
    "sock_send_length": "sock_msg_length",
}
EVENT_SYSTEMS = ["skb", "net", "sock", "tcp", "udp", "fib", "qdisc", "napi", "neigh"]


@pytest.fixture(scope="module", autouse=True)
def _needs_root_and_btf() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (tracefs, bpftool on kernel BTF)")
    if not VMLINUX_BTF.exists():
        pytest.skip(f"no kernel BTF at {VMLINUX_BTF}")


@pytest.fixture(scope="module")
def btf() -> Btf:
    return kernel_btf()


@pytest.fixture(scope="module")
def tracefs() -> Path:
    if not (TRACEFS / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(TRACEFS)], check=False)
    if not (TRACEFS / "events").is_dir():
        pytest.skip("tracefs not mounted and could not be mounted")
    return TRACEFS


def test_cold_parse_is_fast() -> None:
    started = time.perf_counter()
    Btf.from_file(VMLINUX_BTF)
    assert time.perf_counter() - started < 1.5


def test_needed_members_resolve(btf: Btf) -> None:
    for struct_name, paths in NEEDED.items():
        for path in paths:
            m = btf.member(struct_name, path)
            assert not m.bitfield and m.size > 0, (struct_name, path, m)
    assert btf.offsetof("net_device", "nd_net.net") == btf.offsetof("net_device", "nd_net")
    ns = btf.offsetof("net", "ns")
    assert ns <= btf.offsetof("net", "ns.inum") < ns + btf.sizeof("ns_common")
    hash_size = btf.sizeof("nf_conntrack_tuple_hash")
    assert btf.offsetof("nf_conn", "tuplehash[1].tuple.dst.u3") == (
        btf.offsetof("nf_conn", "tuplehash") + hash_size
        + btf.offsetof("nf_conntrack_tuple_hash", "tuple") + btf.offsetof("nf_conntrack_tuple", "dst.u3")
    )


def test_resolve_offsets_cold_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path))
    monkeypatch.setattr(btf_mod, "_parsed", {})
    wanted = {f"{s}:{p}": (s, p) for s, paths in NEEDED.items() for p in paths}
    cold = resolve_offsets(wanted)
    assert list((tmp_path / "btf").glob("*.json"))
    monkeypatch.setattr(btf_mod, "_parsed", {})
    assert resolve_offsets(wanted) == cold
    assert not btf_mod._parsed, "the cached run parsed BTF"
    assert cold["sk_buff:head"] == kernel_btf().offsetof("sk_buff", "head")


# -- oracle 1: tracefs event formats -------------------------------------------


def format_fields(fmt: str) -> Iterator[tuple[str, int, int]]:
    """(BTF member path, offset, size) for each field of a tracefs format file."""
    for decl, offset, size in re.findall(r"field:([^;]+);\s*offset:(\d+);\s*size:(\d+);", fmt):
        name = re.sub(r"\[.*$", "", decl.split()[-1])
        if decl.startswith(("__data_loc", "__rel_loc")):  # dynamic arrays: a u32 locator
            name = f"{decl.split()[0]}_{name}"
        elif name.startswith("common_"):  # common fields live in struct trace_entry ent
            name = "ent." + name.removeprefix("common_")
        yield name, int(offset), int(size)


def test_tracefs_event_formats_match(btf: Btf, tracefs: Path) -> None:
    checked: list[str] = []
    for system in EVENT_SYSTEMS:
        for fmt_file in sorted((tracefs / "events" / system).glob("*/format")):
            event = fmt_file.parent.name
            record = f"trace_event_raw_{EVENT_CLASS.get(event, event)}"
            if record not in btf:
                continue
            for name, offset, size in format_fields(fmt_file.read_text()):
                m = btf.member(record, name)
                assert (m.offset, m.size) == (offset, size), (system, event, name, m)
            checked.append(f"{system}:{event}")
    must = ["skb:kfree_skb", "net:netif_receive_skb", "sock:inet_sock_set_state", "net:net_dev_xmit"]
    assert set(must) <= set(checked), checked
    assert len(checked) >= 20, checked
    print(f"{len(checked)} events checked against tracefs")


def test_drop_reasons_match_kfree_skb_format(btf: Btf, tracefs: Path) -> None:
    reasons = btf.enum_values("skb_drop_reason")
    assert "SKB_DROP_REASON_NETFILTER_DROP" in reasons
    fmt = (tracefs / "events/skb/kfree_skb/format").read_text()
    printed = re.findall(r'\{\s*(\d+),\s*"(\w+)"\s*\}', fmt)
    assert len(printed) > 50
    for value, name in printed:
        assert reasons[f"SKB_DROP_REASON_{name}"] == int(value), name
    assert btf.member("trace_event_raw_kfree_skb", "reason").type_name == "enum skb_drop_reason"


# -- oracle 2: bpftool's raw dump ----------------------------------------------


Raw = dict[int, tuple[str, str, dict[str, int], list[tuple[str, dict[str, int]]]]]


def parse_bpftool_raw(text: str) -> Raw:
    """id -> (kind, name, attributes, members) from `bpftool btf dump ... format raw`."""
    def numbers(text: str) -> dict[str, int]:
        return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)\b", text)}

    types: Raw = {}
    current: list[tuple[str, dict[str, int]]] = []
    for line in text.splitlines():
        head = re.match(r"\[(\d+)\] (\w+) '([^']*)'(.*)", line)
        if head:
            current = []
            types[int(head.group(1))] = (head.group(2), head.group(3), numbers(head.group(4)), current)
            continue
        member = re.match(r"\s+'([^']*)'(.*)", line)
        if member:
            current.append((member.group(1), numbers(member.group(2))))
    return types


@pytest.fixture(scope="module")
def raw() -> Raw:
    if not Path(BPFTOOL).exists():
        pytest.skip("bpftool not installed")
    out = subprocess.run([BPFTOOL, "btf", "dump", "file", str(VMLINUX_BTF), "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    return parse_bpftool_raw(out)


def peel(raw: Raw, type_id: int) -> int:
    while type_id and raw[type_id][0] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        type_id = raw[type_id][2]["type_id"]
    return type_id


def visible_members(raw: Raw, type_id: int, base: int = 0) -> dict[str, tuple[int, int]]:
    """name -> (bit offset, bitfield size) as C sees them, through anonymous members."""
    found: dict[str, tuple[int, int]] = {}
    for name, attrs in raw[type_id][3]:
        bits = base + attrs["bits_offset"]
        if name == "(anon)":
            inner = peel(raw, attrs["type_id"])
            if raw[inner][0] in ("STRUCT", "UNION"):
                for k, v in visible_members(raw, inner, bits).items():
                    found.setdefault(k, v)
            continue
        found.setdefault(name, (bits, attrs.get("bitfield_size", 0)))
    return found


def test_every_vmlinux_struct_matches_bpftool(btf: Btf, raw: Raw) -> None:
    names: dict[str, list[int]] = {}
    for type_id, (kind, name, _attrs, _members) in raw.items():
        if kind in ("STRUCT", "UNION") and name != "(anon)":
            names.setdefault(name, []).append(type_id)
    compared = 0
    for name, ids in names.items():
        if len(ids) != 1:  # a name with two layouts: which one wins is a choice, not a fact
            continue
        assert btf.sizeof(name) == raw[ids[0]][2]["size"], name
        for member, (bit_offset, bitfield_size) in visible_members(raw, ids[0]).items():
            m = btf.member(name, member)
            assert m.bit_offset == bit_offset, (name, member, m)
            if bitfield_size:
                assert m.bitfield and m.bit_size == bitfield_size, (name, member, m)
            compared += 1
    for needed in NEEDED:
        assert needed in names or needed == "possible_net_t"
    assert compared > 10_000
    print(f"{compared} members of {len(names)} structs checked against bpftool")


def test_needed_structs_match_bpftool(btf: Btf, raw: Raw) -> None:
    by_name = {(kind, name): i for i, (kind, name, _a, _m) in raw.items()}
    for struct_name in ("sk_buff", "nf_conn", "nf_hook_state", "net_device", "nf_conntrack_tuple"):
        members = visible_members(raw, by_name[("STRUCT", struct_name)])
        for path in NEEDED[struct_name]:
            if "." in path or "[" in path:
                continue
            assert btf.member(struct_name, path).bit_offset == members[path][0], (struct_name, path)


def test_drop_reasons_match_bpftool(btf: Btf, raw: Raw) -> None:
    (members,) = [t[3] for t in raw.values() if t[:2] == ("ENUM", "skb_drop_reason")]
    assert btf.enum_values("skb_drop_reason") == {name: attrs["val"] for name, attrs in members}
