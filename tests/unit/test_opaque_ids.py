"""Kernel addresses (nf_conn, sk_buff) become keyed ids where records leave
the kernel: equal stays equal, 0 stays 0, below 2^48, the key per boot."""

from __future__ import annotations

import os
import stat

import numpy as np

from tracer import events, native
from tracer.opaque_ids import AddressHasher, _key_words, boot_key, siphash24


def test_siphash24_matches_the_reference_vector():
    key = bytes(range(16))
    word = np.array([int.from_bytes(bytes(range(8)), "little")], np.uint64)  # message 00 01 .. 07
    assert int(siphash24(key, word)[0]) == 0x93F5F5799A932462  # vectors[8] of the SipHash paper's code


def test_compiled_ids_are_the_numpy_ids():
    """native/address_ids.c (what a tracer uses where it was built) and the
    numpy SipHash give the same ids: the reference vector unmasked, and
    records with zeros, repeats and every bit set."""
    m = native.native()
    assert m is not None, f"tracer._native is not built: {native.why_not()}"
    k0, k1 = _key_words(bytes(range(16)))
    word = np.array([int.from_bytes(bytes(range(8)), "little")], np.uint64)
    out = np.empty(1, np.uint64)
    m.address_ids(word, out, k0, k1, 64)
    assert int(out[0]) == 0x93F5F5799A932462
    rng = np.random.default_rng(9)
    for dtype in (events.JOURNEY_DTYPE, events.RAW_DTYPE):
        records = np.zeros(5000, dtype)
        records["flow_id"] = rng.choice(np.array([0, 1, 2**64 - 1, 0xFFFF8881_0A2B3C40, *rng.integers(1, 2**63, 50)],
                                                 np.uint64), 5000)
        records["skb"] = rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64, endpoint=True)
        records["skb"][::7] = 0
        compiled, numpy = records.copy(), records.copy()
        AddressHasher(b"k" * 32).hide(compiled)
        AddressHasher(b"k" * 32, compiled=False).hide(numpy)
        assert (compiled["flow_id"] == numpy["flow_id"]).all() and (compiled["skb"] == numpy["skb"]).all()
        assert (compiled["skb"][::7] == 0).all() and (compiled["flow_id"] != records["flow_id"]).any()
        # the compiled loop's cache of repeated addresses holds one call's key only
        other, other_numpy = records.copy(), records.copy()
        AddressHasher(b"j" * 32).hide(other)
        AddressHasher(b"j" * 32, compiled=False).hide(other_numpy)
        assert (other["flow_id"] == other_numpy["flow_id"]).all() and (other["skb"] == other_numpy["skb"]).all()
        assert (other["flow_id"][records["flow_id"] != 0] != compiled["flow_id"][records["flow_id"] != 0]).all()


def test_ids_keep_equality_and_zero_and_hide_the_address():
    h = AddressHasher(b"k" * 32)
    records = np.zeros(6, events.JOURNEY_DTYPE)
    conn_a, conn_b = 0xFFFF8881_0A2B3C40, 0xFFFF8881_0A2B3F00
    records["flow_id"] = [conn_a, conn_b, conn_a, 0, conn_b, conn_a]
    records["skb"] = [0xFFFF8882_00001000, 0, 0xFFFF8882_00001000, 0xFFFF8882_00002000, 0, 0]
    h.hide(records)
    flow, skb = records["flow_id"], records["skb"]
    assert flow[0] == flow[2] == flow[5] and flow[1] == flow[4] and flow[0] != flow[1]
    assert flow[3] == 0 and skb[1] == skb[4] == skb[5] == 0
    assert skb[0] == skb[2] != skb[3]
    assert (flow < 2**48).all() and (skb < 2**48).all()  # exact in JSON doubles; never a 0xffff... address
    assert conn_a not in flow and (conn_a & 0xFFFFFFFFFFFF) >> 3 not in flow
    again = np.zeros(1, events.JOURNEY_DTYPE)
    again["flow_id"] = conn_a
    AddressHasher(b"k" * 32).hide(again)
    assert again["flow_id"][0] == flow[0]  # same key: same id (two tracers, parts of a capture)
    other = np.zeros(1, events.JOURNEY_DTYPE)
    other["flow_id"] = conn_a
    AddressHasher(b"x" * 32).hide(other)
    assert other["flow_id"][0] != flow[0]


def test_sighting_records_too():
    raw = np.zeros(2, events.RAW_DTYPE)
    raw["flow_id"] = [7 << 40, 7 << 40]
    raw["skb"] = [9 << 40, 0]
    AddressHasher(b"k" * 32).hide(raw)
    assert raw["flow_id"][0] == raw["flow_id"][1] != 7 << 40 and raw["skb"][1] == 0 and raw["skb"][0] != 9 << 40


def test_boot_key_is_made_once_0600_and_replaced_after_a_reboot(tmp_path, monkeypatch):
    path = tmp_path / "tracer" / "address-key"
    first = boot_key(path)
    assert len(first) == 32 and boot_key(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    boot, _, key = path.read_bytes().partition(b"\n")
    path.write_bytes(b"another-boot\n" + key)  # the file of an earlier boot
    path.chmod(0o600)
    fresh = boot_key(path)
    assert fresh != first and boot_key(path) == fresh
    path.chmod(0o644)  # readable by others: not trusted, replaced
    assert boot_key(path) != fresh
    assert not [p for p in os.listdir(path.parent) if p.startswith(".")]  # no temporary files left
